"""Regenerate the README's picture and sound: ``python scripts/readme_media.py``.

Trains the five reference runs of 2019 (``sonify compare --steps 200``; the
digits data when MNIST cannot be downloaded), then writes, small enough to
commit:

- ``docs/compare.png``: the comparison figure (norm curves beside spectrograms), in 128 colours;
- ``docs/diverging-sgd-lr1-bs256.flac``: a few seconds of the run that diverges
  (SGD, lr 1.0, batch 256: NaN from step 13), condensed with the alarm kept, 16-bit at 22.05 kHz.

Takes about a minute on two CPU cores.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SECONDS = 6.0


def main() -> None:
    import sonify

    DOCS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sonify-readme-") as folder:
        runs = Path(folder) / "runs"
        subprocess.run(
            [sys.executable, "-m", "sonify.cli", "compare", "--steps", "200", "-o", str(runs), "--no-progress"],
            check=True,
        )
        _small_png(runs / "compare.png", DOCS / "compare.png")
        (diverging,) = [path for path in runs.glob("*.norms.csv") if "-sgd-lr1-bs256-" in path.name]
        sound = sonify.SoundSettings(sample_rate=22050, sample_format="pcm16")
        sonify.render(diverging, DOCS / "diverging-sgd-lr1-bs256.flac", sound=sound, duration=SECONDS, overwrite=True)
    for path in sorted(DOCS.iterdir()):
        print(f"{path.relative_to(ROOT)}: {path.stat().st_size / 1024:.0f} KiB")


def _small_png(source: Path, target: Path, width: int = 975) -> None:
    """The figure at README width in 128 colours: a quarter of the size, still sharp."""
    from PIL import Image  # comes with matplotlib, which draws the figure

    image = Image.open(source).convert("RGB")
    image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
    image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)


if __name__ == "__main__":
    main()

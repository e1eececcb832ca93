"""Regenerate the README's picture and sound: ``python scripts/readme_media.py``.

Trains the five reference runs of 2019 (``sonify compare --steps 200``; the
digits data when MNIST cannot be downloaded), then writes, small enough to
commit:

- ``docs/compare.png``: the comparison figure (norm curves beside spectrograms), in 128 colours;
- ``docs/diverging-sgd-lr1-bs256.flac``: a few seconds of the run that diverges
  (SGD, lr 1.0, batch 256: NaN from step 13), condensed with the alarm kept, 16-bit at 22.05 kHz;
- ``docs/dying-sgd-lr1-bs10.png`` and ``.flac``: the run that explodes and dies (SGD, lr 1.0, batch 10:
  norms of 1e35, then exactly zero), as a piano roll of its score beside the spectrogram of its sound,
  and its sound (16-bit at 22.05 kHz).

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
        (dying,) = [path for path in runs.glob("*.norms.csv") if "-sgd-lr1-bs10-" in path.name]
        sonify.render(dying, DOCS / "dying-sgd-lr1-bs10.flac", sound=sound, overwrite=True)
        piano_roll(sonify.load_norms(dying), DOCS / "dying-sgd-lr1-bs10.flac", runs / "dying.png")
        _small_png(runs / "dying.png", DOCS / "dying-sgd-lr1-bs10.png")
    for path in sorted(DOCS.iterdir()):
        print(f"{path.relative_to(ROOT)}: {path.stat().st_size / 1024:.0f} KiB")


def piano_roll(log, audio: Path, out: Path) -> None:
    """The run's score as a piano roll (what each layer sounds at each step) above the spectrogram of its sound."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import soundfile

    import sonify
    from sonify import ToneKind

    score = sonify.SoundSettings().sounder(len(log.layer_names)).score(log.norms, log.missing)
    fig, (roll, spectrum) = plt.subplots(2, 1, figsize=(13, 7), sharex=False)
    styles = {  # kind: (marker, where it is drawn, label)
        ToneKind.TONE: ("o", None, "tone (pitch = norm)"),
        ToneKind.ACCENT: ("^", None, "spike (accented)"),
        ToneKind.ABOVE: ("$\\uparrow$", None, "above the map (glides up)"),
        ToneKind.BELOW: ("$\\downarrow$", None, "below the map (glides down)"),
        ToneKind.ZERO: ("x", 330.0, "zero: dead (noise puff)"),
        ToneKind.ALARM: ("*", 5000.0, "NaN/Inf (alarm)"),
    }
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for voice, name in enumerate(log.layer_names):
        for kind, (marker, height, _) in styles.items():
            cells = score.kind[:, voice] == kind
            if not cells.any():
                continue
            y = score.frequency[cells, voice] if height is None else np.full(cells.sum(), height * 1.06**voice)
            roll.scatter(log.steps[cells], y, marker=marker, s=14, color=colours[voice % len(colours)],
                         label=f"{name}" if kind == ToneKind.TONE else None, linewidths=0.8)  # fmt: skip
    for kind, (marker, _, label) in styles.items():
        if (score.kind == kind).any():
            roll.scatter([], [], marker=marker, color="black", label=label)
    roll.set_yscale("log")
    roll.set_ylim(250, 7000)
    roll.axhspan(440, 3520, color="0.93", zorder=0)
    roll.set_ylabel("pitch (Hz)")
    roll.set_xlabel("step")
    roll.set_title(
        "SGD lr 1.0, batch 10: the score (shaded: the map's pitch range, 1e-4 .. 1e4)", fontsize=9, loc="left"
    )
    roll.legend(fontsize=7, loc="center right", ncol=2)
    samples, rate = soundfile.read(audio, dtype="float32")
    power, _, _, image = spectrum.specgram(samples, NFFT=256, Fs=rate, noverlap=192, cmap="magma")
    top = 10 * np.log10(power.max())
    image.set_clim(top - 60, top)  # 60 dB: silence black, not the colour of the quietest bin
    colours = matplotlib.colormaps["magma"].copy()
    colours.set_bad("black")  # the gaps between steps: exact silence, -inf dB
    image.set_cmap(colours)
    spectrum.set_ylim(0, 8000)
    spectrum.set_xlabel("time (s)")
    spectrum.set_ylabel("frequency (Hz)")
    spectrum.set_title(
        "its sound: glides above 3.5 kHz while it explodes, then the dead layers' noise puffs", fontsize=9, loc="left"
    )
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _small_png(source: Path, target: Path, width: int = 975) -> None:
    """The figure at README width in 128 colours: a quarter of the size, still sharp."""
    from PIL import Image  # comes with matplotlib, which draws the figure

    image = Image.open(source).convert("RGB")
    image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
    image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)


if __name__ == "__main__":
    main()

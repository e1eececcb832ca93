"""``sonify compare``: several runs by ear and by eye."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .._choices import OPTIMIZERS
from .._errors import SonifyError
from ..sound import SoundSettings
from ..sources import load_norms
from ._options import Finite, duration_options, pick_device, sound_options, sound_settings, training_options


@click.command(name="compare")
@click.argument("logs", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--optimizer", "optimizers", multiple=True, type=click.Choice(list(OPTIMIZERS)), help="Repeat for several."
)
@click.option(
    "--lr", "lrs", multiple=True, type=Finite(0.0, 1e38, min_open=True), help="Learning rate; repeat for several."
)
@click.option("--batch-size", "batch_sizes", multiple=True, type=click.IntRange(min=1), help="Repeat for several.")
@training_options
@click.option(
    "-o",
    "--out-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for everything [default: audio_out/compare-<date>-<time>].",
)
@duration_options
@click.option("--ab", is_flag=True, help="With exactly two runs: listen-ab.wav, run A left and run B right.")
@click.option("--no-figure", is_flag=True, help="Skip compare.png (which needs matplotlib).")
@click.option("--overwrite", is_flag=True, help="Replace the files of an earlier comparison in the folder.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@sound_options
def compare_command(
    logs: tuple[Path, ...],
    optimizers: tuple[str, ...],
    lrs: tuple[float, ...],
    batch_sizes: tuple[int, ...],
    steps: int,
    seed: int,
    dataset: str,
    data_dir: Path | None,
    torch_device: str,
    out_dir: Path | None,
    duration: float | None,
    combine: str,
    ab: bool,
    no_figure: bool,
    overwrite: bool,
    no_progress: bool,
    **sound_options: Any,
) -> None:
    """Compare runs by ear and by eye: a grid of training runs, or LOGS recorded before.

    \b
    Without LOGS it trains the grid of --optimizer x --lr x --batch-size
    (default: the five runs of the 2019 experiment) and writes, in one folder,
    each run's WAV and log, listen.wav (the runs in turn, run k introduced by
    k short noise bursts), compare.png (norm curves and spectrograms) and
    summary.csv / summary.md.
    """
    import datetime as dt

    from ..comparison import REFERENCE_GRID, check_figure_support, check_out_dir, compare

    sound = sound_settings(**sound_options)
    # Checked now, not after training every run.
    if not no_figure:
        check_figure_support()
    out_dir = out_dir or Path("audio_out") / f"compare-{dt.datetime.now():%Y%m%d-%H%M%S}"
    check_out_dir(out_dir, overwrite=overwrite)
    audio_files: list[Path | None] | None
    if logs and (optimizers or lrs or batch_sizes):
        raise SonifyError("give norm logs to compare, or grid options (--optimizer/--lr/--batch-size), not both")
    if logs:
        runs, audio_files = [load_norms(path) for path in logs], None
        for run in runs:
            if run.running:
                click.echo(
                    f"sonify: {run.path} is still being written (or its run was killed): its {len(run)} "
                    "complete steps so far are compared",
                    err=True,
                )
    else:
        grid = (
            [(o, lr, b) for o in optimizers or ["sgd"] for lr in lrs or [0.01] for b in batch_sizes or [10]]
            if optimizers or lrs or batch_sizes
            else list(REFERENCE_GRID)
        )
        runs, audio_files = _train_grid(grid, steps, seed, dataset, data_dir, torch_device, sound, out_dir, no_progress)
    result = compare(
        runs,
        out_dir,
        sound=sound,
        duration=duration,
        ab=ab,
        figure=not no_figure,
        audio_files=audio_files,
        overwrite=overwrite,
    )
    click.echo(result.table())
    click.echo("files:")
    for path in [result.listening, result.figure, result.table_csv, result.table_md]:
        if path is not None:
            click.echo(f"  {path}")


def _train_grid(
    grid: list[tuple[str, float, int]],
    steps: int,
    seed: int,
    dataset: str,
    data_dir: Path | None,
    torch_device: str,
    sound: SoundSettings,
    out_dir: Path,
    no_progress: bool,
) -> tuple[list, list[Path | None]]:
    from .._progress import progress_bar
    from ..experiment import ExperimentConfig, run_experiment

    device = pick_device(torch_device)
    logs: list = []
    audio_files: list[Path | None] = []
    bar = progress_bar(len(grid) * steps, "compare", enabled=not no_progress)
    try:
        for optimizer, lr, batch_size in grid:
            config = ExperimentConfig(
                optimizer=optimizer,
                lr=lr,
                batch_size=batch_size,
                steps=steps,
                seed=seed,
                dataset=dataset,
                device=device,
                data_dir=data_dir,
            )
            bar.set_postfix_str(f"{optimizer} lr={lr:g} bs={batch_size}")
            result = run_experiment(
                config,
                out=None,
                out_dir=out_dir,
                sound=sound,
                progress=False,
                notice=lambda text: click.echo(f"sonify: {text}", err=True),
                on_step=lambda: bar.update(1),
            )
            if result.interrupted:
                raise KeyboardInterrupt
            logs.append(load_norms(result.sonifier.log_path))
            audio_files.append(result.sonifier.audio_path)
    finally:
        bar.close()
    return logs, audio_files

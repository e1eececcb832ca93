"""``sonify devices``: the sound cards."""

from __future__ import annotations

import click


@click.command()
def devices() -> None:
    """List the audio output devices; * marks the default.

    Use the index or (part of) the name with --device.
    """
    from ..stream import output_devices

    for device in output_devices(require=True):
        mark = "*" if device["default"] else " "
        click.echo(
            f"{mark} {device['index']} {device['name']}, {device['hostapi_name']} "
            f"({device['max_output_channels']} out, {device['default_samplerate']:g} Hz)"
        )

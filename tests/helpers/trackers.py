"""Reading back what the trackers wrote (TensorBoard event files, offline W&B runs)."""

from __future__ import annotations

from pathlib import Path


def tensorboard_events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"audio": 0, "scalars": 0})
    events.Reload()
    return events


def wandb_history(folder: Path, timeout: float = 60.0) -> list[dict]:
    """The history rows (key -> JSON text) of the one offline W&B run under ``folder``, from its run file.

    The run file is a LevelDB-format log (32 KiB blocks of records with a
    7-byte header) behind W&B's own 7-byte file header; each record is a
    ``Record`` protocol buffer of wandb's. W&B's service process may still be
    writing it when ``run.finish()`` returns (seen on a loaded machine): the
    file is read until it holds the run's ``exit`` record.
    """
    import time

    deadline = time.monotonic() + timeout
    while True:
        (path,) = list(folder.glob("**/offline-run-*/run-*.wandb"))
        kinds, rows = _wandb_records(path.read_bytes())
        if "exit" in kinds or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def _wandb_records(data: bytes) -> tuple[list[str], list[dict]]:
    """The record kinds of a W&B run file, and its history rows."""
    import struct

    from wandb.proto import wandb_internal_pb2

    block, position, pending, kinds, rows = 32768, 7, b"", [], []
    while position + 7 <= len(data):
        room = block - position % block
        if room < 7:  # too little of the block left for a header: padding
            position += room
            continue
        length, kind = struct.unpack_from("<HB", data, position + 4)
        if (length == 0 and kind == 0) or position + 7 + length > len(data):
            break  # the end, or a record still being written
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk  # FULL/FIRST start a record, MIDDLE/LAST go on
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            kinds.append(record.WhichOneof("record_type"))
            if kinds[-1] == "history":
                rows.append({item.key or "/".join(item.nested_key): item.value_json for item in record.history.item})
            pending = b""
    return kinds, rows

"""Read back an offline wandb run (its run-<id>.wandb datastore) for the tests: the logged history rows and the
config. The datastore is a LevelDB-style log: a 7-byte file header (':W&B', magic, version), then records in
32 KiB blocks, each chunk a 7-byte header (crc32, length, kind: 1 full, 2 first, 3 middle, 4 last) and a piece of
a serialised wandb Record protobuf (wandb.proto.wandb_internal_pb2, shipped with wandb)."""
from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK, HEADER = 32768, 7


def records(path: Path):
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    pos, pieces = HEADER, b""
    while pos + HEADER <= len(data):
        room = BLOCK - pos % BLOCK
        if room < HEADER:                       # a block's tail too short for a chunk header is padding
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        pieces += data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pieces)
            pieces = b""
            yield record


def item_key(item) -> str:
    return item.key or ".".join(item.nested_key)


def history(path: Path) -> dict[int, dict]:
    """{step: {key: value}} of the rows the run logged (wandb's own _step, _runtime, _timestamp left out)."""
    rows: dict[int, dict] = {}
    for r in records(path):
        if r.WhichOneof("record_type") == "history":
            row = {item_key(i): json.loads(i.value_json) for i in r.history.item}
            rows.setdefault(row.pop("_step"), {}).update({k: v for k, v in row.items() if not k.startswith("_")})
    return rows


def run_id_and_config(path: Path) -> tuple[str, dict]:
    """The run's id and its config: the run record's, then every later update."""
    run_id, config = None, {}
    for r in records(path):
        kind = r.WhichOneof("record_type")
        updates = r.run.config.update if kind == "run" else r.config.update if kind == "config" else []
        if kind == "run":
            run_id = r.run.run_id
        config.update({item_key(i): json.loads(i.value_json) for i in updates})
    config.pop("_wandb", None)
    return run_id, config

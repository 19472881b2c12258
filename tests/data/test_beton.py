"""A damaged .beton (cut short, or a flipped byte in its header, sample table or allocation table) is refused
with one line before any loader reads it, and a failure inside FFCV's loader thread ends the iteration with one
line instead of a hang. Offsets come from FFCV's own Reader on the intact file."""
from __future__ import annotations

import os

import numpy as np
import pytest

from ffcv_amcl.errors import UserError
from tests.train_helpers import REPO, run_cli

N = 64


@pytest.fixture(scope="module")
def betons(tmp_path_factory):
    """{'raw': path, 'jpg': path}: the first 64 digits (upscaled to 32 px), with sidecars."""
    from ffcv_amcl.data.digits import load_digits
    from ffcv_amcl.data.write import ArrayDataset, write_beton

    root = tmp_path_factory.mktemp("betons")
    x, y = load_digits("test")
    out = {}
    for mode in ("raw", "jpg"):
        out[mode] = root / f"{mode}.beton"
        write_beton(out[mode], ArrayDataset(x[:N], y[:N]), write_mode=mode, num_workers=1,
                    meta={"dataset": "digits", "split": "test", "num_classes": 10})
    return out


def _offsets(path) -> dict:
    """Byte offsets of the fields a damage targets, from FFCV's Reader."""
    from ffcv.reader import Reader
    from ffcv.types import ALLOC_TABLE_TYPE, HeaderType

    r = Reader(str(path))
    row = r.metadata.dtype
    image = row.fields["f0"][0]
    start = HeaderType.itemsize + r.field_descriptors.nbytes
    sample5 = start + 5 * row.itemsize
    entry3 = int(r.header["alloc_table_ptr"]) + 3 * ALLOC_TABLE_TYPE.itemsize
    head = {k: HeaderType.fields[k][1] for k in HeaderType.names}
    return {"header_version": head["version"], "header_page_size": head["page_size"] + 2,
            "header_num_samples": head["num_samples"], "header_table_pointer": head["alloc_table_ptr"],
            "field_type": HeaderType.itemsize, "field_name": HeaderType.itemsize + 1,
            "sample_mode": sample5 + image.fields["mode"][1], "sample_height": sample5 + image.fields["height"][1],
            "sample_pointer": sample5 + image.fields["data_ptr"][1],
            "sample_label_sign": sample5 + row.fields["f1"][1] + 7,
            "table_sample_id": entry3, "table_pointer": entry3 + 8, "table_size": entry3 + 16,
            "table": int(r.header["alloc_table_ptr"])}


CUTS = {"cut_100_bytes": lambda blob, o: blob[:-100],
        "cut_two_table_entries": lambda blob, o: blob[:-48],  # a whole number of entries: the subtle case
        "cut_into_the_data": lambda blob, o: blob[: o["table"] // 2]}
FLIPS = ["header_version", "header_page_size", "header_num_samples", "header_table_pointer", "field_type",
         "field_name", "sample_mode", "sample_height", "sample_pointer", "sample_label_sign", "table_sample_id",
         "table_pointer", "table_size"]


def damaged(src, dst, how: str):
    """Copy src to dst (with its sidecar), cut short or with one byte inverted as `how` says."""
    blob = bytearray(src.read_bytes())
    offsets = _offsets(src)
    if how in CUTS:
        blob = CUTS[how](blob, offsets)
    else:
        blob[offsets[how]] ^= 0xFF
    dst.write_bytes(bytes(blob))
    (dst.parent / (dst.name + ".json")).write_bytes((src.parent / (src.name + ".json")).read_bytes())
    return dst


def test_intact_files_pass_with_their_sample_count(betons):
    from ffcv.reader import Reader

    from ffcv_amcl.data.beton import validate_beton

    for path in betons.values():
        assert validate_beton(path) == N == int(Reader(str(path)).num_samples)


@pytest.mark.parametrize("how", [*CUTS, *FLIPS])
def test_damage_is_one_line_naming_file_and_fix(betons, tmp_path, how):
    from ffcv_amcl.config import beton_samples

    bad = damaged(betons["raw"], tmp_path / f"{how}.beton", how)
    with pytest.raises(UserError) as err:
        beton_samples(str(bad), "data.train_dataset")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"data.train_dataset {bad} ") and "write_datasets.py" in msg, msg


@pytest.mark.timeout(60)
def test_loader_thread_failure_ends_the_epoch_with_one_line(betons, monkeypatch):
    from ffcv.loader.epoch_iterator import EpochIterator

    from ffcv_amcl.data.loader import make_eval_loader

    run = EpochIterator.run_pipeline

    def second_batch_fails(self, b_ix, *args):
        if b_ix == 1:
            raise ValueError("bad bytes\nsecond line")
        return run(self, b_ix, *args)

    monkeypatch.setattr(EpochIterator, "run_pipeline", second_batch_fails)
    batches = iter(make_eval_loader(betons["raw"], 16, num_workers=1))
    x, y = next(batches)
    assert len(y) == 16
    with pytest.raises(UserError, match=r"^reading .*raw\.beton failed in the loader thread \(ValueError: bad "
                                        r"bytes\): .*write_datasets\.py"):
        next(batches)


def with_damaged_jpegs(src, dst, samples):
    """Copy the jpg .beton src to dst with the JPEG start marker of `samples` zeroed, and a sidecar stamped for
    the copy (as if it had been written so): only the JPEG check can tell."""
    from ffcv.reader import Reader

    from ffcv_amcl.data.meta import read_meta, write_meta

    r = Reader(str(src))
    blob = bytearray(src.read_bytes())
    for i in samples:
        ptr = int(r.metadata["f0"]["data_ptr"][i])
        assert blob[ptr:ptr + 2] == b"\xff\xd8"           # SOI
        blob[ptr:ptr + 2] = b"\0\0"
    dst.write_bytes(bytes(blob))
    write_meta(dst, {k: v for k, v in read_meta(src).items() if k != "fingerprint"})
    return dst, r.metadata["f1"]


@pytest.mark.timeout(60)
def test_damaged_jpeg_pixels_are_found_by_the_check_and_never_hang(betons, tmp_path, capsys):
    """JPEG data that does not decode cannot be seen in the tables: every read decodes a sample of the JPEG images
    and refuses the file when one fails; the check command decodes all of them. A damaged image outside the sample
    still loads (FFCV leaves its view garbled), without a hang or a crash."""
    from ffcv_amcl.data.beton import jpeg_indices, main, read_tables, validate_beton
    from ffcv_amcl.data.loader import make_eval_loader

    every, _ = with_damaged_jpegs(betons["jpg"], tmp_path / "every.beton", range(N))
    with pytest.raises(UserError, match=r"every\.beton is not a readable \.beton \(16 of the 16 JPEG images checked "
                                        r"do not decode, sample 0 first\): rewrite it with write_datasets\.py"):
        validate_beton(every)
    sampled = set(jpeg_indices(read_tables(betons["jpg"], "x")).tolist())
    assert len(sampled) == 16 and {0, N - 1} <= sampled
    hidden = min(set(range(N)) - sampled)
    one, labels = with_damaged_jpegs(betons["jpg"], tmp_path / "one.beton", [hidden])
    assert validate_beton(one) == N
    got = np.concatenate([y.numpy() for _, y in make_eval_loader(one, 16, num_workers=1)])
    np.testing.assert_array_equal(got, labels)
    with pytest.raises(SystemExit) as code:
        main([str(betons["jpg"]), str(one)])
    out, err = capsys.readouterr()
    assert code.value.code == 2 and f"{N} images ({N} stored as JPEG, all decode)" in out
    assert f"1 of the {N} JPEG images checked do not decode, sample {hidden} first" in err, err


@pytest.mark.parametrize("command", ["train", "preview"])
@pytest.mark.parametrize("how", ["cut_100_bytes", "table_pointer"])
def test_commands_exit_within_60s_with_one_line(betons, tmp_path, command, how):
    bad = damaged(betons["raw"], tmp_path / "bad.beton", how)
    if command == "train":
        args = ("ffcv_amcl.train", "--config-file", str(REPO / "rn_configs/digits_quickstart.yaml"),
                f"--data.train_dataset={bad}", "--data.val_dataset=", f"--logging.folder={tmp_path / 'run'}",
                "--training.epochs=1")
    else:
        args = ("ffcv_amcl.data.preview", "--path", str(bad), "--n", str(N), "--out", str(tmp_path / "p.png"))
    proc = run_cli(*args, timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and str(bad) in lines[0] and "write_datasets.py" in lines[0]
    assert not any(p.name.startswith(("run", "p.png")) for p in tmp_path.iterdir()), os.listdir(tmp_path)

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


# -- the sidecar is part of the dataset ------------------------------------------------------------------------

def test_a_write_path_must_name_a_beton_and_never_a_sidecar(betons, tmp_path):
    from ffcv_amcl.data.digits import load_digits
    from ffcv_amcl.data.write import ArrayDataset, write_beton

    sidecar = betons["raw"].parent / (betons["raw"].name + ".json")
    before = sidecar.read_bytes()
    x, y = load_digits("test")
    source = ArrayDataset(x[:8], y[:8])
    with pytest.raises(UserError, match=r"that is the sidecar of .*raw\.beton; give the \.beton's own path"):
        write_beton(sidecar, source, num_workers=1)
    with pytest.raises(UserError, match=r"cannot write .*train\.bin: a dataset file's name ends in \.beton"):
        write_beton(tmp_path / "train.bin", source, num_workers=1)
    assert sidecar.read_bytes() == before and list(tmp_path.iterdir()) == []


def test_every_reader_requires_the_sidecar_written_for_that_file(betons, tmp_path):
    """Missing, unreadable, another file's, or lying about the count: one line naming the fix, at every reader."""
    import json

    from ffcv_amcl.config import beton_samples
    from ffcv_amcl.data.loader import make_eval_loader

    copy = tmp_path / "copy.beton"
    copy.write_bytes(betons["raw"].read_bytes())
    side = tmp_path / "copy.beton.json"
    meta = json.loads((betons["raw"].parent / "raw.beton.json").read_text())
    cases = {"has no sidecar copy.beton.json": None,
             "has an unreadable sidecar copy.beton.json (not JSON)": "{cut",
             "claims 5000 samples, the file holds 64": json.dumps({**meta, "num_samples": 5000}),
             "does not match its sidecar copy.beton.json": (betons["jpg"].parent / "jpg.beton.json").read_text(),
             "whose std is [1, 1, 0]": json.dumps({**meta, "std": [1, 1, 0]})}
    for needle, text in cases.items():
        side.unlink(missing_ok=True)
        if text is not None:
            side.write_text(text)
        for read in (lambda: beton_samples(str(copy), "data.train_dataset"), lambda: make_eval_loader(copy, 8)):
            with pytest.raises(UserError) as err:
                read()
            assert needle in str(err.value) and "write_datasets.py" in str(err.value) and "\n" not in str(err.value)
    side.write_text(json.dumps(meta))                       # a copy keeps its fingerprint: the same file
    assert beton_samples(str(copy), "data.train_dataset") == N


def test_train_and_val_sets_of_another_task_are_refused_in_training_and_eval(betons, tmp_path):
    """10 digit classes at 32 px against a 2-class set of 16 px images: one line naming both, wherever both are
    read; the validation split of the same dataset passes."""
    from ffcv_amcl.config import parse_config, to_flat
    from ffcv_amcl.data.write import ArrayDataset, write_beton
    from ffcv_amcl.eval import evaluate

    rng = np.random.default_rng(0)
    other = tmp_path / "other.beton"
    write_beton(other, ArrayDataset(rng.integers(0, 255, (16, 16, 16, 3), dtype=np.uint8), np.arange(16) % 2),
                num_workers=1, meta={"dataset": "other", "split": "test", "num_classes": 2, "classes": ["a", "b"]})
    resized = tmp_path / "resized.beton"
    write_beton(resized, ArrayDataset(rng.integers(0, 255, (16, 16, 16, 3), dtype=np.uint8), np.arange(16) % 10),
                num_workers=1, meta={"dataset": "digits", "split": "test", "num_classes": 10,
                                     "classes": [str(i) for i in range(10)]})
    train = str(betons["raw"])
    args = [f"--data.train_dataset={train}", "--training.batch_size=8"]
    with pytest.raises(UserError, match=r"data.val_dataset .*other\.beton has 2 classes \(a, b\) but "
                                        r"data.train_dataset .*raw\.beton has 10 classes"):
        parse_config([*args, f"--data.val_dataset={other}"], world_size=1)
    with pytest.raises(UserError, match=r"resized\.beton holds 16x16 images but data.train_dataset .*holds 32x32"):
        parse_config([*args, f"--data.val_dataset={resized}"], world_size=1)
    cfg, _ = parse_config([*args, f"--data.val_dataset={betons['jpg']}"], world_size=1)
    state = {"config": to_flat(cfg), "epoch": 0, "step": 0, "world_size": 1}
    with pytest.raises(UserError, match=r"other\.beton has 2 classes"):
        evaluate("ckpt.pt", [f"--data.train_dataset={train}", f"--data.val_dataset={other}"], state)


def test_an_overlapping_allocation_entry_is_named_as_an_overlap(betons, tmp_path):
    """Entry 3 pointing into entry 2's bytes lies inside the data: the line says what is wrong with it."""
    from ffcv.reader import Reader
    from ffcv.types import ALLOC_TABLE_TYPE

    from ffcv_amcl.data.beton import validate_beton

    r = Reader(str(betons["raw"]))
    order = np.argsort(r.alloc_table["ptr"])
    first, second = int(order[0]), int(order[1])
    blob = bytearray(betons["raw"].read_bytes())
    entry = int(r.header["alloc_table_ptr"]) + second * ALLOC_TABLE_TYPE.itemsize + 8      # its pointer
    blob[entry:entry + 8] = np.uint64(int(r.alloc_table["ptr"][first]) + 1).tobytes()
    bad = tmp_path / "overlap.beton"
    bad.write_bytes(bytes(blob))
    with pytest.raises(UserError, match=rf"allocation entry {first} \(sample \d+, pointer \d+, \d+ bytes\) "
                                        rf"overlaps the next entry"):
        validate_beton(bad)

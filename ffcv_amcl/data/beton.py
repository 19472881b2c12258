"""Check a .beton file before a loader reads it: its tables, its sidecar, and its JPEG images.

FFCV trusts its tables: a sample whose allocation entry is missing (a copy that lost its last bytes) or
whose pointer is wrong (a flipped bit) makes the loader thread fail mid-epoch, or read stray memory. The
layout (ffcv 1.0.2, reader.py / types.py / writer.py) is: header | field descriptors | one metadata row per
sample | data pages (page-aligned) | allocation table (sample_id, ptr, size) from `alloc_table_ptr` to
the end of the file. All of it is checked here with numpy on the tables alone, which costs well under a
second even for ImageNet's 1.28M samples. The sidecar must describe this very file (data.meta.check_meta).
FFCV's loader ignores a JPEG that does not decode (the view is left as stray memory), so a sample of the
JPEG images is decoded at every check with FFCV's own decoder, and every one of them by the check command:

    python -m ffcv_amcl.data.beton FILE.beton [FILE.beton ...]
"""
from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ffcv_amcl.data.meta import REWRITE, check_meta, meta_path, read_meta
from ffcv_amcl.errors import UserError, check_input_file, cli

MAX_FIELDS = 64
JPEG_SAMPLE = 16        # JPEG images decoded at every check, evenly spaced over the file
_validated: dict[tuple, dict] = {}  # (path, stats of the file and its sidecar) -> facts: loaders re-check for free


class _Damaged(Exception):
    """What is wrong with the file (the caller adds its name and the fix)."""


@dataclass
class Tables:
    """What the tables of a checked .beton say: per-sample image metadata, labels and allocation sizes."""

    num_samples: int
    image: np.ndarray        # FFCV's RGBImageField metadata rows: mode, width, height, data_ptr
    labels: np.ndarray
    nbytes: np.ndarray       # bytes allocated to each sample's image

    def facts(self) -> dict:
        """{'num_samples', 'image_shape': [H, W] when every image has that size (else None), 'max_side'}."""
        h, w = self.image["height"], self.image["width"]
        same = h.min() == h.max() and w.min() == w.max()
        return {"num_samples": self.num_samples, "image_shape": [int(h[0]), int(w[0])] if same else None,
                "max_side": int(max(h.max(), w.max()))}


def validate_beton(path, what: str = "dataset file") -> int:
    """Number of samples of the .beton at `path` once its tables, its sidecar and a sample of its JPEG images
    check out (beton_facts)."""
    return beton_facts(path, what)["num_samples"]


def beton_facts(path, what: str = "dataset file") -> dict:
    """Tables.facts() of the .beton at `path` after every check: header, tables and every sample's pointers
    agree, the sidecar describes this file, labels lie below its class count, JPEG_SAMPLE JPEG images decode.

    Raises UserError (one line naming `what`, the file and the fix) when it is missing, not a .beton, lacks
    the `image`/`label` fields, is truncated or corrupted anywhere in its tables, or its sidecar does not match."""
    p = check_input_file(path, what, "write it with write_datasets.py or fix the path")
    key = (str(p.resolve()), *_stats(p), *_stats(meta_path(p)))
    if key not in _validated:
        tables = read_tables(p, f"{what} {p}")
        meta = read_meta(p, what)
        check_meta(p, meta, tables.num_samples, what)
        check_contents(p, tables, f"{what} {p}", meta=meta)
        _validated[key] = tables.facts()
    return _validated[key]


def check_pair(train, val, what: tuple[str, str] = ("data.train_dataset", "data.val_dataset")) -> None:
    """A training set and its validation set describe the same task: the same classes (their sidecars) and, when
    each holds images of one size, the same size. One line naming both otherwise (kNN and linear probes would
    score one set's classes against another's)."""
    sides = [(name, read_meta(path, name), beton_facts(path, name)) for name, path in zip(what, (train, val))]
    (a, meta_a, facts_a), (b, meta_b, facts_b) = sides
    if not _same_classes(meta_a, meta_b):
        raise UserError(f"{b} {val} has {_classes(meta_b)} but {a} {train} has {_classes(meta_a)}: evaluation "
                        f"needs the validation split of the same dataset; pass the matching files")
    shape_a, shape_b = facts_a["image_shape"], facts_b["image_shape"]
    if shape_a and shape_b and shape_a != shape_b:
        raise UserError(f"{b} {val} holds {shape_b[0]}x{shape_b[1]} images but {a} {train} holds "
                        f"{shape_a[0]}x{shape_a[1]}: evaluation needs the validation split of the same dataset; "
                        f"pass the matching files")


def _same_classes(a: dict, b: dict) -> bool:
    """The class names agree when both sidecars list them, else the class counts when both give them."""
    for key in ("classes", "num_classes"):
        if a.get(key) is not None and b.get(key) is not None:
            return list(a[key]) == list(b[key]) if key == "classes" else a[key] == b[key]
    return True


def _classes(meta: dict) -> str:
    if meta.get("labelled", True) is False:
        return "no labels"
    names = meta.get("classes")
    if names is None:
        return f"{meta.get('num_classes')} classes"
    shown = ", ".join(map(str, names[:4])) + (", ..." if len(names) > 4 else "")
    return f"{len(names)} classes ({shown})"


def _stats(p: Path) -> tuple:
    try:
        st = p.stat()
    except OSError:
        return (None, None, None)
    return st.st_size, st.st_mtime_ns, st.st_ino


def read_tables(p: Path, subject: str, fix: str = REWRITE) -> Tables:
    """The tables of the .beton at `p` once they are consistent; one UserError line about `subject` (the file
    as the message names it, e.g. 'data.train_dataset x.beton') and `fix` otherwise."""
    try:
        return _tables(p, p.stat().st_size, subject)
    except _Damaged as exc:
        raise UserError(f"{subject} is not a readable .beton ({exc}): {fix}") from None
    except OSError as exc:
        raise UserError(f"{subject} cannot be read ({exc.strerror}): check its permissions") from None


def check_contents(p: Path, tables: Tables, subject: str, fix: str = REWRITE, *, meta: dict,
                   jpegs: int | None = JPEG_SAMPLE) -> None:
    """Labels within the bounds the sidecar `meta` allows and `jpegs` JPEG images (None: all) decode."""
    try:
        _check_labels(tables.labels, meta)
        _check_jpegs(p, tables, jpegs)
    except _Damaged as exc:
        raise UserError(f"{subject} is not a readable .beton ({exc}): {fix}") from None


def _tables(p: Path, size: int, subject: str) -> Tables:
    """The tables, after every check (ffcv is imported here: it pulls in torch and numba)."""
    from ffcv.types import ALLOC_TABLE_TYPE, HeaderType, get_metadata_type

    if size < HeaderType.itemsize:
        raise _Damaged("too short for an FFCV header")
    header = np.fromfile(p, dtype=HeaderType, count=1)[0]
    handlers, metadata_start = _fields(p, header, size)
    names = list(handlers)
    for name, kind in (("image", "RGBImageField"), ("label", "IntField")):
        if type(handlers.get(name)).__name__ != kind:
            raise UserError(f"{subject} has no {'RGB `image`' if name == 'image' else 'integer `label`'} field "
                            f"(fields: {names}): write it with write_datasets.py")
    n = int(header["num_samples"])
    if n == 0:
        raise UserError(f"{subject} holds no samples: write it with write_datasets.py")
    row = get_metadata_type(list(handlers.values()))
    table_ptr = int(header["alloc_table_ptr"])
    metadata_end = metadata_start + n * row.itemsize
    if metadata_end > size or table_ptr > size:
        raise _Damaged(f"its tables end past its {size} bytes: the file is truncated")
    if table_ptr < metadata_end:
        raise _Damaged("its header points the allocation table into the sample table")
    if (size - table_ptr) % ALLOC_TABLE_TYPE.itemsize:
        raise _Damaged("its allocation table ends mid-entry: the file is truncated")
    metadata = np.fromfile(p, dtype=row, count=n, offset=metadata_start)
    table = np.fromfile(p, dtype=ALLOC_TABLE_TYPE, offset=table_ptr)
    page = int(header["page_size"])
    data_start = -(-metadata_end // page) * page  # the writer's first page
    ptrs, sizes, owners = _allocations(table, n, page, data_start, table_ptr)
    image = metadata[f"f{names.index('image')}"]
    nbytes = _check_images(image, ptrs, sizes, owners)
    return Tables(n, image, metadata[f"f{names.index('label')}"], nbytes)


def _fields(p: Path, header, size: int) -> tuple[dict, int]:
    """{name: field handler} and where the metadata rows start; _Damaged on a bad header or descriptor."""
    from ffcv.types import CURRENT_VERSION, TYPE_ID_HANDLER, FieldDescType, HeaderType
    from ffcv.utils import decode_null_terminated_string

    if int(header["version"]) != CURRENT_VERSION:
        raise _Damaged(f"format version {int(header['version'])} in its header, expected {CURRENT_VERSION}")
    nf, page = int(header["num_fields"]), int(header["page_size"])
    if not 0 < nf <= MAX_FIELDS:
        raise _Damaged(f"{nf} fields in its header")
    if page < 1 << 21 or page >= 1 << 32 or page & (page - 1):
        raise _Damaged(f"page size {page} in its header")
    start = HeaderType.itemsize + nf * FieldDescType.itemsize
    if start > size:
        raise _Damaged("its field table ends past the end of the file")
    descriptors = np.fromfile(p, dtype=FieldDescType, count=nf, offset=HeaderType.itemsize)
    handlers = {}
    for d in descriptors:
        cls = TYPE_ID_HANDLER.get(int(d["type_id"]))
        try:
            name = decode_null_terminated_string(d["name"])
        except UnicodeDecodeError:
            name = None
        if cls is None or not name or name in handlers:
            raise _Damaged(f"a damaged field descriptor (type {int(d['type_id'])}, name {bytes(d['name'])!r})")
        handlers[name] = cls.from_binary(d["arguments"])
    return handlers, start


def _allocations(table, n: int, page: int, data_start: int, data_end: int):
    """The allocation table sorted by pointer (ptrs, sizes, owners) after checking every entry belongs to a
    sample that exists, lies in the data region, stays within one page and does not overlap the next."""
    order = np.argsort(table["ptr"], kind="stable")
    ptrs, sizes, owners = table["ptr"][order], table["size"][order], table["sample_id"][order]
    if len(ptrs) == 0:
        raise _Damaged("its allocation table is empty: the file is truncated")
    outside = (ptrs < data_start) | (ptrs >= data_end) | (sizes == 0)
    outside |= sizes > np.uint64(data_end) - np.minimum(ptrs, np.uint64(data_end))  # no overflow: ptr <= end
    shift = np.uint64(page.bit_length() - 1)
    overlap = np.zeros(len(ptrs), dtype=bool)
    overlap[:-1] = ptrs[:-1] + sizes[:-1] > ptrs[1:]  # overlaps the next entry (or repeats its pointer)
    checks = ((owners >= n, f"belongs to no sample (the file holds {n})"), (outside, "lies outside the data"),
              ((ptrs >> shift) != ((ptrs + np.maximum(sizes, 1) - np.uint64(1)) >> shift), "crosses a page"),
              (overlap, "overlaps the next entry"))
    for bad, problem in checks:
        if bad.any():
            k = int(order[np.flatnonzero(bad)[0]])
            raise _Damaged(f"allocation entry {k} (sample {int(table['sample_id'][k])}, pointer "
                           f"{int(table['ptr'][k])}, {int(table['size'][k])} bytes) {problem}")
    return ptrs, sizes, owners


def _check_images(image, ptrs, sizes, owners) -> np.ndarray:
    """Every image points at its own allocation; raw images fill it exactly. Returns each image's bytes."""
    from ffcv.fields.rgb_image import IMAGE_MODES

    jpg, raw = int(IMAGE_MODES["jpg"]), int(IMAGE_MODES["raw"])
    idx = np.minimum(np.searchsorted(ptrs, image["data_ptr"]), len(ptrs) - 1)
    h, w = image["height"].astype(np.uint64), image["width"].astype(np.uint64)
    checks = (
        (ptrs[idx] != image["data_ptr"], "has no allocation entry: the file is truncated or damaged"),
        (owners[idx] != np.arange(len(image), dtype=np.uint64), "points at another sample's data"),
        ((image["mode"] != jpg) & (image["mode"] != raw), "has an unknown image mode"),
        ((h == 0) | (w == 0), "has an empty image size"),
        ((image["mode"] == raw) & (sizes[idx] != h * w * np.uint64(3)), "has a raw image whose size does not "
                                                                        "match its bytes"),
    )
    for bad, problem in checks:
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise _Damaged(f"sample {i} {problem}")
    return sizes[idx]


def _check_labels(labels, meta: dict) -> None:
    """Labels are class indices: non-negative and, when the sidecar gives a class count, below it; an unlabelled
    set's are all UNLABELLED (data/labels.py)."""
    from ffcv_amcl.data.labels import bounds_text, label_bounds

    bounds = label_bounds(meta)
    bad = (labels < bounds[0]) | (labels >= bounds[1])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _Damaged(f"sample {i} has label {int(labels[i])}, outside {bounds_text(bounds)}")


def jpeg_indices(tables: Tables, count: int | None = JPEG_SAMPLE) -> np.ndarray:
    """The samples stored as JPEG: `count` of them evenly spaced (first and last included), or all for None."""
    from ffcv.fields.rgb_image import IMAGE_MODES

    jpgs = np.flatnonzero(tables.image["mode"] == int(IMAGE_MODES["jpg"]))
    if count is None or len(jpgs) <= count:
        return jpgs
    return jpgs[np.unique(np.linspace(0, len(jpgs) - 1, count).round().astype(np.int64))]


def _check_jpegs(p: Path, tables: Tables, count: int | None) -> None:
    """Decode the JPEG images `jpeg_indices` picks with FFCV's decoder (ctypes: the threads run in parallel)."""
    from ffcv.libffcv import imdecode

    from ffcv_amcl.machine import usable_cores

    indices = jpeg_indices(tables, count)
    if not len(indices):
        return
    data = np.memmap(p, dtype=np.uint8, mode="r")
    image, nbytes = tables.image, tables.nbytes

    def decodes(i: int) -> bool:
        h, w, ptr = int(image["height"][i]), int(image["width"][i]), int(image["data_ptr"][i])
        src = np.ascontiguousarray(data[ptr:ptr + int(nbytes[i])])
        return imdecode(src, np.empty((h, w, 3), np.uint8), h, w, h, w, 0, 0, 1, 1, False, False) == 0

    workers = min(usable_cores(), max(1, len(indices) // 64))
    with ThreadPoolExecutor(workers) as pool:
        ok = np.fromiter(pool.map(decodes, indices.tolist(), chunksize=256), dtype=bool, count=len(indices))
    if not ok.all():
        bad = indices[~ok]
        raise _Damaged(f"{len(bad)} of the {len(indices)} JPEG images checked do not decode, sample {int(bad[0])} "
                       f"first")


def verify(path) -> str:
    """Check the .beton at `path` completely (tables, sidecar, every JPEG image); one line describing it."""
    p = check_input_file(path, "dataset file", "write it with write_datasets.py or fix the path")
    tables = read_tables(p, str(p))
    meta = read_meta(p)
    check_meta(p, meta, tables.num_samples)
    check_contents(p, tables, str(p), meta=meta, jpegs=None)
    jpgs = len(jpeg_indices(tables, None))
    return (f"{p}: {tables.num_samples} images ({jpgs} stored as JPEG, all decode), {_classes(meta)}; "
            f"the sidecar matches the file")


@cli
def main(argv: list[str] | None = None) -> int:
    from ffcv_amcl.errors import ArgumentParser

    ap = ArgumentParser(prog="ffcv-amcl-check", description="Check .beton files completely: tables, sidecar and "
                                                            "every JPEG image.")
    ap.add_argument("files", nargs="+", help=".beton files written by write_datasets.py")
    for path in ap.parse_args(sys.argv[1:] if argv is None else argv).files:
        print(verify(path), flush=True)
    return 0


if __name__ == "__main__":
    main()

"""Check a .beton file completely before a loader reads it.

FFCV trusts its tables: a sample whose allocation entry is missing (a copy that lost its last bytes) or
whose pointer is wrong (a flipped bit) makes the loader thread fail mid-epoch, or read stray memory. The
layout (ffcv 1.0.2, reader.py / types.py / writer.py) is: header | field descriptors | one metadata row per
sample | data pages (page-aligned) | allocation table (sample_id, ptr, size) from `alloc_table_ptr` to
the end of the file. All of it is checked here with numpy on the tables alone (no pixel is read), which
costs well under a second even for ImageNet's 1.28M samples.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ffcv_amcl.errors import UserError

REWRITE = "rewrite it with write_datasets.py"
MAX_FIELDS = 64
_validated: dict[tuple, int] = {}  # (path, size, mtime, inode) -> num_samples: loaders re-check for free


class _Damaged(Exception):
    """What is wrong with the file (the caller adds its name and the fix)."""


def validate_beton(path, what: str = "dataset file") -> int:
    """Number of samples of the .beton at `path` once its header, tables and every sample's pointers agree.

    Raises UserError (one line naming `what`, the file and the fix) when it is missing, not a .beton, lacks
    the `image`/`label` fields, or is truncated or corrupted anywhere in its tables."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} {p} not found: write it with write_datasets.py or fix the path")
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _validated:
        try:
            _validated[key] = _check(p, st.st_size, what)
        except _Damaged as exc:
            raise UserError(f"{what} {p} is not a readable .beton ({exc}): {REWRITE}") from None
        except OSError as exc:
            raise UserError(f"{what} {p} cannot be read ({exc.strerror}): check its permissions") from None
    return _validated[key]


def _check(p: Path, size: int, what: str) -> int:
    """num_samples, after every check (ffcv is imported here: it pulls in torch and numba)."""
    from ffcv.types import ALLOC_TABLE_TYPE, HeaderType, get_metadata_type

    if size < HeaderType.itemsize:
        raise _Damaged("too short for an FFCV header")
    header = np.fromfile(p, dtype=HeaderType, count=1)[0]
    handlers, metadata_start = _fields(p, header, size)
    names = list(handlers)
    for name, kind in (("image", "RGBImageField"), ("label", "IntField")):
        if type(handlers.get(name)).__name__ != kind:
            raise UserError(f"{what} {p} has no {'RGB `image`' if name == 'image' else 'integer `label`'} field "
                            f"(fields: {names}): write it with write_datasets.py")
    n = int(header["num_samples"])
    if n == 0:
        raise UserError(f"{what} {p} holds no samples: write it with write_datasets.py")
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
    _check_images(image, ptrs, sizes, owners)
    _check_labels(p, metadata[f"f{names.index('label')}"])
    return n


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
    """The allocation table sorted by pointer (ptrs, sizes, owners) after checking every entry lies in the
    data region, within one page, without overlapping the next, and belongs to a sample that exists."""
    order = np.argsort(table["ptr"], kind="stable")
    ptrs, sizes, owners = table["ptr"][order], table["size"][order], table["sample_id"][order]
    if len(ptrs) == 0:
        raise _Damaged("its allocation table is empty: the file is truncated")
    bad = (owners >= n) | (ptrs < data_start) | (ptrs >= data_end) | (sizes == 0)
    bad |= sizes > np.uint64(data_end) - np.minimum(ptrs, np.uint64(data_end))  # no overflow: ptr <= end
    shift = np.uint64(page.bit_length() - 1)
    bad |= (ptrs >> shift) != ((ptrs + np.maximum(sizes, 1) - np.uint64(1)) >> shift)  # crosses a page
    bad[:-1] |= ptrs[:-1] + sizes[:-1] > ptrs[1:]  # overlaps the next entry (or repeats its pointer)
    if bad.any():
        k = int(order[np.flatnonzero(bad)[0]])
        raise _Damaged(f"allocation entry {k} (sample {int(table['sample_id'][k])}, pointer "
                       f"{int(table['ptr'][k])}, {int(table['size'][k])} bytes) lies outside the data")
    return ptrs, sizes, owners


def _check_images(image, ptrs, sizes, owners) -> None:
    """Every image points at its own allocation; raw images fill it exactly."""
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


def _check_labels(p: Path, labels) -> None:
    """Labels are class indices: non-negative and, when the sidecar gives a class count, below it; an unlabelled
    set's are all UNLABELLED (data/labels.py)."""
    from ffcv_amcl.data.labels import bounds_text, label_bounds
    from ffcv_amcl.data.meta import read_meta

    bounds = label_bounds(read_meta(p))
    bad = (labels < bounds[0]) | (labels >= bounds[1])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _Damaged(f"sample {i} has label {int(labels[i])}, outside {bounds_text(bounds)}")

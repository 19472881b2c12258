"""Write an indexable of (image, label) to a .beton with FFCV's DatasetWriter, safely.

FFCV's writer runs `dataset[i]` in forked worker processes and waits for a sample counter; a worker
that raises never reaches the count and the parent waits forever. So every sample goes through
`_Guarded`: it validates image and label, records the first failure in shared memory and hands
the writer a 1-pixel placeholder from then on, letting the write finish quickly; the parent then
raises that failure and the temporary file is deleted. A worker that dies anyway (killed, a full
disk, an error inside FFCV's encoder) is noticed by `data.supervise.Supervisor`. The same pass
records per-image pixel statistics for the mean/std sidecar, so the source is read only once.
"""
from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import time
import traceback
from pathlib import Path

import numpy as np

from ffcv_amcl.atomic import atomic_path
from ffcv_amcl.data.labels import bounds_text, label_bounds
from ffcv_amcl.data.meta import meta_path, write_meta
from ffcv_amcl.data.pixels import to_rgb8
from ffcv_amcl.data.supervise import Supervisor
from ffcv_amcl.errors import UserError, check

WRITE_MODES = ("raw", "jpg", "proportion", "smart")
PAGE_SIZE = 1 << 23  # FFCV's default (4 x 2 MiB); one sample must fit in a page
SMALL_PAGE_SIZE = 1 << 21  # FFCV's minimum: each worker pads its last page, so small sets stay small
_MSG_BYTES = 4096
_NSTAT = 7  # per image: mean R, G, B, std R, G, B, pixel count


class ArrayDataset:
    """In-memory source: images uint8 (N, H, W, 3), labels int (N,)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        check(len(images) == len(labels), f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, np.asarray(labels)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])


class Subset:
    """The samples `indices` of `dataset`, keeping its `labels` (for up-front label checks)."""

    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, np.asarray(indices, dtype=np.int64)
        labels = getattr(dataset, "labels", None)
        if labels is not None:
            self.labels = np.asarray(labels)[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.dataset[int(self.indices[i])]


def _as_rgb(image, i: int) -> np.ndarray:
    if not isinstance(image, np.ndarray):  # PIL image (or anything exposing __array_interface__)
        image = to_rgb8(image, f"of sample {i}") if hasattr(image, "mode") else np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise UserError(f"sample {i}: image is {image.dtype} {image.shape}, expected uint8 (H, W, 3) RGB")
    return image


def _label(label, i: int, bounds: tuple[int, int]) -> int:
    if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)):
        raise UserError(f"sample {i}: label {label!r} is not an integer class index")
    if not bounds[0] <= label < bounds[1]:
        raise UserError(f"sample {i}: label {label} is out of range {bounds_text(bounds)}: "
                        f"fix the labels or the class count")
    return int(label)


def _stored_shape(shape, max_resolution: int | None) -> tuple[int, int]:
    """(H, W) after RGBImageField's shrink of the longer side (same arithmetic as ffcv's resizer)."""
    h, w = shape[:2]
    if max_resolution and max(h, w) > max_resolution:
        ratio = max_resolution / max(h, w)
        return int(ratio * h), int(ratio * w)
    return h, w


class _Guarded:
    """Validates each sample inside the writer's workers; see the module docstring."""

    def __init__(self, dataset, bounds, max_resolution, write_mode, page_size):
        self.dataset, self.bounds, self.page_size = dataset, bounds, page_size
        self.max_resolution, self.write_mode = max_resolution, write_mode
        self.failed = mp.RawValue(ctypes.c_int, 0)  # 0 ok, 1 UserError, 2 other exception
        self.message = mp.RawArray(ctypes.c_char, _MSG_BYTES)
        self.lock = mp.Lock()
        self.stats = mp.RawArray(ctypes.c_double, len(dataset) * _NSTAT)
        self.placeholder = (np.zeros((1, 1, 3), np.uint8), 0)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        if self.failed.value:
            return self.placeholder
        try:
            image, label = self.dataset[i]
            image = _as_rgb(image, i)
            label = _label(label, i, self.bounds)
            h, w = _stored_shape(image.shape, self.max_resolution)
            if max(h, w) > 65535 or (self.write_mode != "jpg" and h * w * 3 > self.page_size):
                raise UserError(f"sample {i}: a {h}x{w} image does not fit a .beton page: "
                                f"set cfg.max_resolution (e.g. 512)")
            self._add_stats(i, image)
        except Exception as exc:
            self.fail(exc)
            return self.placeholder
        if self.write_mode == "proportion":
            np.random.seed([0, i])  # RGBImageField draws jpg-or-raw from np.random: make it per-sample
        return image, label

    def _add_stats(self, i: int, image: np.ndarray) -> None:
        import cv2  # per-channel mean/std in one C call: ~5 us, where numpy's uint8 sums take ~40 us

        mean, std = cv2.meanStdDev(np.ascontiguousarray(image))
        row = np.frombuffer(self.stats, dtype=np.float64, count=_NSTAT, offset=i * _NSTAT * 8)
        row[:3], row[3:6], row[6] = mean[:, 0], std[:, 0], image.shape[0] * image.shape[1]

    def fail(self, exc: Exception) -> None:
        """Record the first failure (any process); the parent raises it."""
        if isinstance(exc, UserError):
            kind, text = 1, str(exc)
        else:
            kind, text = 2, "".join(traceback.format_exception(exc))
        with self.lock:
            if not self.failed.value:
                self.message.value = text.encode("utf-8", "replace")[: _MSG_BYTES - 1]
                self.failed.value = kind

    def raise_failure(self) -> None:
        if self.failed.value:
            text = self.message.value.decode("utf-8", "replace")
            if self.failed.value == 1:
                raise UserError(text)
            raise RuntimeError(f"reading the source failed in a writer process:\n{text}")

    def mean_std(self) -> tuple[list[float], list[float]]:
        """Pool the per-image means/stds: E[x] and E[x^2] weighted by pixel count."""
        rows = np.frombuffer(self.stats, dtype=np.float64).reshape(-1, _NSTAT)
        w = rows[:, 6:7] / rows[:, 6].sum()
        mean = (w * rows[:, :3]).sum(0)
        second = (w * (rows[:, 3:6] ** 2 + rows[:, :3] ** 2)).sum(0)
        return mean.tolist(), np.sqrt(np.maximum(second - mean**2, 0.0)).tolist()


class _WriterHooks:
    """Context around FFCV's `DatasetWriter` run: an images/s bar, a faster mode lookup, and the supervision
    of its processes (data.supervise: no hang on a dead worker, no orphan, nothing left in /dev/shm).

    FFCV's writer draws a plain tqdm bar; the hooks swap in one with an 'images' unit, closed on the way out
    even when the write fails (an error line then starts on a line of its own).
    RGBImageField.encode looks its storage mode up in FFCV's IMAGE_MODES, a numba typed dict when FFCV was
    imported before this package (ffcv_import.py makes it a plain one otherwise), which from Python costs about
    as much as encoding a 32x32 image (and compiles on first use in every worker); while writing, a plain dict
    with the same entries stands in for it.
    """

    def __init__(self, supervisor: Supervisor):
        self.supervisor = supervisor

    def __enter__(self):
        import ffcv.fields.rgb_image
        import ffcv.writer
        from tqdm import tqdm

        self._bars = []

        def bar(*args, **kwargs):
            self._bars.append(tqdm(*args, unit="images", desc="write", smoothing=0.1, **kwargs))
            return self._bars[-1]

        swap = {"tqdm": bar, **self.supervisor.patches()}
        modes = ffcv.fields.rgb_image.IMAGE_MODES
        self._saved = {name: getattr(ffcv.writer, name) for name in swap}, modes
        for name, value in swap.items():
            setattr(ffcv.writer, name, value)
        ffcv.fields.rgb_image.IMAGE_MODES = {name: int(modes[name]) for name in ("jpg", "raw")}
        return self

    def __exit__(self, *exc) -> None:
        import ffcv.fields.rgb_image
        import ffcv.writer

        saved, ffcv.fields.rgb_image.IMAGE_MODES = self._saved
        for name, value in saved.items():
            setattr(ffcv.writer, name, value)
        for bar in self._bars:
            bar.close()


def write_beton(path, dataset, *, write_mode: str = "raw", max_resolution: int | None = None,
                jpeg_quality: int = 90, compress_probability: float = 0.5, num_workers: int = -1,
                meta: dict | None = None, verify: bool = False) -> dict:
    """Write fields `image` (RGBImageField) then `label` (IntField) to `path` (a .beton), atomically, plus the
    `path.json` sidecar (meta + num_samples, per-channel mean/std of the source pixels on 0-255, the file's
    fingerprint). The written file is checked before it takes its name: its tables, and a sample of its JPEG
    images decoded (every one with `verify`). The sidecar takes its name first: a crash between the two renames
    leaves a sidecar whose fingerprint names the new file, which every reader refuses.

    Labels must lie in [0, meta["num_classes"]) when that is given, and be UNLABELLED when meta["labelled"] is
    False. Returns the sidecar dict.
    """
    path = Path(path)
    meta = dict(meta or {})
    num_classes = meta.get("num_classes")
    _check_options(path, write_mode, max_resolution, jpeg_quality, compress_probability)
    n = _check_source(path, dataset, num_classes, label_bounds(meta))

    # ffcv pulls in torch and numba-compiles at import (seconds): only import it once the input is checked.
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    from ffcv_amcl.data.beton import JPEG_SAMPLE, check_contents, read_tables

    page_size = _page_size(dataset)
    guarded = _Guarded(dataset, label_bounds(meta), max_resolution, write_mode, page_size)
    fields = {"image": RGBImageField(write_mode=write_mode, max_resolution=max_resolution,
                                     jpeg_quality=jpeg_quality, compress_probability=compress_probability),
              "label": IntField()}
    workers = num_workers if num_workers > 0 else (os.cpu_count() or 1)
    with atomic_path(path) as tmp:
        writer = DatasetWriter(str(tmp), fields, page_size=page_size, num_workers=min(workers, n))
        seconds = _run_writer(writer, guarded, path)
        guarded.raise_failure()
        subject = f"the file written for {path}"
        fix = "nothing was written; write it again, or with --cfg.write_mode=raw"
        check_contents(tmp, read_tables(tmp, subject, fix), subject, fix, meta=meta,
                       jpegs=None if verify else JPEG_SAMPLE)
        mean, std = guarded.mean_std()
        meta.update(num_samples=n, mean=mean, std=std, write_mode=write_mode, max_resolution=max_resolution)
        meta = write_meta(path, meta, data=tmp)
    print(f"wrote {n} images to {path} in {seconds:.2f} s ({n / seconds:,.0f} images/s)", flush=True)
    return meta


def _check_options(path: Path, write_mode: str, max_resolution, jpeg_quality: int,
                   compress_probability: float) -> None:
    """Refuse a bad destination or encoder setting before ffcv is even imported."""
    check_destination(path)
    check(max_resolution is None or (isinstance(max_resolution, int) and max_resolution > 0),
          f"max_resolution {max_resolution!r}: give a positive number of pixels, or None to keep the source size")
    check(write_mode in WRITE_MODES, f"unknown write_mode {write_mode!r}: use one of {', '.join(WRITE_MODES)}")
    check(1 <= jpeg_quality <= 100, f"jpeg_quality {jpeg_quality} is outside 1..100")
    check(0.0 <= compress_probability <= 1.0, f"compress_probability {compress_probability} is outside 0..1")


def check_destination(path) -> None:
    """A .beton's name (not another file's sidecar) in an existing directory."""
    path = Path(path)
    if path.name.endswith(".beton.json"):
        raise UserError(f"cannot write {path}: that is the sidecar of {path.with_suffix('')}; give the .beton's own "
                        f"path (its sidecar is written beside it)")
    check(path.suffix == ".beton", f"cannot write {path}: a dataset file's name ends in .beton (e.g. "
                                   f"{path.with_suffix('.beton').name}; its sidecar is written beside it)")
    check(path.parent.is_dir(), f"cannot write {path}: directory {path.parent} does not exist (create it first)")
    check(not path.is_dir(), f"cannot write {path}: it is a directory; give a file name such as {path}/train.beton")
    check(not meta_path(path).is_dir(), f"cannot write {path}: its sidecar's name {meta_path(path)} is a directory")


def _check_source(path: Path, dataset, num_classes, bounds: tuple[int, int]) -> int:
    """The source's size; refuses an empty source, a bad class count, or out-of-range labels it exposes."""
    n = len(dataset)
    check(n > 0, f"nothing to write to {path}: the source has no images")
    check(num_classes is None or (isinstance(num_classes, int) and num_classes > 0),
          f"num_classes must be a positive int, got {num_classes!r}")
    labels = getattr(dataset, "labels", None)
    if labels is not None:  # known up front: refuse before any byte is written
        labels = np.asarray(labels)
        check(labels.shape == (n,) and np.issubdtype(labels.dtype, np.integer),
              f"labels must be {n} integers, got {labels.dtype} {labels.shape}")
        out = np.flatnonzero((labels < bounds[0]) | (labels >= bounds[1]))
        if len(out):
            raise UserError(f"label {labels[out[0]]} of sample {out[0]} is out of range {bounds_text(bounds)}: "
                            f"fix the labels or the class count")
    return n


def _page_size(dataset) -> int:
    """FFCV's minimum page for small in-memory images (each worker pads its last page), its default otherwise."""
    images = getattr(dataset, "images", None)
    small = isinstance(images, np.ndarray) and images[0].nbytes * 64 <= SMALL_PAGE_SIZE
    return SMALL_PAGE_SIZE if small else PAGE_SIZE


def _run_writer(writer, guarded: _Guarded, path: Path) -> float:
    """Seconds FFCV's writer took, run under the hooks and the supervisor, so that a dead worker surfaces as
    its own error (or a UserError naming it) instead of a hang."""
    start = time.perf_counter()
    supervisor = Supervisor(writer, path, guarded.fail)
    try:
        with _WriterHooks(supervisor):
            writer.from_indexed_dataset(guarded)
    except BaseException:
        supervisor.stop_workers()
        if supervisor.died:
            guarded.raise_failure()  # a worker's own one-line report (a full disk) comes first
            name, code = supervisor.died
            raise UserError(f"writer {name} exited with code {code} (its error is printed above); "
                            f"nothing was written to {path}") from None
        raise
    return time.perf_counter() - start

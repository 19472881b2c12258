"""FFCV loaders that yield two augmented views (SSL; plus N local views with multi-crop) or one centred view
(evaluation).

The numba stages (ffcv_amcl.data.augment) produce uint8 batches on the host, one row of views per sample
(augment/layout.py); the conversion to float, the normalisation with the dataset's mean/std (the .beton sidecar)
and the channels_last layout happen last, in torch, on the target device (on CUDA the uint8 batch crosses the bus,
4x less traffic than float).
"""
from __future__ import annotations

import contextlib
import queue
import threading

import numpy as np
import torch
from numba import njit

from ffcv.loader import Loader
from ffcv.loader.epoch_iterator import EpochIterator
from ffcv.pipeline.compiler import Compiler

from ffcv_amcl.errors import UserError
from ffcv_amcl.machine import usable_cores
from ffcv_amcl.data.beton import REWRITE, validate_beton
from ffcv_amcl.data.meta import read_meta
from ffcv_amcl.data.augment import (ColorJitter, EpochCounter, MultiViewDecoder, RandomBlur, RandomFlip,
                                    RandomGrayscale, RandomSolarize, ViewLayout, ViewRecipe, view_letters)
from ffcv_amcl.data.augment.recipe import BLUR_P, GLOBAL_VIEWS, LOCAL_SCALE, SOLARIZE_P

_ORDERS = ("random", "quasi_random", "sequential")


class _GuardedEpochIterator(EpochIterator):
    """FFCV's epoch thread, except that its failure reaches the consumer and torch keeps its thread count.

    FFCV runs the pipeline in this thread and hands batches over a queue; an exception in the thread (a
    damaged image, a bug) ends it without a word to the main thread, which then waits on the queue forever
    (and ignores SIGTERM). Here the thread records its exception, and `__next__` waits on the queue with a
    timeout, checking the thread is alive: a dead thread ends the run with one UserError line instead.

    The thread starts by setting numba's and torch's threads to the loader's worker count (FFCV's
    `Compiler.set_num_threads`; torch's count is process-wide). It does so before it queues its first batch,
    so `__next__`, once a batch is there, puts torch's count back to `torch_threads` (the count before the epoch).
    """

    failure: BaseException | None = None

    def __init__(self, loader, order, torch_threads: int):
        self.torch_threads = torch_threads             # before super() starts the thread
        super().__init__(loader, order)

    def run(self):
        try:
            super().run()
        except BaseException as exc:  # the consumer re-raises it; Python would only print it
            self.failure = exc

    def __next__(self):
        q = self.output_queue
        with q.not_empty:  # the queue's own condition: woken at once by a put, by the timeout otherwise
            while not q._qsize() and self.is_alive():
                q.not_empty.wait(0.5)
        _restore_torch_threads(self.torch_threads)
        if q.qsize() == 0:  # dead, and nothing left behind (re-read after seeing it dead)
            self.close()
            exc = self.failure
            cause = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}" if exc else "it stopped"
            raise UserError(f"reading {self.loader.reader.file_name} failed in the loader thread ({cause}): "
                            f"the file may be damaged; {REWRITE} (FFCV_AMCL_DEBUG=1 shows the traceback)") from exc
        return super().__next__()

    def run_pipeline(self, *args, **kwargs):
        if self.terminate_event.is_set():     # close(): no further batch; FFCV's run ends the epoch here
            raise StopIteration
        return super().run_pipeline(*args, **kwargs)

    def close(self):
        """Stop the thread after the batch it is on, wait for it, then release the epoch's memory (FFCV's own
        close only signals the thread, which sees the signal only when its queue is full, and releases the memory
        while the thread may still read it). An epoch left early (max_steps, SIGTERM, a first-batch preview)
        thus leaves no thread behind."""
        self.terminate_event.set()
        if self.ident is not None and self.ident != threading.get_ident():   # never from the thread itself
            while self.is_alive():         # its last put (the end marker) needs room in the queue
                _drain(self.output_queue)
                self.join(0.05)
        super().close()


def _drain(q: queue.Queue) -> None:
    with contextlib.suppress(queue.Empty):
        while True:
            q.get_nowait()


def first_batch(loader):
    """The first batch of a fresh epoch of `loader`, with the epoch's thread stopped once it is taken."""
    with contextlib.closing(iter(loader)) as batches:
        return next(batches)


def _restore_torch_threads(threads: int) -> None:
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


class GuardedLoader(Loader):
    """FFCV's Loader as this package's loaders use it; FFCV's own class is left as it is.

    - Its epochs run in `_GuardedEpochIterator`: a dying loader thread ends the run with one line.
    - torch's CPU thread count survives it (ffcv_amcl.machine.set_torch_threads decides that count). FFCV's
      `Compiler.set_num_threads` sets numba's threads (the pipeline's) and torch's to `num_workers` when a
      Loader is built, when an epoch starts and in the epoch's thread; the loader's worker count would then
      decide the model's threads, and with them how its floating-point sums are split and rounded.
    """

    def __init__(self, *args, **kwargs):
        threads = torch.get_num_threads()
        try:
            super().__init__(*args, **kwargs)
        finally:
            _restore_torch_threads(threads)

    def __iter__(self):
        # ffcv 1.0.2's Loader.__iter__, with the guarded iterator and torch's thread count kept
        threads = torch.get_num_threads()
        try:
            Compiler.set_num_threads(self.num_workers)
            order = self.next_traversal_order()
            selected_order = order[:len(self) * self.batch_size]
            self.next_epoch += 1
            if self.code is None or self.recompile:
                self.generate_code()
            return _GuardedEpochIterator(self, selected_order, threads)
        finally:
            _restore_torch_threads(threads)


def _workers(num_workers: int) -> int:
    """num_workers, at most the usable cores (numba refuses more threads than it started with); every usable core
    for -1 (and 0)."""
    return usable_cores() if num_workers is None or num_workers < 1 else min(int(num_workers), usable_cores())


def _check_common(path, batch_size, image_size, device):
    if not isinstance(image_size, (int, np.integer)) or isinstance(image_size, bool) or image_size <= 0:
        raise UserError(f"image_size must be a positive integer, got {image_size!r}; e.g. 32 for CIFAR, 224 for ImageNet")
    if not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise UserError(f"batch_size must be a positive integer, got {batch_size!r}")
    try:
        torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    return validate_beton(path)


@njit(cache=True, fastmath=True, error_model="numpy")
def _normalise_host(images, offset, count, side, mean, inv_std, out):
    """(x - mean) * inv_std of `count` consecutive views of side `side` starting at byte `offset` of each row of
    the uint8 (N, row_bytes) batch, into float32 NHWC out[j * N + i] (view j of sample i), in one pass (CPU)."""
    n = images.shape[0]
    nbytes = side * side * 3
    for j in range(count):
        for i in range(n):
            start = offset + j * nbytes
            src = images[i, start:start + nbytes]
            dst = out[j * n + i].reshape(-1)
            for k in range(nbytes // 3):
                dst[3 * k] = (np.float32(src[3 * k]) - mean[0]) * inv_std[0]
                dst[3 * k + 1] = (np.float32(src[3 * k + 1]) - mean[1]) * inv_std[1]
                dst[3 * k + 2] = (np.float32(src[3 * k + 2]) - mean[2]) * inv_std[2]


class _Normaliser:
    """uint8 views (host) -> float32 NCHW channels_last, (x - mean) / std, on the device.

    A float NHWC array viewed as NCHW is already channels_last. On CUDA the uint8 batch crosses
    the bus (4x less than float) and torch normalises it there. On the CPU one fused numba pass
    does it: three torch passes cost more, and torch's OpenMP threads spin-wait on the cores the
    loader's own threads need.
    """

    def __init__(self, path, device):
        meta = read_meta(path)
        self.device = torch.device(device)
        self.mean_np = np.asarray(meta["mean"], dtype=np.float32)
        self.inv_std_np = (1.0 / np.asarray(meta["std"], dtype=np.float64)).astype(np.float32)
        self.mean = torch.from_numpy(self.mean_np).to(self.device)
        self.inv_std = torch.from_numpy(self.inv_std_np).to(self.device)

    def __call__(self, images: np.ndarray, layout: ViewLayout, first: int, count: int = 1) -> torch.Tensor:
        """images: the pipeline's uint8 (N, row_bytes) batch; returns views first .. first + count - 1 (one side s)
        as one (count * N, 3, s, s) tensor, view-major (every sample's view `first`, then the next view's)."""
        side = layout.check_run(first, count)
        if self.device.type == "cpu":
            out = np.empty((count * len(images), side, side, 3), dtype=np.float32)
            _normalise_host(np.ascontiguousarray(images), layout.offsets[first], count, side, self.mean_np,
                            self.inv_std_np, out)
            return torch.from_numpy(out).permute(0, 3, 1, 2)
        u8 = layout.images(images, first, count)
        # pinned (torch's caching host allocator reuses the blocks): the copy runs asynchronously instead of
        # holding the Python thread while pageable memory is staged
        x = torch.from_numpy(u8).pin_memory().to(self.device, non_blocking=True)
        x = x.to(torch.float32).sub_(self.mean).mul_(self.inv_std)
        return x.permute(0, 3, 1, 2)


def by_name(loader, batch) -> dict:
    """FFCV returns a batch in the .beton's field order, not the `pipelines` order: name it."""
    return dict(zip(loader.pipeline_specs.keys(), batch))


class _Base:
    """Epoch bookkeeping shared by both loaders; `_loader` is the ffcv Loader."""

    def __init__(self, loader, epoch: EpochCounter, normalise: _Normaliser, batch_size: int, layout: ViewLayout):
        self._loader = loader
        self.layout = layout
        self._epoch = epoch
        self._normalise = normalise
        self.batch_size = int(batch_size)
        self.num_samples = int(len(loader.indices))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Epoch used by the next iter(): shuffle order and per-image random streams follow it."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self._loader)

    def _batches(self):
        self._epoch.value = self.epoch
        self._loader.next_epoch = self.epoch
        with contextlib.closing(iter(self._loader)) as batches:    # left early too: the thread stops
            for batch in batches:
                named = by_name(self._loader, batch)
                yield named["image"], named["label"]
        self.epoch += 1

    def _labels(self, labels) -> torch.Tensor:
        return torch.from_numpy(np.asarray(labels).reshape(-1).astype(np.int64)).to(
            self._normalise.device, non_blocking=True)


class SSLLoader(_Base):
    """Yields (view_a, view_b, label) per batch, and the local views as a fourth item with multi-crop; see
    make_ssl_loader."""

    def __iter__(self):
        local_crops = len(self.layout) - GLOBAL_VIEWS
        for images, labels in self._batches():
            batch = (self._normalise(images, self.layout, 0), self._normalise(images, self.layout, 1),
                     self._labels(labels))
            if local_crops:
                batch += (self._normalise(images, self.layout, GLOBAL_VIEWS, local_crops),)
            yield batch


class EvalLoader(_Base):
    """Yields (image, label) per batch; see make_eval_loader."""

    def __iter__(self):
        for images, labels in self._batches():
            yield self._normalise(images, self.layout, 0), self._labels(labels)


def build_image_pipeline(recipe: ViewRecipe, *, seed, epoch_address):
    """The FFCV operations for the `image` field: decoder, then flip, jitter, colour drop, blur (the order of the
    SimCLR reference), solarize last (BYOL's). A stage is left out if no view uses its letter."""
    common = dict(layout=recipe.layout(), seed=seed, epoch_address=epoch_address)
    ops = [MultiViewDecoder(random_crop=recipe.uses("a"), scale=recipe.scales(), **common)]
    for letter, make in (("e", lambda en: RandomFlip(enabled=en, **common)),
                         ("d", lambda en: ColorJitter(strength=recipe.color_strength, enabled=en, **common)),
                         ("c", lambda en: RandomGrayscale(enabled=en, **common)),
                         ("b", lambda en: RandomBlur(p=recipe.per_view(recipe.blur_p), enabled=en, **common)),
                         ("f", lambda en: RandomSolarize(p=recipe.per_view(recipe.solarize_p), enabled=en,
                                                         **common))):
        enabled = recipe.uses(letter)
        if any(enabled):
            ops.append(make(enabled))
    return ops


def view_options(data) -> dict:
    """The make_ssl_loader keywords that a config's `data` section sets (the views of every training view)."""
    return dict(augs=data.augs, augs_b=data.augs_b or None, image_size=data.image_size,
                color_strength=data.color_strength, crop_scale=tuple(data.crop_scale),
                local_crops=data.local_crops, local_size=data.local_size, local_scale=tuple(data.local_scale),
                blur_p=tuple(data.blur_p), solarize_p=tuple(data.solarize_p))


def make_ssl_loader(path, batch_size, *, augs="default", image_size=32, num_workers=-1,
                    device="cpu", distributed=False, seed=0, color_strength=0.5, drop_last=True,
                    crop_scale=(0.08, 1.0), augs_b=None, order="random", local_crops=0, local_size=0,
                    local_scale=LOCAL_SCALE, blur_p=BLUR_P, solarize_p=SOLARIZE_P):
    """Two-view (or multi-crop) SSL loader over an FFCV .beton.

    augs / augs_b: the augmentation letters or names (ffcv_amcl.data.augment.spec) of view a / view b
    (augs_b None or '' = the same as augs). local_crops N > 0: N local views of side local_size (0 = the rule of
    augment.recipe.default_local_size) cropped with local_scale, with view b's letters and probabilities; blur_p and
    solarize_p: the probabilities of views a and b. All views come from one decode of each image. Given a seed, the
    views of sample i in epoch e are the same for every run, worker count and distributed split, and the global
    views do not depend on local_crops. Iterating yields (view_a, view_b, label): float32 (B, 3, S, S)
    channels_last normalised tensors and int64 (B,) labels on `device`; with local_crops > 0, (view_a, view_b,
    label, local_views), local_views one float32 (N * B, 3, s, s) channels_last tensor, ordered local-view-major
    (every image's local view 0, then every image's local view 1, ...).
    """
    letters_a, letters_b = view_letters(augs, augs_b)
    _check_common(path, batch_size, image_size, device)
    if order not in _ORDERS:
        raise UserError(f"unknown order {order!r}; use one of {', '.join(_ORDERS)}")
    recipe = ViewRecipe(letters_a, letters_b, int(image_size), crop_scale=crop_scale, local_crops=local_crops,
                        local_size=local_size, local_scale=local_scale, color_strength=color_strength,
                        blur_p=blur_p, solarize_p=solarize_p)
    from ffcv.fields.basics import IntDecoder
    from ffcv.loader import OrderOption

    epoch = EpochCounter(0)
    image_ops = build_image_pipeline(recipe, seed=int(seed), epoch_address=epoch.address)
    loader = GuardedLoader(str(path), batch_size=int(batch_size), num_workers=_workers(num_workers),
                    order=getattr(OrderOption, order.upper()), drop_last=drop_last,
                    distributed=distributed, seed=int(seed),
                    pipelines={"image": image_ops, "label": [IntDecoder()]})
    return SSLLoader(loader, epoch, _Normaliser(path, device), batch_size, recipe.layout())


def make_eval_loader(path, batch_size, *, image_size=32, num_workers=-1, device="cpu",
                     distributed=False, centre_ratio=None):
    """Sequential single-view loader: centred square crop (side centre_ratio * min(H, W)),
    resized to image_size. centre_ratio defaults to 1.0 when the stored images are at most
    image_size * 8/7 on their short side (CIFAR: the whole image) and 0.875 otherwise (the
    usual ImageNet resize-256 / crop-224). A batch larger than the set is the set (FFCV allocates whole batches)."""
    samples = _check_common(path, batch_size, image_size, device)
    batch_size = min(int(batch_size), samples)
    from ffcv.fields.basics import IntDecoder
    from ffcv.loader import OrderOption
    from ffcv.reader import Reader

    if centre_ratio is not None and not 0 < float(centre_ratio) <= 1:
        # A ratio above 1 would ask the compiled crop for pixels outside the image.
        raise UserError(f"centre_ratio must be in (0, 1], got {centre_ratio!r}; "
                        "e.g. 0.875 for the ImageNet resize-256 / crop-224 evaluation")
    if centre_ratio is None:
        reader = Reader(str(path))
        meta = reader.metadata[f"f{list(reader.handlers).index('image')}"]
        short = np.minimum(meta["height"], meta["width"])
        centre_ratio = 1.0 if np.median(short) <= image_size * 8 / 7 else 0.875
    epoch = EpochCounter(0)
    layout = ViewLayout([int(image_size)])
    decoder = MultiViewDecoder(layout, random_crop=(False,), seed=0, epoch_address=epoch.address,
                               centre_ratio=float(centre_ratio), stretch=False)
    loader = GuardedLoader(str(path), batch_size=int(batch_size), num_workers=_workers(num_workers),
                    order=OrderOption.SEQUENTIAL, drop_last=False, distributed=distributed,
                    pipelines={"image": [decoder], "label": [IntDecoder()]})
    return EvalLoader(loader, epoch, _Normaliser(path, device), batch_size, layout)

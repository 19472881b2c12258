"""All views of one stored image from one decode: decode once, crop V times.

A decoder Operation (in FFCV terms, the first stage of the `image` pipeline) reads each sample once (JPEG decoded
once into a scratch buffer, raw pixels read in place) and writes V resized crops, each with its own random
parameters and its own side (two global views and N local ones, multi-crop), into one flat row per sample
(layout.py). Decoding once per view through V `PipelineSpec` branches would multiply the JPEG cost by V.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ffcv.fields.rgb_image import IMAGE_MODES, SimpleRGBImageDecoder
from ffcv.libffcv import imdecode
from ffcv.pipeline.allocation_query import AllocationQuery
from ffcv.pipeline.compiler import Compiler

from .crop import centre_crop_params, random_crop_params, resized_crop_into
from .layout import ViewLayout
from .rng import CROP, read_counter, runtime_ints, stream_key
from .stage import view_image


class MultiViewDecoder(SimpleRGBImageDecoder):
    """Decode each image once and write the views of `layout` (view v: layout.sides[v] square) into its row.

    random_crop[v]: True -> torchvision RandomResizedCrop parameters from view v's own stream, with the scale range
    scale[v] (one (lo, hi) for every view, or one per view); False -> the centred crop of side
    centre_ratio * min(H, W) (1.0: the full image when square, the full image resized otherwise with stretch=True).
    """

    def __init__(self, layout: ViewLayout, *, seed: int, epoch_address: int, random_crop=(True, True),
                 scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), centre_ratio: float = 1.0, stretch: bool = True):
        super().__init__()
        self.layout = layout
        self.seed = int(seed)
        self.epoch_address = int(epoch_address)
        self.random_crop = np.array([bool(r) for r in random_crop], dtype=np.bool_)
        if len(self.random_crop) != len(layout):
            raise ValueError(f"{len(self.random_crop)} random_crop flags for {len(layout)} views")
        scale = np.asarray(scale, dtype=np.float64)
        self.scale = np.ascontiguousarray(np.broadcast_to(scale.reshape(-1, 2), (len(layout), 2)))
        self.log_ratio = (float(np.log(ratio[0])), float(np.log(ratio[1])))
        self.centre_ratio = float(centre_ratio)
        if not 0 < self.centre_ratio <= 1:  # the compiled crop reads without bounds checks
            raise ValueError(f"centre_ratio must be in (0, 1], got {centre_ratio!r}")
        self.stretch = bool(stretch)

    def declare_state_and_memory(self, previous_state):
        max_h = np.uint64(self.metadata["height"].max())
        max_w = np.uint64(self.metadata["width"].max())
        shape = (self.layout.row_bytes,)
        u8 = np.dtype("<u1")
        # Scratch for decoded JPEGs only if the file holds any (raw images are read in place).
        has_jpg = bool((self.metadata["mode"] == IMAGE_MODES["jpg"]).any())
        scratch = (max_h * max_w * np.uint64(3),) if has_jpg else (1,)
        return (replace(previous_state, jit_mode=True, shape=shape, dtype=u8),
                (AllocationQuery(shape, u8), AllocationQuery(scratch, u8)))

    def generate_code(self):
        jpg = IMAGE_MODES["jpg"]
        mem_read = self.memory_read
        my_range = Compiler.get_iterator()
        imdecode_c = Compiler.compile(imdecode)
        ints = runtime_ints(self.seed, self.epoch_address)
        random_crop, scale = self.random_crop, self.scale
        offsets, sides = self.layout.offsets, self.layout.sides
        r_lo, r_hi = self.log_ratio
        centre_ratio, stretch = self.centre_ratio, self.stretch

        def decode(batch_indices, my_storage, metadata, storage_state):
            destination, scratch = my_storage
            seed, epoch = ints[0], read_counter(ints[1])
            for i in my_range(len(batch_indices)):
                index = batch_indices[i]
                field = metadata[index]
                data = mem_read(field["data_ptr"], storage_state)
                height = np.uint32(field["height"])
                width = np.uint32(field["width"])
                if field["mode"] == jpg:
                    buf = scratch[i]
                    imdecode_c(data, buf, height, width, height, width, 0, 0, 1, 1, False, False)
                    image = buf[:3 * height * width].reshape(height, width, 3)
                else:
                    image = data.reshape(height, width, 3)
                h = np.int64(height)
                w = np.int64(width)
                for v in range(len(offsets)):
                    if random_crop[v]:
                        key = stream_key(seed, epoch, index, v, CROP)
                        top, left, ch, cw = random_crop_params(key, h, w, scale[v, 0], scale[v, 1], r_lo, r_hi)
                    elif stretch:
                        top, left, ch, cw = 0, 0, h, w
                    else:
                        top, left, ch, cw = centre_crop_params(h, w, centre_ratio)
                    resized_crop_into(image, top, left, ch, cw, view_image(destination[i], offsets[v], sides[v]))
            return destination[:len(batch_indices)]

        decode.is_parallel = True
        return decode

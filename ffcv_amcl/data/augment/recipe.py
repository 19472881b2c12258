"""What each of a sample's 2 + N views gets: its side, its crop scale, its augmentation letters, its probabilities.

Views 0 and 1 are the global views a and b: side `image_size`, crop scale `crop_scale`, the letters of `augs` and
`augs_b`. Views 2 .. 2 + N - 1 are the local views of multi-crop (`local_crops` = N): side `local_size`, a random
resized crop of `local_scale` always (that is what makes them local views), and view b's other letters and
probabilities. `blur_p` and `solarize_p` give one probability per global view (BYOL's asymmetric recipe: blur 1.0
and 0.1, solarization 0.0 and 0.2); the local views take view b's.

Loads without numba or FFCV (config.py reads LOCAL_SIZE_RULE and default_local_size).
"""
from __future__ import annotations

from dataclasses import dataclass

from ffcv_amcl.errors import check

from .layout import ViewLayout

GLOBAL_VIEWS = 2
LOCAL_SCALE = (0.05, 0.4)      # DINO's and SwAV's local crops
BLUR_P = (0.5, 0.5)            # SimCLR's: blur either view with p = 0.5 (the BYOL and DINO configs set BYOL's 1.0, 0.1)
SOLARIZE_P = (0.0, 0.2)        # BYOL's: solarize view b only
LOCAL_SIZE_RULE = "3/7 of the global side rounded to a multiple of 8: 96 px at 224, 16 px at 32"


def default_local_size(image_size: int) -> int:
    """The local views' side when none is given (LOCAL_SIZE_RULE; DINO's 96 px beside 224 px global views)."""
    return max(8, 8 * round(int(image_size) * 3 / 7 / 8))


def _pair(value, name: str, *, probability: bool) -> tuple[float, float]:
    """Two floats: a crop-scale range 0 < lo <= hi <= 1, or two probabilities in [0, 1]."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        lo = hi = float("nan")
    if probability:
        check(0.0 <= lo <= 1.0 and 0.0 <= hi <= 1.0,
              f"{name} must be two probabilities in [0, 1] (view a, view b), got {value!r}")
    else:
        check(0.0 < lo <= hi <= 1.0, f"{name} must satisfy 0 < low <= high <= 1, got {value!r}")
    return lo, hi


def _count(value, name: str) -> int:
    check(isinstance(value, int) and not isinstance(value, bool) and value >= 0,
          f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class ViewRecipe:
    """The settings of every view of a sample (see the module docstring); checked on construction (UserError).
    local_size 0 takes default_local_size(image_size)."""

    letters_a: frozenset
    letters_b: frozenset
    image_size: int
    crop_scale: tuple = (0.08, 1.0)
    local_crops: int = 0
    local_size: int = 0
    local_scale: tuple = LOCAL_SCALE
    color_strength: float = 0.5
    blur_p: tuple = BLUR_P
    solarize_p: tuple = SOLARIZE_P

    def __post_init__(self):
        fix = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen dataclass)
        fix("crop_scale", _pair(self.crop_scale, "crop_scale", probability=False))
        fix("local_scale", _pair(self.local_scale, "local_scale", probability=False))
        fix("blur_p", _pair(self.blur_p, "blur_p", probability=True))
        fix("solarize_p", _pair(self.solarize_p, "solarize_p", probability=True))
        fix("local_crops", _count(self.local_crops, "local_crops"))
        size = _count(self.local_size, "local_size") or default_local_size(self.image_size)
        check(size <= self.image_size, f"local_size={size} is larger than the global views ({self.image_size} "
                                       f"px): local views are the small ones; lower local_size")
        fix("local_size", size)
        check(self.color_strength >= 0, f"color_strength must be >= 0, got {self.color_strength!r}")

    @property
    def n_views(self) -> int:
        return GLOBAL_VIEWS + self.local_crops

    def layout(self) -> ViewLayout:
        return ViewLayout([self.image_size] * GLOBAL_VIEWS + [self.local_size] * self.local_crops)

    def letters(self, view: int) -> frozenset:
        """The augmentation letters of view `view` (local views: view b's, plus the crop)."""
        if view < GLOBAL_VIEWS:
            return (self.letters_a, self.letters_b)[view]
        return self.letters_b | {"a"}

    def uses(self, letter: str) -> tuple[bool, ...]:
        """Per view: whether its letters hold `letter`."""
        return tuple(letter in self.letters(v) for v in range(self.n_views))

    def per_view(self, pair) -> tuple:
        """(value of view a, value of view b, view b's for every local view)."""
        return (pair[0], pair[1]) + (pair[1],) * self.local_crops

    def scales(self) -> tuple:
        """Per view: the random-resized-crop scale range."""
        return (self.crop_scale,) * GLOBAL_VIEWS + (self.local_scale,) * self.local_crops


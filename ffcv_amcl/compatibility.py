"""Can a checkpoint be used under these settings? The one check that train (resume), eval, profile, plots and
export all make, in one of two modes:

- WEIGHTS: the weights must fit. The settings a checkpoint's tensors depend on (MODEL_KEYS) must agree; anything
  else may differ (evaluating, profiling or plotting a checkpoint under other data or schedules is fine).
- RESUME: resuming this run. Every setting that shapes the run must agree too: data, batch, schedule (epochs,
  lr, warm-up), seed, augmentations, model, loss, and the number of processes; only config.RESUME_FREE may
  differ. A difference is refused unless the user continues on purpose (training.resume_changed=1).

Both compare the settings the two sides hold (flat {section.param: value}, plus "world_size"), so a caller
compares exactly what it knows (eval: the flags it was given). Differences are listed in one line,
'key: checkpoint X, now Y; ...'.
"""
from __future__ import annotations

from ffcv_amcl.config import RESUME_FREE
from ffcv_amcl.errors import UserError

WEIGHTS, RESUME = "weights", "resume"
# Settings a checkpoint's weights depend on: with other values the model's tensors have other shapes or meanings.
MODEL_KEYS = ("model.arch", "model.method", "model.amcl", "model.heads", "model.stem", "model.proj_dim",
              "model.proj_hidden", "model.pred_hidden", "data.image_size", "loss.queue_size", "loss.tau_hidden")
WORLD_SIZE = "world_size"                       # the number of processes, beside the settings


def shapes_the_run(key: str) -> bool:
    """False for the settings a resume may change freely (config.RESUME_FREE)."""
    return not any(key.startswith(free) if free.endswith(".") else key == free for free in RESUME_FREE)


def differences(saved: dict, current: dict, keys) -> dict[str, list]:
    """{key: [checkpoint's value, current value]} for each of `keys` both sides hold with different values."""
    return {k: [saved[k], current[k]] for k in keys if k in saved and k in current and saved[k] != current[k]}


def describe(diffs: dict[str, list]) -> str:
    return "; ".join(f"{key}: checkpoint {old!r}, now {new!r}" for key, (old, new) in diffs.items())


def check_compatible(saved: dict, current: dict, mode: str = WEIGHTS, *, source: str, fix: str,
                     allow_changed: bool = False) -> dict[str, list]:
    """Raise one UserError line naming every difference that `mode` forbids; `source` names the checkpoint in it
    and `fix` the ways out the caller offers. RESUME with `allow_changed`: returns the run-shaping differences
    the resume carries on under ({} otherwise), for the run's history."""
    if mode not in (WEIGHTS, RESUME):
        raise ValueError(f"mode {mode!r}: use WEIGHTS or RESUME")
    unfit = differences(saved, current, MODEL_KEYS)
    if unfit:
        raise UserError(f"{source} does not fit these settings ({describe(unfit)}): {fix}")
    if mode == WEIGHTS:
        return {}
    changed = differences(saved, current, [k for k in current if shapes_the_run(k) and k not in MODEL_KEYS])
    if changed and not allow_changed:
        raise UserError(f"{source} was trained under other settings ({describe(changed)}): rerun with the "
                        f"checkpoint's settings, continue under the new ones on purpose with "
                        f"--training.resume_changed=1, or {fix}")
    return changed

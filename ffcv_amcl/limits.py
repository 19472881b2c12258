"""Upper bounds of the settings that size what a training step allocates, each against what it multiplies.

A setting that multiplies the memory of every step (MoCHi's mixes per query, the heads, a projector's width, the
views' side) could otherwise grow the step until it fills the machine, where it hangs or is killed without a word.
Each is bounded here at config time by what it multiplies, and a value past its bound is one line naming the bound.
Settings clamped where they are used need none: loss.topk (to the negatives there are), eval.knn_k (to the
training set), eval.batch_size (to the set it reads), training.batch_size (config.validate: at most the training
set). loss.queue_size is allocated once, not per mix, and may exceed the training set (MoCo on CIFAR-10 keeps
65,536 keys of 50,000 images).
"""
from __future__ import annotations

from ffcv_amcl.errors import UserError

MAX_HEADS = 64          # AMCL's studies use 1 to 8; each head adds a projector and a loss to every step
MAX_WIDTH = 262_144     # widths: 4x DINO's 65,536 prototypes, the widest layer a shipped method uses
VIEW_FACTOR = 4         # views at most 4x the largest stored image side (past it a crop is only upsampled)
WIDTHS = ("model.proj_dim", "model.proj_hidden", "model.pred_hidden", "loss.tau_hidden")


def bounds(cfg, facts: dict) -> list[tuple[str, int, int, str]]:
    """(setting, value, bound, the bound in words) for every bounded setting that applies to `cfg`; `facts` are
    config.validate's (train_max_side, eval_max_side once the files were read)."""
    m, l, d = cfg.model, cfg.loss, cfg.data
    out = [("model.heads", m.heads, MAX_HEADS, f"{MAX_HEADS}, the most heads a run may have (each adds a "
                                               f"projector and a loss to every step)")]
    out += [(key, _value(cfg, key), MAX_WIDTH, f"{MAX_WIDTH}, the widest layer a run may have (4 x DINO's 65,536 "
                                               f"prototypes)") for key in WIDTHS]
    if m.method == "moco" and l.mochi_n_hard > 0:
        out.append(("loss.mochi_s1 + loss.mochi_s2", l.mochi_s1 + l.mochi_s2, l.queue_size,
                    f"loss.queue_size={l.queue_size} (MoCHi's mixed negatives per query may not outnumber the "
                    f"queue's real ones)"))
    for key, size, side in (("data.image_size", d.image_size, facts.get("train_max_side")),
                            ("eval.image_size", cfg.eval.image_size, facts.get("eval_max_side"))):
        if side:
            out.append((key, size, VIEW_FACTOR * side, f"{VIEW_FACTOR * side} = {VIEW_FACTOR} x the largest "
                                                       f"stored image side ({side} px)"))
    return out


def _value(cfg, key: str):
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def check_limits(cfg, facts: dict) -> None:
    """One UserError line for the first setting past its bound."""
    for setting, value, bound, what in bounds(cfg, facts):
        if value > bound:
            several = "+" in setting
            raise UserError(f"{setting}{' = ' if several else '='}{value} exceeds {what}: lower "
                            f"{'them' if several else 'it'} to at most {bound}")

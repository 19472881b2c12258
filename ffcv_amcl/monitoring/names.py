"""The fields of a metrics.jsonl record, named once: the trainer writes them, plots, export and the run summary
read them back through these names and helpers, never by taking strings apart.

A record is one epoch: run-wide fields (`epoch`, `step`, `loss`, ...) and per-head fields `{base}_head{c}`, one
per projection head c, e.g. `tau_pos_head0` (the epoch's mean positive-pair temperature of head 0) or
`tau_pos_p50_head1` (the median of head 1's positive-pair temperatures).
"""
from __future__ import annotations

import re

EPOCH = "epoch"                          # epochs completed (0: the untrained network)
STEP = "step"                            # optimiser steps completed
LOSS = "loss"                            # mean training loss over the epoch (None at epoch 0)
LR = "lr"                                # learning rate of the epoch's last step
IMAGES_PER_S = "images_per_s"            # training images per second over the epoch (None at epoch 0)
KNN_TOP1 = "knn_top1"                    # kNN monitor, validation top-1 (%)
ONLINE_LINEAR_TOP1 = "online_linear_top1"  # online linear probe, validation top-1 (%)
SETTINGS_CHANGED = "settings_changed"    # {setting: [old, new]}: the first record after a resume under changes
RANKME = "rankme"                        # kNN epochs: effective rank of the backbone features (collapse -> 1)
PROJ_STD = "proj_std"                    # kNN epochs: per-dimension std of the normalised projections (-> 0)

# Per-head bases.
KINDS = ("pos", "neg")                   # positive pairs, the selected negatives
TAU_STATS = ("p10", "p50", "p90", "at_min", "at_max")   # percentiles; shares within 1% of tau_min / tau_max
RANK_CORR = "rank_corr_s_tau"            # Spearman correlation of s+ with tau+ (last batch of the epoch)
POS_NEG_OVERLAP = "pos_neg_overlap"      # overlap coefficient of the positive and negative similarity histograms
POS_BELOW_HALF = "pos_below_half"        # share of positive pairs with cosine similarity below 0.5

# Fields where a lower value is the better one (every other field a comparison reads: higher is better).
LOWER_IS_BETTER = (LOSS, POS_NEG_OVERLAP, POS_BELOW_HALF)


def tau_mean(kind: str) -> str:
    """Base of the epoch's mean temperature of `kind` pairs; also the key of the method's per-step stats."""
    return f"tau_{kind}"


def tau_stat(kind: str, stat: str) -> str:
    """Base of a temperature-health statistic (`stat` in TAU_STATS) of `kind` pairs."""
    return f"tau_{kind}_{stat}"


def head_field(base: str, head: int) -> str:
    return f"{base}_head{head}"


def head_values(record: dict, base: str) -> dict[int, object]:
    """{head: value} of every `{base}_head{c}` field the record holds."""
    pattern = re.compile(rf"^{re.escape(base)}_head(\d+)$")
    found = ((pattern.match(key), value) for key, value in record.items())
    return dict(sorted((int(m.group(1)), value) for m, value in found if m))


def head_base(key: str) -> str:
    """The base of a per-head field (`tau_pos_head1` -> `tau_pos`); any other field as it is."""
    return re.sub(r"_head\d+$", "", key)


def higher_is_better(key: str) -> bool:
    """Whether a larger value of record field `key` (or of its per-head base) is the better one."""
    return head_base(key) not in LOWER_IS_BETTER


def heads(records: list[dict], base: str) -> list[int]:
    """The heads any of `records` has a `{base}_head{c}` field for, in order."""
    return sorted({c for r in records for c in head_values(r, base)})

"""Temperature health: do AMCL's temperatures adapt, or do they sit at a bound?

Accumulated on the device from the tensors each step already has (no host sync per step): per head, a
histogram of the positive pairs' temperatures and one of the selected negatives', over bins spaced
geometrically between tau_min and tau_max whose first and last bins are exactly the 1% bands at the bounds
([tau_min, 1.01 tau_min] and [0.99 tau_max, tau_max]); and the last batch's (s+, tau+) for a rank correlation.
At the end of an epoch `summary()` turns them into medians, 10th/90th percentiles, the shares at each bound
and the Spearman correlation of s+ with tau+ (negative: harder positives get higher temperatures).
`TemperatureMonitor` runs it as an epoch monitor (monitoring.registry) on every AMCL run.
"""
from __future__ import annotations

import math

import torch

from ffcv_amcl.monitoring.names import KINDS, RANK_CORR, head_field, tau_stat

BINS = 240


def bin_edges(tau_min: float, tau_max: float, bins: int = BINS) -> torch.Tensor:
    """bins + 1 float64 edges: tau_min, 1.01 tau_min, geometric steps, 0.99 tau_max, tau_max. Bounds within 2% of
    each other leave no interior: every inner edge sits at their geometric mean (every value is at a bound)."""
    lo, hi = tau_min * 1.01, tau_max * 0.99
    if hi > lo:
        inner = torch.logspace(math.log10(lo), math.log10(hi), bins - 1, dtype=torch.float64)
    else:
        inner = torch.full((bins - 1,), math.sqrt(tau_min * tau_max), dtype=torch.float64)
    return torch.cat([torch.tensor([tau_min], dtype=torch.float64), inner,
                      torch.tensor([tau_max], dtype=torch.float64)])


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 0..N-1 of a 1-D tensor, ties sharing the mean of their ranks (as Spearman's definition asks)."""
    _, inverse, counts = torch.unique(x, sorted=True, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    return ((ends - counts + ends - 1) / 2)[inverse]


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman correlation of a and b along the last axis: (C, N) -> (C,); NaN where a or b is constant.
    Once per epoch (a loop over heads is fine here)."""
    rows = []
    for x, y in zip(a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])):
        rx, ry = average_ranks(x), average_ranks(y)
        rx, ry = rx - rx.mean(), ry - ry.mean()
        rows.append((rx * ry).sum() / (rx.pow(2).sum() * ry.pow(2).sum()).sqrt())
    rho = torch.stack(rows).view(a.shape[:-1])
    constant = (a.amax(-1) == a.amin(-1)) | (b.amax(-1) == b.amin(-1))
    return rho.masked_fill(constant.to(rho.device), float("nan"))


def quantile(counts: torch.Tensor, edges: torch.Tensor, q: float) -> float:
    """The q-quantile of values histogrammed as `counts` over `edges`, interpolated geometrically in a bin."""
    total = float(counts.sum())
    if total <= 0:
        return float("nan")
    cum = counts.double().cumsum(0)
    i = int(torch.searchsorted(cum, torch.tensor(q * total, dtype=torch.float64)).clamp(max=len(counts) - 1))
    before = float(cum[i - 1]) if i > 0 else 0.0
    frac = (q * total - before) / max(float(counts[i]), 1e-12)
    lo, hi = float(edges[i]), float(edges[i + 1])
    return lo * (hi / lo) ** min(max(frac, 0.0), 1.0)


class TemperatureHealth:
    """Per-head histograms of tau+ and of the selected negatives' tau over an epoch, and the last (s+, tau+)."""

    def __init__(self, tau_min: float, tau_max: float, heads: int):
        self.tau_min, self.tau_max, self.heads = tau_min, tau_max, heads
        self.edges = bin_edges(tau_min, tau_max)
        self._inner: dict[torch.device, torch.Tensor] = {}        # the inner edges, copied once per device
        self.counts: dict[str, torch.Tensor] = {}
        self.last: tuple[torch.Tensor, torch.Tensor] | None = None

    def add(self, pairs: dict) -> None:
        """pairs: tau_pos (C, ...), optionally tau_neg (C, ...) and s_pos (C, N), as the loss's last_pairs."""
        for kind in KINDS:
            tau = pairs.get(f"tau_{kind}")
            if tau is None or tau.numel() == 0:
                continue
            flat = tau.detach().reshape(tau.shape[0], -1).float().contiguous()   # bucketize warns on a strided one
            idx = torch.bucketize(flat, self._inner_edges(flat.device), right=True)
            idx = (idx + BINS * torch.arange(flat.shape[0], device=flat.device).unsqueeze(1)).reshape(-1)
            # index_add_, not bincount: bincount reads the index range on the host (a sync per call on CUDA)
            counts = idx.new_zeros(flat.shape[0] * BINS).index_add_(0, idx, torch.ones_like(idx))
            counts = counts.view(flat.shape[0], BINS)
            prev = self.counts.get(kind)
            self.counts[kind] = counts if prev is None else prev.to(counts.device) + counts
        if "s_pos" in pairs:
            self.last = (pairs["s_pos"].detach().reshape(pairs["s_pos"].shape[0], -1),
                         pairs["tau_pos"].detach().reshape(pairs["tau_pos"].shape[0], -1))

    def _inner_edges(self, device: torch.device) -> torch.Tensor:
        if device not in self._inner:
            self._inner[device] = self.edges[1:-1].float().to(device)
        return self._inner[device]

    def state(self, reducer=lambda x: x) -> dict:
        """Plain tensors for a mid-epoch checkpoint (loads with weights_only=True); `reducer` sums the
        histograms over processes (a collective on every rank)."""
        out = {f"counts_{k}": reducer(v).cpu() for k, v in self.counts.items()}
        if self.last is not None:
            out["last_s_pos"], out["last_tau_pos"] = (t.cpu() for t in self.last)
        return out

    def load(self, state: dict) -> None:
        self.counts = {k[len("counts_"):]: v for k, v in state.items() if k.startswith("counts_")}
        if "last_s_pos" in state:
            self.last = (state["last_s_pos"], state["last_tau_pos"])

    def summary(self, reducer=lambda x: x) -> dict:
        """{"pos": [per head {p10, p50, p90, at_min, at_max}], "neg": [...], "rank_corr": [per head]}, over the
        histograms summed by `reducer` (a collective on every rank; the rank correlation is this process's)."""
        out: dict = {}
        edges = self.edges
        for kind, counts in sorted(self.counts.items()):
            counts = reducer(counts).double().cpu()
            rows = []
            for c in range(counts.shape[0]):
                h, total = counts[c], max(float(counts[c].sum()), 1.0)
                rows.append({"p10": quantile(h, edges, 0.1), "p50": quantile(h, edges, 0.5),
                             "p90": quantile(h, edges, 0.9), "at_min": float(h[0]) / total,
                             "at_max": float(h[-1]) / total})
            out[kind] = rows
        if self.last is not None:
            out["rank_corr"] = [float(x) for x in spearman(*self.last).cpu()]
        return out


def record_fields(summary: dict) -> dict:
    """Flat metrics.jsonl fields: tau_{pos,neg}_{p10,p50,p90,at_min,at_max}_head{c}, rank_corr_s_tau_head{c}
    (None where undefined, so a record stays valid JSON)."""
    fields = {}
    for kind in KINDS:
        for c, row in enumerate(summary.get(kind, [])):
            fields.update({head_field(tau_stat(kind, name), c): _finite_or_none(v) for name, v in row.items()})
    for c, r in enumerate(summary.get("rank_corr", [])):
        fields[head_field(RANK_CORR, c)] = _finite_or_none(r)
    return fields


def at_bound_warning(summary: dict, tau_min: float, tau_max: float) -> str | None:
    """One line when more than half of the positive or of the negative temperatures sit at a bound."""
    for kind, label in (("pos", "positive-pair"), ("neg", "selected negatives'")):
        rows = summary.get(kind) or []
        if not rows:
            continue
        at_min = sum(r["at_min"] for r in rows) / len(rows)
        at_max = sum(r["at_max"] for r in rows) / len(rows)
        if at_min + at_max > 0.5:
            where = f"tau_min={tau_min:g}" if at_min >= at_max else f"tau_max={tau_max:g}"
            return (f"{at_min + at_max:.0%} of the {label} temperatures sit at a bound ({where}): AMCL's "
                    f"temperatures are not adapting; look at --loss.amcl_form (ref is unbounded) and "
                    f"--loss.tau_min/--loss.tau_max")
    return None


def _finite_or_none(x: float) -> float | None:
    return x if isinstance(x, float) and math.isfinite(x) else None


class TemperatureMonitor:
    """Temperature health over an epoch, as the trainer's monitors run: fed each step's StepOutput (its `pairs`),
    saved mid-epoch, and turned into record fields and the at-a-bound warning at the end."""

    def __init__(self, tau_min: float, tau_max: float, heads: int):
        self.health = TemperatureHealth(tau_min, tau_max, heads)

    @classmethod
    def for_model(cls, model) -> "TemperatureMonitor | None":
        """A monitor for an AMCL model's loss (its temperature bounds and heads); None without AMCL."""
        crit = model.criterion if model.amcl else None
        return cls(crit.tau_min, crit.tau_max, crit.heads) if crit is not None else None

    def add(self, out) -> None:
        if out.pairs:
            self.health.add(out.pairs)

    def state(self, reducer) -> dict:
        return self.health.state(reducer)

    def load(self, state: dict) -> None:
        self.health.load(state)

    def finish(self, reducer) -> tuple[dict, list[str]]:
        """(record fields, warning lines) of the epoch over all processes (a collective); nothing before a step."""
        if not self.health.counts:
            return {}, []
        summary = self.health.summary(reducer)
        message = at_bound_warning(summary, self.health.tau_min, self.health.tau_max)
        return record_fields(summary), [message] if message else []

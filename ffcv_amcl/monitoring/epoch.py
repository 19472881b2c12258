"""One epoch's statistics: the per-step losses, the method's per-head means (AMCL's temperatures) and the
registered monitors, all kept on the device (no host sync per step) and reduced over the processes once, at
the end of the epoch, into its metrics.jsonl record."""
from __future__ import annotations

import math

import torch

from ffcv_amcl import distributed as dist
from ffcv_amcl.monitoring.names import EPOCH, IMAGES_PER_S, KINDS, LOSS, LR, STEP, head_field, tau_mean
from ffcv_amcl.monitoring.registry import monitors_for

MEANS = tuple(tau_mean(kind) for kind in KINDS)      # the method's stats that become per-head record fields


class EpochStats:
    """The current epoch's totals. `state()` is what a mid-epoch checkpoint stores, `load()` takes it back."""

    def __init__(self, monitors: dict | None = None):
        self.losses: list[torch.Tensor] = []
        self.tau: dict[str, torch.Tensor] = {}
        self.monitors = dict(monitors or {})
        self.prior_sum, self.prior_n = 0.0, 0          # from a checkpoint taken mid-epoch

    @classmethod
    def for_model(cls, model) -> "EpochStats":
        """Fresh totals with the registered monitors that apply to `model` (the unwrapped SSLModel)."""
        return cls(monitors_for(model))

    def add(self, out) -> None:
        """One step's StepOutput (loss, per-head stats, what the monitors read)."""
        self.losses.append(out.loss.float())
        for key, value in out.stats.items():
            prev = self.tau.get(key)
            self.tau[key] = value.float() if prev is None else prev.to(value.device) + value.float()
        for monitor in self.monitors.values():
            monitor.add(out)

    def state(self) -> dict:
        """Partial-epoch totals for a mid-epoch checkpoint (a collective: call on every rank)."""
        s = self.summary()
        return {"loss_sum": s["loss_sum"], "n": s["n"],
                "tau": {k: torch.tensor(s[k]) * max(s["n"], 1) for k in self.tau},
                "monitors": {name: m.state(dist.sum_across_ranks) for name, m in self.monitors.items()}}

    def load(self, state: dict) -> None:
        self.prior_sum, self.prior_n = float(state["loss_sum"]), int(state["n"])
        self.tau = dict(state.get("tau", {}))
        for name, saved in state.get("monitors", {}).items():
            if name in self.monitors and saved and dist.rank() == 0:
                self.monitors[name].load(saved)     # totals over all processes: one rank carries them

    def summary(self) -> dict:
        """{"loss_sum", "n", "step_losses", and per stats key its per-head means} over all processes (a
        collective)."""
        if self.losses:
            stacked = dist.mean_across_ranks(torch.stack(self.losses))
            local = stacked.double().cpu()
        else:
            local = torch.zeros(0, dtype=torch.float64)
        n = self.prior_n + len(local)
        out = {"loss_sum": self.prior_sum + float(local.sum()), "n": n, "step_losses": local.tolist()}
        for key, value in self.tau.items():
            v = (dist.mean_across_ranks(value.to(stacked.device)) if self.losses else value).cpu()
            out[key] = [float(x) / max(n, 1) for x in v.double()]
        return out

    def record(self, *, epoch: int, step: int, lr: float, images_per_s: float) -> tuple[dict, list[str], list]:
        """(the epoch's record, the monitors' warning lines, the per-step losses); a collective."""
        s = self.summary()
        record = {EPOCH: epoch, STEP: step, LOSS: s["loss_sum"] / max(s["n"], 1), LR: lr, IMAGES_PER_S: images_per_s}
        for key in MEANS:
            if key in s and all(math.isfinite(v) for v in s[key]):
                record.update({head_field(key, c): v for c, v in enumerate(s[key])})
        warnings = []
        for monitor in self.monitors.values():
            fields, lines = monitor.finish(dist.sum_across_ranks)
            record.update(fields)
            warnings += lines
        return record, warnings, s["step_losses"]

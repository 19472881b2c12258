"""Where does each AMCL form send the temperatures? The package's own loss, with only phi learning.

The embeddings are fixed: B images on the unit sphere in D dimensions, two views of each, every image with its own
noise level, so that some positive pairs are easy (s+ near 1) and some hard. Only the temperature network phi of an
`AMCLContrastive` (one head) trains, with Adam, on that loss's own value; nothing else moves. For each form and
setting it prints where the temperatures end: the positive pairs' median and 10th-90th percentiles, the share at
tau_min, the selected negatives' median, and the rank correlation of s+ with tau+ (negative: a harder positive
pair gets a higher temperature, what the method intends). docs/amcl.md reads these lines.

    python -m benchmarks.studies.phi_probe [--steps 400] [--batch 256]

A probe on fixed embeddings, about a minute on one core: it shows what each objective asks of phi, not how a
training ends.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from ffcv_amcl.errors import UserError, cli
from ffcv_amcl.losses.amcl import AMCLContrastive
from ffcv_amcl.monitoring.health import spearman

DIM, TOPK, TAU_MAX = 128, 100, 2.0
# (form, tau_min, keyword arguments of the loss): ref at the spec's 1e-5 and at two raised floors; post at the
# reference's beta and at beta = 1; hetero at the package's tau_min and at a higher one, with d = 2 and 4.
SETTINGS = [("ref", tau_min, {}) for tau_min in (1e-5, 0.05, 0.2)] + [
    ("post", tau_min, {"beta": beta}) for tau_min in (1e-5, 0.05) for beta in (1e-4, 1.0)] + [
    ("hetero", tau_min, {"nll_dim": d}) for tau_min in (0.02, 0.05) for d in (2.0, 4.0)]


def views(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two noisy unit views (1, B, D) of B random unit vectors; image i's noise has norm up to 0.84."""
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(batch, DIM, generator=g), dim=-1)
    level = 0.84 * torch.rand(batch, 1, generator=g)

    def view() -> torch.Tensor:
        return F.normalize(x + level * F.normalize(torch.randn(batch, DIM, generator=g), dim=-1), dim=-1)

    return view()[None], view()[None]


def probe(form: str, tau_min: float, za: torch.Tensor, zb: torch.Tensor, steps: int, **kwargs) -> dict:
    """Train the loss's phi alone for `steps`, then read the temperatures of the pairs the loss uses."""
    torch.manual_seed(1)
    loss_fn = AMCLContrastive(DIM, 1, topk=TOPK, tau_min=tau_min, tau_max=TAU_MAX, form=form, validate=False,
                              **kwargs)
    optimizer = torch.optim.Adam(loss_fn.parameters(), lr=1e-3)
    for _ in range(steps):
        loss = loss_fn(za, zb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        z = torch.cat([za, zb], 1)[0]                                   # (2B, D): anchors, both directions
        B = za.shape[1]
        tau = loss_fn.pair_temperatures(z[None], z[None])[0]            # (2B, 2B)
        s = z @ z.T
        positive = torch.arange(2 * B).roll(B)
        s_pos, tau_pos = s[torch.arange(2 * B), positive], tau[torch.arange(2 * B), positive]
        excluded = torch.eye(2 * B, dtype=torch.bool) | torch.eye(2 * B, dtype=torch.bool).roll(B, 1)
        hardest = s.masked_fill(excluded, float("-inf")).topk(min(TOPK, 2 * B - 2), -1).indices
        tau_neg = tau.gather(1, hardest)
    at_min = lambda t: float((t <= tau_min * 1.01).double().mean())     # noqa: E731 (within 1%, as the trainer)
    return {"form": form, "tau_min": tau_min, "setting": kwargs, "loss": float(loss.detach()),
            "tau_pos": [float(tau_pos.quantile(q)) for q in (0.1, 0.5, 0.9)], "pos_at_min": at_min(tau_pos),
            "tau_neg_p50": float(tau_neg.median()), "neg_at_min": at_min(tau_neg),
            "rank_corr": float(spearman(s_pos[None], tau_pos[None])[0])}


def line(r: dict) -> str:
    setting = ", ".join(f"{'d' if k == 'nll_dim' else k}={v:g}" for k, v in r["setting"].items())
    p10, p50, p90 = r["tau_pos"]
    return (f"{r['form']:6s} tau_min={r['tau_min']:<6g} {setting:10s} loss {r['loss']:12.3f} | tau+ median {p50:.3f} "
            f"p10-p90 [{p10:.3f}, {p90:.3f}], {r['pos_at_min']:4.0%} at tau_min | tau- median {r['tau_neg_p50']:.3f}, "
            f"{r['neg_at_min']:4.0%} at tau_min | rank corr(s+, tau+) {r['rank_corr']:+.2f}")


@cli
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.studies.phi_probe", description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=400, help="Adam steps of phi per setting")
    ap.add_argument("--batch", type=int, default=256, help="images B (2B views)")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.batch < TOPK // 2 + 2:
        raise UserError(f"--steps must be >= 1 and --batch >= {TOPK // 2 + 2} (2B - 2 >= the {TOPK} negatives kept)")
    torch.set_num_threads(1)
    za, zb = views(args.batch)
    print(f"# phi alone on fixed embeddings: B={args.batch}, D={DIM}, top-{TOPK} negatives, tau_max={TAU_MAX:g}, "
          f"{args.steps} Adam steps (lr 1e-3)")
    for form, tau_min, kwargs in SETTINGS:
        print(line(probe(form, tau_min, za, zb, args.steps, **kwargs)), flush=True)
    return 0


if __name__ == "__main__":
    main()

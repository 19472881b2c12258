"""SimSiam's symmetric negative cosine with stop-gradient on the projections, summed over heads, and its multi-crop
form (every view against the other global views' projections)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ffcv_amcl.errors import UserError
from ffcv_amcl.losses import checks
from ffcv_amcl.losses.precision import full_precision, wide


def stopgrad_cosines(pa: torch.Tensor, pb: torch.Tensor, za: torch.Tensor, zb: torch.Tensor):
    """(cos(pa, sg zb), cos(pb, sg za)), each (C, B), in float32 at least: what SimSiam and BYOL both regress."""
    pa, pb = wide(pa), wide(pb)
    ca = F.cosine_similarity(pa, wide(zb).detach().to(pa.dtype), dim=-1)
    cb = F.cosine_similarity(pb, wide(za).detach().to(pb.dtype), dim=-1)
    return ca, cb


def negative_cosine(pa: torch.Tensor, pb: torch.Tensor, za: torch.Tensor, zb: torch.Tensor, *,
                    validate: bool = True) -> torch.Tensor:
    """Per head mean_b( -1/2 cos(pa, sg zb) - 1/2 cos(pb, sg za) ), summed over heads; all (C, B, D)."""
    checks.inputs("negative_cosine", validate, pa=pa, pb=pb, za=za, zb=zb)
    with full_precision(pa):
        ca, cb = stopgrad_cosines(pa, pb, za, zb)
        return (-0.5 * ca - 0.5 * cb).mean(-1).sum()


def cross_view_cosines(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(C, P) batch means of cos(p_v, sg t_g) over the P pairs of a global view g and another view v: p (C, V, B, D)
    predictions of every view (the G global views first), t (C, G, B, D) the global views' targets (multi-crop)."""
    G, V = t.shape[1], p.shape[1]
    if p.dim() != 4 or t.dim() != 4 or p.shape[0] != t.shape[0] or p.shape[2:] != t.shape[2:] or not 2 <= G <= V:
        raise UserError(f"cross-view loss: predictions {tuple(p.shape)} and targets {tuple(t.shape)} must be "
                        f"(C, V, B, D) and (C, G, B, D) with 2 <= G <= V")
    pw = F.normalize(wide(p), dim=-1)
    tw = F.normalize(wide(t).detach().to(pw.dtype), dim=-1)
    cos = torch.einsum("cgbd,cvbd->cgv", tw, pw) / p.shape[2]
    return cos[:, ~torch.eye(G, V, dtype=torch.bool, device=cos.device)]


def multi_view_negative_cosine(p: torch.Tensor, t: torch.Tensor, *, validate: bool = True) -> torch.Tensor:
    """SimSiam with multi-crop: every view's prediction regresses every other global view's sg target; per head
    the mean over those pairs of -mean_b cos, summed over heads. With the two global views only: negative_cosine."""
    if validate:
        checks.finite("multi_view_negative_cosine", {"p": p, "t": t})
    with full_precision(p):
        return -cross_view_cosines(p, t).mean(-1).sum()

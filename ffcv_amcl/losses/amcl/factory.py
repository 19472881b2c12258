"""The one place an AMCL loss is built from a run's config, for every method: the method names its kind."""
from __future__ import annotations

from ffcv_amcl.losses.amcl.barlow_twins import AMCLBarlowTwins
from ffcv_amcl.losses.amcl.base import AMCLLoss
from ffcv_amcl.losses.amcl.contrastive import AMCLContrastive
from ffcv_amcl.losses.amcl.siamese import AMCLSimSiam

# contrastive: SimCLR, MoCo (MoCHi, ASCL); siamese: SimSiam, BYOL; barlow: Barlow Twins
LOSSES: dict[str, type[AMCLLoss]] = {"contrastive": AMCLContrastive, "siamese": AMCLSimSiam,
                                     "barlow": AMCLBarlowTwins}


def forms_of(kind: str) -> tuple[str, ...]:
    """The forms the AMCL loss of this kind has (forms.py declares them)."""
    return tuple(LOSSES[kind].FORMS)


def build_amcl_loss(cfg, kind: str, *, batch_size: int) -> AMCLLoss:
    """The AMCL loss of `kind` with the config's heads, projection size and loss.* settings; batch_size: the
    global batch (Barlow Twins' phi_b reads channel vectors of that length). The input checks stay on
    (shapes, free); the non-finite check is the trainer's."""
    if kind not in LOSSES:
        raise ValueError(f"unknown AMCL loss kind {kind!r}; one of {', '.join(LOSSES)}")
    m, l = cfg.model, cfg.loss
    own = {"contrastive": {"topk": l.topk}, "siamese": {},
           "barlow": {"batch_size": batch_size, "lambd": l.barlow_lambda}}[kind]
    return LOSSES[kind](m.proj_dim, m.heads, beta=l.beta, tau_min=l.tau_min, tau_max=l.tau_max, hidden=l.tau_hidden,
                        form=l.amcl_form, nll_dim=l.nll_dim, validate=False, **own)

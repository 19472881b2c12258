"""AMCL: multi-head losses with a learned temperature per pair (docs/amcl.md gives the formulation).

    forms.py         the forms (ref, hetero, post) as pure functions, and which loss kind has which
    candidates.py    each anchor's positive and top-k negatives, all heads batched (SimCLR, MoCo, ASCL)
    base.py          what every AMCL loss shares: settings checked at construction, pair temperatures, records
    contrastive.py   AMCLContrastive: SimCLR, MoCo (+ MoCHi's negatives), ASCL's soft targets
    siamese.py       AMCLSimSiam: SimSiam and BYOL
    barlow_twins.py  AMCLBarlowTwins
    factory.py       build_amcl_loss: the loss a run's config describes, for every method

phi, Omega and the division by tau run in float32 with autocast off (1/tau reaches 1/tau_min = 1e5).
"""
from ffcv_amcl.losses.amcl.barlow_twins import AMCLBarlowTwins
from ffcv_amcl.losses.amcl.base import AMCLLoss
from ffcv_amcl.losses.amcl.contrastive import AMCLContrastive
from ffcv_amcl.losses.amcl.factory import LOSSES, build_amcl_loss, forms_of
from ffcv_amcl.losses.amcl.forms import DEFAULT_FORM, FORM_TAU_MIN, FORMS
from ffcv_amcl.losses.amcl.siamese import AMCLSimSiam

__all__ = ["AMCLLoss", "AMCLContrastive", "AMCLSimSiam", "AMCLBarlowTwins", "LOSSES", "build_amcl_loss",
           "forms_of", "FORMS", "FORM_TAU_MIN", "DEFAULT_FORM"]

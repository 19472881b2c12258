"""build_amcl_loss: the one place an AMCL loss is built from a run's config, for every method; the forms each
kind of loss has, declared once and read by the methods' checks."""
from __future__ import annotations

import pytest
import torch

from ffcv_amcl.config import parse_config
from ffcv_amcl.errors import UserError
from ffcv_amcl.losses.amcl import (FORMS, LOSSES, AMCLBarlowTwins, AMCLContrastive, AMCLSimSiam, build_amcl_loss,
                                   forms_of)
from ffcv_amcl.losses.amcl import forms as form_tables
from ffcv_amcl.model.ssl import METHODS, build_model

KIND = {"simclr": AMCLContrastive, "moco": AMCLContrastive, "simsiam": AMCLSimSiam, "byol": AMCLSimSiam,
        "barlow_twins": AMCLBarlowTwins}
SETTINGS = ["--loss.beta=0.03", "--loss.topk=7", "--loss.tau_min=0.04", "--loss.tau_max=1.5", "--loss.tau_hidden=9",
            "--loss.nll_dim=3.0", "--loss.barlow_lambda=0.2", "--loss.amcl_form=ref"]


def cfg(method, *extra):
    return parse_config(["--data.train_dataset=x", "--model.stem=imagenet", "--training.batch_size=8",
                         f"--model.method={method}", "--model.amcl=1", "--model.heads=2", "--model.proj_dim=16",
                         "--model.proj_hidden=32", "--model.pred_hidden=8", "--loss.queue_size=40", *extra],
                        check_files=False, world_size=1)[0]


@pytest.mark.parametrize("method", sorted(KIND))
def test_every_method_gets_its_loss_from_the_factory_with_the_config_settings(method):
    c = cfg(method, *SETTINGS)
    model = build_model(c)
    loss = model.criterion
    assert type(loss) is KIND[method] and type(loss) is LOSSES[METHODS[method].amcl_kind]
    assert (loss.heads, loss.dim, loss.hidden, loss.form) == (2, 16, 9, "ref")
    assert (loss.beta, loss.tau_min, loss.tau_max, loss.nll_dim) == (0.03, 0.04, 1.5, 3.0)
    assert not loss.validate                           # the trainer checks for non-finite values itself
    if isinstance(loss, AMCLContrastive):
        assert loss.topk == 7
    if isinstance(loss, AMCLBarlowTwins):
        assert (loss.batch_size, loss.lambd) == (8, 0.2)
    built = build_amcl_loss(c, METHODS[method].amcl_kind, batch_size=8)
    assert type(built) is type(loss)
    assert {k: v.shape for k, v in built.state_dict().items()} == {k: v.shape for k, v in loss.state_dict().items()}


def test_amcl_off_builds_no_loss():
    assert all(build_model(cfg(m, "--model.amcl=0")).criterion is None for m in KIND)


def test_forms_are_declared_once_per_kind():
    assert forms_of("contrastive") == tuple(form_tables.CONTRASTIVE) == FORMS
    assert forms_of("siamese") == tuple(form_tables.SIAMESE) == ("ref", "hetero")
    assert forms_of("barlow") == tuple(form_tables.BARLOW) == ("ref", "hetero")
    for kind, loss in LOSSES.items():
        assert tuple(loss.FORMS) == forms_of(kind)
    with pytest.raises(UserError, match="needs negatives"):
        cfg("byol", "--loss.amcl_form=post")           # the method's check reads the same declaration
    with pytest.raises(UserError, match="not one of ref, hetero"):
        AMCLBarlowTwins(8, 2, batch_size=4, form="post")


def test_factory_refuses_an_unknown_kind():
    with pytest.raises(ValueError, match="unknown AMCL loss kind"):
        build_amcl_loss(cfg("simclr"), "triplet", batch_size=8)


def test_default_form_settings_reach_the_loss():
    """Without loss.tau_min the form's own lowest temperature applies (hetero: 0.02)."""
    loss = build_model(cfg("simclr")).criterion
    assert (loss.form, loss.tau_min) == ("hetero", 0.02)
    z = torch.randn(2, 8, 16)
    assert torch.isfinite(loss(z, z + 0.1))

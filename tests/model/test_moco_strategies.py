"""MoCo composes an objective (InfoNCE, AMCL, ASCL, ASCL over AMCL's candidates) and a negatives mixing (none,
MoCHi) chosen at construction. Each composition gives exactly what one combined forward with a path per option
computes from the same pieces (written out below): the same loss, gradients and queue on fixed inputs."""
import copy

import pytest
import torch
import torch.nn.functional as F

from ffcv_amcl.losses import ascl_loss, info_nce_queue, mix_hard_negatives
from ffcv_amcl.model.methods import moco_strategies as strategies
from ffcv_amcl.model.ssl import build_model

from .test_ssl import cfg, views

CASES = {
    "moco": (["--model.amcl=0"], strategies.InfoNCE, strategies.NoMixing),
    "moco-amcl": (["--model.amcl=1"], strategies.AMCLQueue, strategies.NoMixing),
    "moco-amcl-ref": (["--model.amcl=1", "--loss.amcl_form=ref"], strategies.AMCLQueue, strategies.NoMixing),
    "mochi": (["--model.amcl=0", "--loss.mochi_n_hard=8"], strategies.InfoNCE, strategies.HardNegativeMixing),
    "mochi-amcl": (["--model.amcl=1", "--loss.mochi_n_hard=8", "--loss.mochi_s1=3", "--loss.mochi_s2=2"],
                   strategies.AMCLQueue, strategies.HardNegativeMixing),
    "mochi-warmup": (["--model.amcl=1", "--loss.mochi_n_hard=8", "--loss.mochi_start=2"], strategies.AMCLQueue,
                     strategies.HardNegativeMixing),
    "ascl": (["--model.amcl=0", "--loss.ascl=1"], strategies.SoftTargets, strategies.NoMixing),
    "ascl-amcl": (["--model.amcl=1", "--loss.ascl=1", "--loss.topk=8", "--loss.amcl_form=post",
                   "--loss.ascl_variant=ahcl"], strategies.AMCLSoftTargets, strategies.NoMixing),
}


def combined_forward(model, l, view_a, view_b):
    """MoCo, MoCHi and ASCL in one forward with a path per option, from the model's encoders and the losses."""
    B = view_a.shape[0]
    queue = model.queue.clone()

    def embed(x):
        return model.projector(model.backbone(x))

    def keys(x):
        with torch.no_grad():
            return F.normalize(model.key_projector(model.key_backbone(x)).float(), dim=-1)

    if l.ascl:
        q, kb = embed(view_a), keys(view_b)
        if model.amcl:
            loss = model.criterion.forward_soft(q, kb, queue, K=l.ascl_k, t2=l.ascl_t2, variant=l.ascl_variant)
        else:
            loss = ascl_loss(q, kb, queue, K=l.ascl_k, t1=l.ascl_t1, t2=l.ascl_t2, variant=l.ascl_variant)
        model._enqueue(kb)
        return loss
    x = torch.cat([view_a, view_b])
    q, k = embed(x), keys(x)
    mix = None
    if l.mochi_n_hard > 0 and model.epoch >= l.mochi_start:
        g = torch.Generator().manual_seed((model.seed * 1_000_003 + model.step) * 131)
        mix = mix_hard_negatives(q.detach(), queue, l.mochi_n_hard, l.mochi_s1, l.mochi_s2, generator=g)
    if model.amcl:
        loss = model.criterion(q[:, :B], q[:, B:], queue, keys=(k[:, :B], k[:, B:]), extra_negatives=mix)
    else:
        ea, eb = (None, None) if mix is None else (mix[:, :B], mix[:, B:])
        loss = 0.5 * (info_nce_queue(q[:, :B], k[:, B:], queue, l.temperature, extra_negatives=ea)
                      + info_nce_queue(q[:, B:], k[:, :B], queue, l.temperature, extra_negatives=eb))
    model._enqueue(k)
    return loss


@pytest.mark.parametrize("case", sorted(CASES))
def test_composed_moco_equals_the_combined_forward(case):
    args, objective, mixing = CASES[case]
    c = cfg("--model.method=moco", "--model.heads=2", *args)
    torch.manual_seed(0)
    model = build_model(c)
    assert type(model.objective) is objective and type(model.mixing) is mixing
    twin = copy.deepcopy(model)
    assert twin.objective is not model.objective
    if isinstance(twin.objective, (strategies.AMCLQueue, strategies.AMCLSoftTargets)):
        assert twin.objective.criterion is twin.criterion      # a copy composes its own loss module
    for m in (model, twin):
        m.set_progress(step=3, total_steps=10, epoch=1)
    for step, (a, b) in enumerate([views(seed=1), views(seed=2)]):
        new = model(a, b).loss
        old = combined_forward(twin, c.loss, a, b)
        assert torch.equal(new, old), (case, step, new.item(), old.item())
        new.backward()
        old.backward()
        for (name, p), q in zip(model.named_parameters(), twin.parameters()):
            assert (p.grad is None) == (q.grad is None) and (p.grad is None or torch.equal(p.grad, q.grad)), name
        assert torch.equal(model.queue, twin.queue) and torch.equal(model.queue_ptr, twin.queue_ptr)


def test_mixing_waits_for_its_first_epoch_and_is_seeded_by_step():
    c = cfg("--model.method=moco", "--model.heads=2", "--loss.mochi_n_hard=8", "--loss.mochi_start=1")
    mixing = strategies.negatives_mixing(c.loss, seed=5)
    q, queue = F.normalize(torch.randn(2, 6, 16), dim=-1), F.normalize(torch.randn(2, 40, 16), dim=-1)
    assert mixing(q, queue, step=4, epoch=0) is None
    first, again = mixing(q, queue, step=4, epoch=1), mixing(q, queue, step=4, epoch=1)
    assert first.shape == (2, 6, c.loss.mochi_s1 + c.loss.mochi_s2, 16) and torch.equal(first, again)
    assert not torch.equal(first, mixing(q, queue, step=5, epoch=1))
    assert strategies.negatives_mixing(cfg("--model.method=moco").loss, seed=5)(q, queue, step=4, epoch=1) is None

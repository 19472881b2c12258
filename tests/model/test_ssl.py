"""The per-method models: what flows where (gradients, EMA updates, queues), independent of the data path."""
import math

import pytest
import torch
import torch.nn.functional as F

from ffcv_amcl.config import parse_config
from ffcv_amcl.errors import UserError
from ffcv_amcl.model.ssl import METHODS, build_model


def cfg(*args):
    return parse_config(["--data.train_dataset=x", "--model.stem=imagenet", "--training.batch_size=8",
                         "--model.proj_dim=16", "--model.proj_hidden=32", "--model.pred_hidden=8",
                         "--loss.queue_size=40", *args], check_files=False, world_size=1)[0]


def views(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 3, 32, 32, generator=g).contiguous(memory_format=torch.channels_last),
            torch.randn(n, 3, 32, 32, generator=g).contiguous(memory_format=torch.channels_last))


WITH_AMCL = [(m, a) for m in sorted(METHODS) for a in (0, 1) if not a or METHODS[m].amcl_kind is not None]


@pytest.mark.parametrize("method,amcl", WITH_AMCL)
def test_each_method_returns_a_scalar_loss_head_stats_and_its_projections(method, amcl):
    torch.manual_seed(0)
    heads = 1 if method == "dino" else 2      # DINO's one head: see test_dino_teacher_is_an_ema...
    model = build_model(cfg(f"--model.method={method}", f"--model.amcl={amcl}", f"--model.heads={heads}"))
    out = model(*views()); loss, stats = out.loss, out.stats
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert set(stats) == ({"tau_pos", "tau_neg"} if amcl else set())
    for v in stats.values():
        assert v.shape == (2,) and not v.requires_grad
    with torch.no_grad():                      # the online projections of [views a; views b], as the monitors read
        expected = model.project(torch.cat(views()))
    assert out.projections.shape == expected.shape == (heads, 16, expected.shape[-1])
    assert not out.projections.requires_grad
    assert torch.allclose(out.projections, expected, atol=1e-5)


def test_byol_target_gets_no_gradient_and_follows_the_cosine_momentum():
    torch.manual_seed(0)
    model = build_model(cfg("--model.method=byol", "--model.amcl=0", "--model.heads=1", "--loss.momentum=0.9"))
    loss = model(*views()).loss
    loss.backward()
    target = list(model.target_backbone.parameters()) + list(model.target_projector.parameters())
    assert all(p.grad is None and not p.requires_grad for p in target)
    assert any(p.grad is not None for p in model.backbone.parameters())
    before_t = [p.detach().clone() for p in model.target_backbone.parameters()]
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(1.0)
    model.set_progress(step=25, total_steps=100, epoch=0)
    m = 1 - (1 - 0.9) * (math.cos(math.pi * 0.25) + 1) / 2
    assert model.current_momentum() == pytest.approx(m)
    model.momentum_update()
    for t, t0, o in zip(model.target_backbone.parameters(), before_t, model.backbone.parameters()):
        torch.testing.assert_close(t, m * t0 + (1 - m) * o.detach())
    model.set_progress(step=100, total_steps=100, epoch=0)
    assert model.current_momentum() == pytest.approx(1.0)


def test_moco_queue_is_a_ring_of_normalised_keys():
    torch.manual_seed(0)
    model = build_model(cfg("--model.method=moco", "--model.amcl=1", "--model.heads=2"))  # queue 40, 16 keys/step
    a, b = views()
    model(a, b)
    assert int(model.queue_ptr) == 16
    with torch.no_grad():
        keys = F.normalize(model.key_projector(model.key_backbone(torch.cat([a, b]))), dim=-1)
    torch.testing.assert_close(model.queue[:, :16], keys, atol=1e-5, rtol=1e-5)
    for _ in range(2):
        model(a, b)
    assert int(model.queue_ptr) == 48 % 40                     # wrapped around
    torch.testing.assert_close(model.queue.norm(dim=-1), torch.ones(2, 40), atol=1e-5, rtol=0)
    assert not model.queue.requires_grad
    assert all(not p.requires_grad for p in model.key_backbone.parameters())


def test_moco_key_encoder_is_an_ema_of_the_query_encoder():
    torch.manual_seed(0)
    model = build_model(cfg("--model.method=moco", "--loss.momentum=0.99"))
    for k, q in zip(model.key_backbone.parameters(), model.backbone.parameters()):
        assert torch.equal(k, q)                               # starts as a copy
    with torch.no_grad():
        for q in model.backbone.parameters():
            q.mul_(2)
    model.momentum_update()
    for k, q in zip(model.key_backbone.parameters(), model.backbone.parameters()):
        torch.testing.assert_close(k, 0.99 * q / 2 + 0.01 * q)


def test_simclr_single_head_classic_loss_is_nt_xent_of_the_projections():
    from ffcv_amcl.losses import nt_xent

    torch.manual_seed(0)
    model = build_model(cfg("--model.method=simclr", "--model.amcl=0", "--model.heads=1", "--loss.temperature=0.2"))
    a, b = views()
    loss = model(a, b).loss
    z = model.projector(model.backbone(torch.cat([a, b])))
    torch.testing.assert_close(loss, nt_xent(z[:, :8], z[:, 8:], 0.2))


def test_fp64_reference_models():
    model = build_model(cfg("--training.precision=fp64"))
    assert all(p.dtype == torch.float64 for p in model.parameters()) and model.input_dtype == torch.float64
    assert model.features(views()[0]).dtype == torch.float64


def test_moco_composes_ascl_with_amcl():
    """ASCL's soft targets over AMCL's candidates (hetero form): a finite loss, temperatures recorded, phi and the
    query encoder get gradients, the key encoder none; the queue takes the keys of view b only."""
    torch.manual_seed(0)
    model = build_model(cfg("--model.method=moco", "--model.amcl=1", "--model.heads=2", "--loss.ascl=1",
                            "--loss.amcl_form=hetero", "--loss.ascl_variant=ahcl", "--loss.topk=8"))
    out = model(*views()); loss, stats = out.loss, out.stats
    loss.backward()
    assert torch.isfinite(loss) and set(stats) == {"tau_pos", "tau_neg"}
    assert all(p.grad is not None for p in model.criterion.phi.parameters())
    assert any(p.grad is not None for p in model.backbone.parameters())
    assert all(p.grad is None for p in model.key_backbone.parameters())
    assert int(model.queue_ptr) == 8


def test_vicreg_loss_is_that_of_its_expander_outputs_and_refuses_amcl():
    from ffcv_amcl.losses import vicreg_loss

    torch.manual_seed(0)
    model = build_model(cfg("--model.method=vicreg", "--model.amcl=0", "--model.heads=2", "--loss.vicreg_cov=2"))
    assert len(model.projector.hidden) == 2                     # three linear layers, as in the paper
    a, b = views()
    loss = model(a, b).loss
    z = model.projector(model.backbone(torch.cat([a, b])))
    torch.testing.assert_close(loss, vicreg_loss(z[:, :8], z[:, 8:], cov_weight=2.0))
    with pytest.raises(UserError, match="VICReg has no AMCL form"):
        cfg("--model.method=vicreg", "--model.amcl=1")


def dino(*args):
    return build_model(cfg("--model.method=dino", "--model.amcl=0", "--model.heads=1", "--model.pred_hidden=8",
                           "--loss.dino_center_momentum=0.5", *args))


def local_views(n=8, crops=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(crops * n, 3, 16, 16, generator=g).contiguous(memory_format=torch.channels_last)


def test_dino_student_sees_every_view_the_teacher_the_global_ones():
    """The loss is dino_loss of the student's outputs of the 2 + N views (locals as one batch, local-view-major)
    against the teacher's of the 2 global views; the centre moves to the teacher's batch mean; the teacher gets no
    gradient; the last layer none in the first epoch, some after."""
    from ffcv_amcl.losses import dino_loss

    torch.manual_seed(0)
    model = dino("--loss.dino_warmup_epochs=2", "--loss.dino_warmup_teacher_temp=0.02",
                 "--loss.dino_teacher_temp=0.06")
    a, b = views()
    loc = local_views()
    with torch.no_grad():
        student = torch.cat([model.project(torch.cat([a, b]))[0].view(2, 8, -1),
                             model.project(loc)[0].view(3, 8, -1)])
        teacher = model.project(torch.cat([a, b]), target=True)[0].view(2, 8, -1)
    model.set_progress(step=0, total_steps=10, epoch=1)
    loss = model(a, b, local_views=loc).loss
    torch.testing.assert_close(loss, dino_loss(student, teacher, torch.zeros(16), teacher_temp=0.04))
    torch.testing.assert_close(model.center, 0.5 * teacher.mean((0, 1)))
    loss.backward()
    assert all(p.grad is None for p in model.teacher_backbone.parameters())
    assert model.projector.last.grad.abs().sum() > 0
    model.zero_grad()
    model.set_progress(step=0, total_steps=10, epoch=0)
    model(a, b).loss.backward()
    assert not model.projector.last.grad.any() and model.projector.mlp[0].weight.grad.abs().sum() > 0


def test_dino_teacher_is_an_ema_on_the_cosine_schedule_and_settings_are_checked():
    model = dino("--loss.momentum=0.9")
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.teacher_backbone.parameters()]
    model.set_progress(step=5, total_steps=10, epoch=0)     # halfway: m = 1 - 0.1 / 2
    model.momentum_update()
    for t, o, b in zip(model.teacher_backbone.parameters(), model.backbone.parameters(), before):
        torch.testing.assert_close(t, 0.95 * b + 0.05 * o)
    with pytest.raises(UserError, match="DINO trains one head"):
        cfg("--model.method=dino", "--model.amcl=0", "--model.heads=2")
    with pytest.raises(UserError, match="no AMCL form"):
        cfg("--model.method=dino", "--model.amcl=1", "--model.heads=1")


def test_simclr_with_local_views_is_the_multi_positive_nt_xent_of_all_views():
    from ffcv_amcl.losses import multi_positive_nt_xent

    torch.manual_seed(0)
    model = build_model(cfg("--model.method=simclr", "--model.amcl=0", "--model.heads=2", "--loss.temperature=0.2"))
    (a, b), loc = views(), local_views()
    out = model(a, b, local_views=loc)
    with torch.no_grad():
        z = model.project(torch.cat([a, b])).view(2, 2, 8, -1)
        zl = model.project(loc).view(2, 3, 8, -1)
    torch.testing.assert_close(out.loss.detach(), multi_positive_nt_xent(torch.cat([z, zl], 1), 0.2))
    assert out.features.shape == (8 * 2, model.feature_dim)            # the online probe reads the global views
    out.loss.backward()


@pytest.mark.parametrize("method,amcl,needle", [("simclr", 1, "AMCL's contrastive forms pair each anchor"),
                                                ("vicreg", 0, "vicreg's loss compares two views"),
                                                ("simsiam", 1, "AMCL's siamese form tempers"),
                                                ("byol", 1, "AMCL's siamese form tempers"),
                                                ("barlow_twins", 0, "barlow_twins's loss compares two views"),
                                                ("moco", 1, "MoCo's local queries join its InfoNCE"),
                                                ("simclr", 0, None), ("dino", 0, None), ("byol", 0, None),
                                                ("moco", 0, None)])
def test_local_crops_are_refused_where_a_method_cannot_use_them(method, amcl, needle):
    c = cfg(f"--model.method={method}", f"--model.amcl={amcl}", "--model.heads=1")
    c.data.local_crops = 4
    if needle is None:
        METHODS[method].check_config(c, 1)
        return
    with pytest.raises(UserError, match=needle):
        METHODS[method].check_config(c, 1)


@pytest.mark.parametrize("method", ["simsiam", "byol"])
def test_siamese_methods_predict_the_global_targets_from_every_view(method):
    """Local views' predictions join the loss (multi_view_* of all predictions against the global views'
    targets: the online projections for SimSiam, the momentum target's for BYOL)."""
    from ffcv_amcl.losses import multi_view_byol_loss, multi_view_negative_cosine

    torch.manual_seed(0)
    model = build_model(cfg(f"--model.method={method}", "--model.amcl=0", "--model.heads=2"))
    (a, b), loc = views(), local_views()
    out = model(a, b, local_views=loc)
    with torch.no_grad():
        x = torch.cat([a, b])
        p = torch.cat([model.predictor(model.project(x)).view(2, 2, 8, -1),
                       model.predictor(model.project(loc)).view(2, 3, 8, -1)], 1)
        t = model.project(x, target=method == "byol").view(2, 2, 8, -1)
    loss = multi_view_byol_loss if method == "byol" else multi_view_negative_cosine
    torch.testing.assert_close(out.loss.detach(), loss(p, t))


def test_moco_local_queries_meet_both_global_keys_and_are_not_enqueued():
    from ffcv_amcl.losses import info_nce_queue

    torch.manual_seed(0)
    model = build_model(cfg("--model.method=moco", "--model.amcl=0", "--model.heads=2", "--loss.temperature=0.2"))
    (a, b), loc = views(), local_views(crops=2)
    queue = model.queue.clone()
    loss = model(a, b, local_views=loc).loss
    with torch.no_grad():
        # batches as the model forms them (BatchNorm): the global views together, the local views together
        q = [*model.project(torch.cat([a, b])).split(8, 1), *model.project(loc).split(8, 1)]
        k = F.normalize(model.project(torch.cat([a, b]), target=True), dim=-1).split(8, 1)
    terms = [info_nce_queue(q[0], k[1], queue, 0.2), info_nce_queue(q[1], k[0], queue, 0.2)]
    terms += [info_nce_queue(ql, kg, queue, 0.2) for ql in q[2:] for kg in k]
    torch.testing.assert_close(loss.detach(), sum(terms) / 6)
    assert int(model.queue_ptr) == 16                                  # the global views' keys only

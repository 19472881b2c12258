"""The candidate selection every contrastive AMCL form reads (losses/amcl/candidates.py) against a float64 loop:
each anchor's positive, its k most similar candidates in descending order, and phi's pair logits, one vector and
one pair at a time."""
from __future__ import annotations

import pytest
import torch

from ffcv_amcl.losses.amcl import candidates
from ffcv_amcl.losses.temperature import make_phi

from . import reference as ref


def randn(gen, *shape):
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def spread_phi(dim, hidden=6, seed=0):
    torch.manual_seed(seed)
    phi = make_phi(dim, hidden).double()
    with torch.no_grad():
        for p in phi.parameters():
            p.mul_(2.0)
    return phi


@torch.no_grad()
def loop_select(params, anchors, positives, negatives, topk):
    """Per head and anchor (lists of unit vectors): (s+, a+, [s_n], [a_n], chosen negatives) with the chosen
    negatives sorted by similarity, most similar first; a = <phi(u), phi(v)> evaluated pair by pair."""
    out = []
    for anchor, positive, negs in zip(anchors, positives, negatives):
        order = sorted(range(len(negs)), key=lambda j: float((anchor * negs[j]).sum()), reverse=True)
        chosen = [negs[j] for j in order[:min(topk, len(negs))]]
        s_neg = [float((anchor * n).sum()) for n in chosen]
        a_neg = [float((ref.phi(params, anchor) * ref.phi(params, n)).sum()) for n in chosen]
        out.append((float((anchor * positive).sum()), float((ref.phi(params, anchor) * ref.phi(params, positive)).sum()),
                    s_neg, a_neg, chosen))
    return out


def assert_head(got: candidates.Candidates, c, expect):
    for i, (s_pos, a_pos, s_neg, a_neg, _) in enumerate(expect):
        assert got.s_pos[c, i].item() == pytest.approx(s_pos, rel=1e-10, abs=1e-12)
        assert got.a_pos[c, i].item() == pytest.approx(a_pos, rel=1e-10, abs=1e-12)
        torch.testing.assert_close(got.s_neg[c, i], torch.tensor(s_neg, dtype=torch.float64), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(got.a_neg[c, i], torch.tensor(a_neg, dtype=torch.float64), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("topk", [3, 50])          # 50 > the 2B - 2 = 6 candidates
def test_in_batch_candidates_are_the_other_views(topk):
    gen = torch.Generator().manual_seed(topk)
    C, B, D = 2, 4, 5
    phi = spread_phi(D)
    params = ref.phi_params(phi)
    views = randn(gen, C, 2 * B, D) * 3.0                     # any scale: normalised inside
    got = candidates.select(phi, views, topk)
    assert got.s_neg.shape == (C, 2 * B, min(topk, 2 * B - 2)) and got.s_key is None
    for c in range(C):
        u = [ref.unit(views[c, i]) for i in range(2 * B)]
        negatives = [[u[j] for j in range(2 * B) if j not in (i, (i + B) % (2 * B))] for i in range(2 * B)]
        assert_head(got, c, loop_select(params, u, [u[(i + B) % (2 * B)] for i in range(2 * B)], negatives, topk))


def test_queue_candidates_with_keys_extra_negatives_and_key_similarities():
    """Positives are the given keys, candidates each head's queue plus the anchor's own extra negatives; the key
    similarities are those of each positive with the anchor's chosen candidates."""
    gen = torch.Generator().manual_seed(1)
    C, N, D, K, S, topk = 2, 3, 4, 5, 2, 4
    phi = spread_phi(D, seed=1)
    params = ref.phi_params(phi)
    anchors, keys = randn(gen, C, N, D), randn(gen, C, N, D)
    queue, extra = randn(gen, C, K, D), randn(gen, C, N, S, D)
    got = candidates.select(phi, anchors, topk, positives=keys, negatives=queue, extra=extra)
    for c in range(C):
        u = [ref.unit(anchors[c, i]) for i in range(N)]
        pos = [ref.unit(keys[c, i]) for i in range(N)]
        negs = [[ref.unit(queue[c, j]) for j in range(K)] + [ref.unit(extra[c, i, s]) for s in range(S)]
                for i in range(N)]
        assert_head(got, c, loop_select(params, u, pos, negs, topk))
    soft = candidates.select(phi, anchors, topk, positives=keys, negatives=queue, key_similarities=True)
    for c in range(C):
        u, pos = [ref.unit(anchors[c, i]) for i in range(N)], [ref.unit(keys[c, i]) for i in range(N)]
        negs = [ref.unit(queue[c, j]) for j in range(K)]
        for i, (*_, chosen) in enumerate(loop_select(params, u, pos, [negs] * N, topk)):
            expect = torch.stack([(pos[i] * n).sum() for n in chosen])
            torch.testing.assert_close(soft.s_key[c, i], expect, rtol=1e-10, atol=1e-12)
    assert not soft.s_key.requires_grad


def test_gradient_flows_through_anchors_and_phi_input_only():
    """Queue, keys and extra negatives are detached; phi_input decides what phi's pair logits send back."""
    gen = torch.Generator().manual_seed(2)
    C, N, D = 2, 3, 4
    phi = spread_phi(D, seed=2)
    anchors, keys, queue = (randn(gen, C, N, D).requires_grad_() for _ in range(3))
    got = candidates.select(phi, anchors, 2, positives=keys, negatives=queue)
    total = sum(t.sum() for t in got[:4])
    g_anchor, g_keys, g_queue = torch.autograd.grad(total, [anchors, keys, queue], allow_unused=True)
    assert g_anchor.abs().sum() > 0 and g_keys is None and g_queue is None
    detached = candidates.select(phi, anchors, 2, negatives=queue, phi_input=torch.Tensor.detach)
    grad_a, = torch.autograd.grad(detached.a_pos.sum() + detached.a_neg.sum(), [anchors], allow_unused=True)
    assert grad_a is None                                      # phi read detached vectors: no path to the anchors


def test_pick_matches_gather_and_keeps_only_the_index():
    gen = torch.Generator().manual_seed(3)
    x = randn(gen, 2, 5, 9).requires_grad_()
    index = torch.stack([torch.randperm(9, generator=gen)[:4] for _ in range(10)]).view(2, 5, 4)
    weights = randn(gen, 2, 5, 4)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t, lambda t: t):
        picked = candidates.pick(x, index)
    assert torch.equal(picked, x.gather(-1, index)) and saved == [index.shape]
    got, = torch.autograd.grad((picked * weights).sum(), [x])
    expect, = torch.autograd.grad((x.gather(-1, index) * weights).sum(), [x])
    assert torch.equal(got, expect)


@pytest.mark.parametrize("queue", [False, True])
def test_no_matrix_of_all_pairs_is_kept_for_the_backward(queue):
    """The (C, N, N) (or (C, N, K)) similarity and logit matrices are freed once their top-k entries are picked:
    nothing the backward keeps is larger than the stacked vectors or phi's activations, (2C, max(N, K), H)."""
    C, N, D, K, topk, H = 2, 64, 8, 96, 5, 16
    phi = make_phi(D, H)
    anchors = torch.randn(C, N, D, requires_grad=True)
    kw = {"positives": torch.randn(C, N, D), "negatives": torch.randn(C, K, D)} if queue else {}
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        got = candidates.select(phi, anchors, topk, **kw)
    assert max(saved) <= 2 * C * max(N, K) * H < C * N * (K if queue else N)
    sum(t.sum() for t in got[:4]).backward()
    assert anchors.grad.abs().sum() > 0

"""MoCHi's synthetic negatives: unit norm, built only from the query's hardest negatives, type-2 mixes between
the query and one hard negative, detached, reproducible, and the queue left untouched."""
from __future__ import annotations

import pytest
import torch

from ffcv_amcl.errors import UserError
from ffcv_amcl.losses.mochi import mix_hard_negatives


def orthonormal_setup(gen, heads, B, K):
    """Queue = K orthonormal vectors of R^(K+1) (random rotation per head); queries with a component outside the
    queue's span, so every synthetic vector's coefficients can be read off exactly."""
    D = K + 1
    rot = torch.linalg.qr(torch.randn(heads, D, D, generator=gen, dtype=torch.float64))[0]   # rows orthonormal
    queue = rot[:, 1:, :]                                                                     # (C, K, D)
    coef = torch.rand(heads, B, D, generator=gen, dtype=torch.float64) * 2 - 1
    coef[..., 0] = 1.0
    q = torch.einsum("cbj,cjd->cbd", coef, rot)
    return q, queue, rot


@pytest.mark.parametrize("heads", [1, 3])
def test_mixes_come_from_the_hard_set(heads):
    gen = torch.Generator().manual_seed(heads)
    B, K, n_hard, s1, s2 = 4, 10, 4, 6, 5
    q, queue, rot = orthonormal_setup(gen, heads, B, K)
    mixed = mix_hard_negatives(q if heads > 1 else q[0], queue if heads > 1 else queue[0], n_hard, s1, s2,
                               generator=torch.Generator().manual_seed(0))
    mixed = mixed if heads > 1 else mixed[None]
    assert mixed.shape == (heads, B, s1 + s2, K + 1)
    assert torch.allclose(mixed.norm(dim=-1), torch.ones((), dtype=mixed.dtype), atol=1e-12)
    qn = q / q.norm(dim=-1, keepdim=True)
    for c in range(heads):
        coords = mixed[c] @ rot[c].T                               # (B, s1+s2, K+1): [outside, queue 0..K-1]
        qc = qn[c] @ rot[c].T
        for b in range(B):
            hard = set(torch.topk(qc[b, 1:], n_hard).indices.tolist())
            for s in range(s1):                                    # type 1: two distinct hard negatives
                x = coords[b, s]
                assert abs(x[0]) < 1e-12
                used = {i for i in range(K) if x[1 + i] > 1e-12}
                assert len(used) in (1, 2) and used <= hard
                assert (x[1:] > -1e-12).all()
            for s in range(s1, s1 + s2):                           # type 2: beta q + (1 - beta) n, beta <= 0.5
                x = coords[b, s]
                c_beta = x[0] / qc[b, 0]
                rest = x[1:] - c_beta * qc[b, 1:]
                used = [i for i in range(K) if abs(rest[i]) > 1e-9]
                assert len(used) == 1 and used[0] in hard and rest[used[0]] > 0
                beta = c_beta / (c_beta + rest[used[0]])
                assert 0 <= beta <= 0.5 + 1e-12


def test_detached_reproducible_and_queue_untouched():
    torch.manual_seed(0)
    q = torch.randn(5, 8, requires_grad=True)
    queue = torch.randn(20, 8)
    before = queue.clone()
    a = mix_hard_negatives(q, queue, 6, 3, 3, generator=torch.Generator().manual_seed(1))
    b = mix_hard_negatives(q, queue, 6, 3, 3, generator=torch.Generator().manual_seed(1))
    c = mix_hard_negatives(q, queue, 6, 3, 3, generator=torch.Generator().manual_seed(2))
    assert not a.requires_grad and torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(queue, before)
    assert mix_hard_negatives(q, queue, 6, 0, 0).shape == (5, 0, 8)
    assert mix_hard_negatives(q, queue, 1, 2, 2).shape == (5, 4, 8)


def test_bad_input():
    q, queue = torch.randn(4, 8), torch.randn(10, 8)
    for args, word in [((q, queue, 11, 2, 2), "larger than the queue"), ((q, queue, 4, -1, 2), "s1"),
                       ((q, queue, 4, 2, -3), "s2"), ((q, queue, 0, 2, 2), "n_hard"),
                       ((q, torch.randn(10, 7), 4, 2, 2), "queue")]:
        with pytest.raises(UserError, match=word) as info:
            mix_hard_negatives(*args)
        assert "\n" not in str(info.value)

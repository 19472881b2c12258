"""NT-Xent against the float64 loop reference; one head equals classic SimCLR summed over heads."""
from __future__ import annotations

import pytest
import torch

from ffcv_amcl.errors import UserError
from ffcv_amcl.losses.ntxent import multi_positive_nt_xent, nt_xent

from . import reference as ref


@pytest.mark.parametrize("heads", [1, 2, 3, 8])
def test_matches_reference(heads):
    gen = torch.Generator().manual_seed(heads)
    za = torch.randn(heads, 4, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    zb = torch.randn(heads, 4, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    got, expect = nt_xent(za, zb, 0.3), ref.nt_xent(za, zb, 0.3)
    assert ref.rel_err(got.detach(), expect.detach()) <= 1e-6
    for a, b in zip(torch.autograd.grad(got, [za, zb]), torch.autograd.grad(expect, [za, zb])):
        assert ref.rel_err(a, b) <= 1e-6


def test_bf16_inputs_give_float32_loss():
    z = torch.randn(2, 8, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = nt_xent(z.bfloat16(), z.bfloat16().flip(1))
    assert value.dtype == torch.float32 and torch.isfinite(value)


def test_bad_input():
    z = torch.randn(2, 4, 8)
    for call, word in [(lambda: nt_xent(z, torch.randn(2, 4, 7)), "shape"),
                       (lambda: nt_xent(z[:, :1], z[:, :1]), "batch size"),
                       (lambda: nt_xent(z, z, temperature=0.0), "temperature"),
                       (lambda: nt_xent(z * float("nan"), z), "non-finite")]:
        with pytest.raises(UserError, match=word) as info:
            call()
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("heads,views", [(1, 3), (2, 5)])
def test_multi_positive_matches_reference(heads, views):
    gen = torch.Generator().manual_seed(views)
    z = torch.randn(heads, views, 3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    got, expect = multi_positive_nt_xent(z, 0.3), ref.multi_positive_nt_xent(z, 0.3)
    assert ref.rel_err(got.detach(), expect.detach()) <= 1e-10
    assert ref.rel_err(torch.autograd.grad(got, z)[0], torch.autograd.grad(expect, z)[0]) <= 1e-10


def test_multi_positive_with_two_views_is_nt_xent():
    gen = torch.Generator().manual_seed(0)
    za, zb = (torch.randn(3, 6, 5, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(2))
    got, expect = multi_positive_nt_xent(torch.stack([za, zb], 1), 0.2), nt_xent(za, zb, 0.2)
    torch.testing.assert_close(got, expect, rtol=1e-13, atol=0)
    for a, b in zip(torch.autograd.grad(got, [za, zb]), torch.autograd.grad(expect, [za, zb])):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)
    with pytest.raises(UserError, match="pass at least 2"):
        multi_positive_nt_xent(za.unsqueeze(1))

"""The per-head pair products, cut into row blocks on several CPU threads, against a float64 loop of dot products."""
from __future__ import annotations

import pytest
import torch

from ffcv_amcl.losses.pairs import pair_products, row_blocks


def loop_products(x, y):
    """out[c, i, j] = sum_d x[c, i, d] y[c, j, d], one dot product at a time."""
    C, M, _ = x.shape
    K = y.shape[1]
    return torch.stack([torch.stack([torch.stack([(x[c, i] * y[c, j]).sum() for j in range(K)])
                                     for i in range(M)]) for c in range(C)])


@pytest.mark.parametrize("threads, heads, rows, blocks", [(1, 3, 6, 1), (2, 3, 6, 2), (2, 4, 6, 1), (3, 2, 6, 3),
                                                         (4, 3, 8, 4), (2, 3, 5, 1),
                                                         (2, 1, 6, 1)], indirect=["threads"])
def test_rows_are_cut_so_that_the_items_divide_among_the_threads(threads, heads, rows, blocks):
    assert row_blocks(heads, rows, torch.device("cpu")) == blocks


@pytest.mark.parametrize("threads", [1, 2, 3], indirect=True)
@pytest.mark.parametrize("heads", [1, 2, 3])
def test_values_and_gradients_are_those_of_the_loop(threads, heads):
    gen = torch.Generator().manual_seed(threads * 10 + heads)
    x = torch.randn(heads, 6, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randn(heads, 5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    g = torch.randn(heads, 6, 5, generator=gen, dtype=torch.float64)
    got, expect = pair_products(x, y), loop_products(x, y)
    torch.testing.assert_close(got, expect, rtol=1e-12, atol=1e-12)
    for a, b in zip(torch.autograd.grad(got, (x, y), g), torch.autograd.grad(expect, (x, y), g)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("threads", [2], indirect=True)
def test_one_input_on_both_sides_gets_both_gradients_and_the_output_is_its_own_tensor(threads):
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(3, 6, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    got = pair_products(z, z)
    assert row_blocks(3, 6, z.device) == 2 and got._base is None and got.is_contiguous()
    expect = loop_products(z, z)
    got.detach().diagonal(dim1=-2, dim2=-1).fill_(0.0)          # what the in-batch top-k does to its alias
    expect = expect - torch.diag_embed(expect.diagonal(dim1=-2, dim2=-1)).detach()
    torch.testing.assert_close(got, expect, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.autograd.grad(got.sum(), z)[0], torch.autograd.grad(expect.sum(), z)[0],
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("threads", [2], indirect=True)
def test_under_autocast_the_product_is_torchs_own(threads):
    x, y = torch.randn(3, 6, 4), torch.randn(3, 5, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert row_blocks(3, 6, x.device) == 1
        got, expect = pair_products(x, y), torch.bmm(x, y.transpose(1, 2))
    assert got.dtype == expect.dtype == torch.bfloat16 and torch.equal(got, expect)

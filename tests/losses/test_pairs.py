"""The per-head pair products against a float64 loop of dot products, on one batched gemm and on one 2-D gemm per
head (the CPU's choice when the heads do not divide among its threads)."""
from __future__ import annotations

import pytest
import torch

from ffcv_amcl.losses.pairs import pair_products, per_head_gemms


def loop_products(x, y):
    """out[c, i, j] = sum_d x[c, i, d] y[c, j, d], one dot product at a time."""
    C, M, _ = x.shape
    K = y.shape[1]
    return torch.stack([torch.stack([torch.stack([(x[c, i] * y[c, j]).sum() for j in range(K)])
                                     for i in range(M)]) for c in range(C)])


@pytest.mark.parametrize("threads, heads, per_head", [(1, 3, False), (2, 3, True), (2, 4, False), (3, 2, True),
                                                      (4, 6, True), (2, 1, False)], indirect=["threads"])
def test_heads_run_one_gemm_each_when_they_do_not_divide_among_the_threads(threads, heads, per_head):
    x = torch.zeros(heads, 4, 2)
    assert per_head_gemms(x, x) is per_head


@pytest.mark.parametrize("threads", [2], indirect=True)
def test_mixed_dtypes_autocast_and_integers_keep_torchs_own_bmm(threads):
    x, y = torch.randn(3, 6, 4), torch.randn(3, 5, 4)
    assert per_head_gemms(x, y) and not per_head_gemms(x, y.double())
    assert not per_head_gemms(x.long(), y.long())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not per_head_gemms(x, y)
        got, expect = pair_products(x, y), torch.bmm(x, y.transpose(1, 2))
    assert got.dtype == expect.dtype == torch.bfloat16 and torch.equal(got, expect)


@pytest.mark.parametrize("threads", [1, 2, 3], indirect=True)
@pytest.mark.parametrize("heads", [1, 2, 3])
@pytest.mark.parametrize("y_grad", [True, False])          # a queue of negatives comes detached
def test_values_and_gradients_are_those_of_the_loop(threads, heads, y_grad):
    gen = torch.Generator().manual_seed(threads * 10 + heads)
    x = torch.randn(heads, 6, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randn(heads, 5, 4, generator=gen, dtype=torch.float64, requires_grad=y_grad)
    g = torch.randn(heads, 6, 5, generator=gen, dtype=torch.float64)
    got, expect = pair_products(x, y), loop_products(x, y)
    torch.testing.assert_close(got, expect, rtol=1e-12, atol=1e-12)
    wrt = (x, y) if y_grad else (x,)
    for a, b in zip(torch.autograd.grad(got, wrt, g), torch.autograd.grad(expect, wrt, g)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("threads", [2], indirect=True)
def test_one_input_on_both_sides_gets_both_gradients_and_the_output_is_its_own_tensor(threads):
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(3, 6, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    got = pair_products(z, z)
    assert per_head_gemms(z, z) and got._base is None and got.is_contiguous()
    expect = loop_products(z, z)
    got.detach().diagonal(dim1=-2, dim2=-1).fill_(0.0)          # what the in-batch top-k does to its alias
    expect = expect - torch.diag_embed(expect.diagonal(dim1=-2, dim2=-1)).detach()
    torch.testing.assert_close(got, expect, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.autograd.grad(got.sum(), z)[0], torch.autograd.grad(expect.sum(), z)[0],
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("threads", [2], indirect=True)
def test_traced_by_torch_compile_as_one_graph(threads):
    x, y = torch.randn(3, 6, 4), torch.randn(3, 5, 4)
    compiled = torch.compile(pair_products, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x, y), torch.bmm(x, y.transpose(1, 2)))

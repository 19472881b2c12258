"""DINO's loss against the float64 loop reference written from the paper: value and gradient."""
from __future__ import annotations

import pytest
import torch

from ffcv_amcl.errors import UserError
from ffcv_amcl.losses.dino import dino_loss

from . import reference as ref


@pytest.mark.parametrize("views,temps", [(2, (0.1, 0.04)), (5, (0.1, 0.07)), (3, (0.5, 1.0))])
def test_matches_reference(views, temps):
    gen = torch.Generator().manual_seed(views)
    student = torch.randn(views, 3, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(2, 3, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    center = 0.3 * torch.randn(6, generator=gen, dtype=torch.float64)
    got = dino_loss(student, teacher, center, student_temp=temps[0], teacher_temp=temps[1])
    expect = ref.dino(student, teacher, center, *temps)
    assert ref.rel_err(got.detach(), expect.detach()) <= 1e-10
    g_student, g_teacher = torch.autograd.grad(got, [student, teacher], allow_unused=True)
    assert ref.rel_err(g_student, torch.autograd.grad(expect, [student])[0]) <= 1e-10
    assert g_teacher is None or not g_teacher.any()                   # the teacher takes no gradient


def test_shapes_that_do_not_fit_are_one_line():
    with pytest.raises(UserError, match="must be \\(V >= 2, B, K\\)"):
        dino_loss(torch.randn(3, 4, 5), torch.randn(2, 4, 6), torch.zeros(6))
    with pytest.raises(UserError, match="teacher_temp=0"):
        dino_loss(torch.randn(3, 4, 5), torch.randn(2, 4, 5), torch.zeros(5), teacher_temp=0)

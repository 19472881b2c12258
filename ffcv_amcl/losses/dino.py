"""DINO's self-distillation loss (Caron et al. 2021): the student's softmax at a fixed temperature matches the
teacher's centred, sharpened softmax of another view, averaged over every (teacher view, other student view) pair."""
from __future__ import annotations

import torch

from ffcv_amcl.errors import UserError
from ffcv_amcl.losses import checks
from ffcv_amcl.losses.precision import full_precision, wide


def dino_loss(student: torch.Tensor, teacher: torch.Tensor, center: torch.Tensor, *, student_temp: float = 0.1,
              teacher_temp: float = 0.04, validate: bool = True) -> torch.Tensor:
    """mean over pairs (g, v), v != g, of mean_b H(softmax((t_g - c) / teacher_temp), softmax(s_v / student_temp)).

    student (V, B, K): head outputs of every view, the G global views first; teacher (G, B, K): the teacher's
    outputs of the global views (no gradient); center (K,): the running mean of the teacher's outputs."""
    checks.views("dino_loss", {"student": student}, min_batch=1)
    checks.views("dino_loss", {"teacher": teacher}, min_batch=1)     # another shape than the student's: apart
    G, V = teacher.shape[0], student.shape[0]
    if teacher.shape[1:] != student.shape[1:] or G > V or V < 2 or center.shape != teacher.shape[-1:]:
        raise UserError(f"dino_loss: student {tuple(student.shape)}, teacher {tuple(teacher.shape)} and "
                               f"center {tuple(center.shape)} must be (V >= 2, B, K), (G <= V, B, K) and (K,)")
    t_s = checks.positive("dino_loss", "student_temp", student_temp)
    t_t = checks.positive("dino_loss", "teacher_temp", teacher_temp)
    if validate:
        checks.finite("dino_loss", {"student": student, "teacher": teacher})
    with full_precision(student):
        s = torch.log_softmax(wide(student) / t_s, dim=-1)
        with torch.no_grad():
            q = torch.softmax((wide(teacher) - center.to(wide(teacher).dtype)) / t_t, dim=-1).to(s.dtype)
        ce = -torch.einsum("gbk,vbk->gvb", q, s).mean(-1)                       # (G, V)
        other = ~torch.eye(G, V, dtype=torch.bool, device=ce.device)           # a view never teaches itself
        return ce[other].mean()

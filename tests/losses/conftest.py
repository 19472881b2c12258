"""Fixtures shared by the loss tests."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture
def threads(request):
    """torch's CPU thread count for one test (parametrize indirectly); the worker's count comes back after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)

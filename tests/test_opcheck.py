"""torch.library.opcheck on the C++ ops (schema, fake kernels, autograd registration)."""

from __future__ import annotations

import pytest
import torch

import thermokern  # noqa: F401  (registers the ops)
from thermokern.ops import entropy  # noqa: F401  (fake + autograd registrations)

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def _devices():
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(3, 7), (2, 2500), (0, 5)], ids=str)
def test_opcheck_softmax_entropy(device, dtype, shape):
    x = torch.randn(shape, device=device, dtype=dtype)
    fwd = torch.ops.thermokern.softmax_entropy_fwd.default
    torch.library.opcheck(fwd, (x, 0.9))
    xg = x.clone().requires_grad_(True)
    torch.library.opcheck(fwd, (xg, 1.7))
    h, mx, ln = fwd(x, 0.9)
    g = torch.randn(shape[0], device=device, dtype=dtype)
    torch.library.opcheck(torch.ops.thermokern.softmax_entropy_bwd.default, (g, x, h, mx, ln, 0.9))

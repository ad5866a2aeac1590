"""torch.compile(fullgraph=True) through the C++ ops, forward and backward, on CPU.

(Triton ops cannot be compiled under the interpreter; bench/gpu_check.sh covers them on GPU.)
"""

from __future__ import annotations

import pytest
import torch
from _util import assert_close

import thermokern
from thermokern import reference


@pytest.mark.parametrize("dim", [-1, 0])
def test_compile_forward_backward_cpu(dim):
    torch._dynamo.reset()

    def loss_fn(x):
        return thermokern.softmax_entropy(x * 2.0, dim, temperature=0.7, backend="cpu").square().sum()

    compiled = torch.compile(loss_fn, fullgraph=True)
    x = torch.randn(6, 37, 19, dtype=torch.float32, requires_grad=True)
    out = compiled(x)
    (gx,) = torch.autograd.grad(out, x)
    xr = x.detach().double().requires_grad_(True)
    ref = reference.softmax_entropy(xr * 2.0, dim, temperature=0.7).square().sum()
    (gr,) = torch.autograd.grad(ref, xr)
    assert_close(out.detach(), ref.detach(), torch.float32)
    assert_close(gx, gr, torch.float32, grad=True)


def test_compile_dynamic_shapes_cpu():
    torch._dynamo.reset()
    compiled = torch.compile(
        lambda x: thermokern.softmax_entropy(x, backend="cpu"), fullgraph=True, dynamic=True
    )
    for n, c in [(3, 10), (5, 17), (2, 4000)]:
        x = torch.randn(n, c)
        assert_close(compiled(x), reference.softmax_entropy(x.double()), torch.float32)

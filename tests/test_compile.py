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


def test_compile_partition_ops_cpu():
    torch._dynamo.reset()

    def loss_fn(x, w):
        a = thermokern.logsumexp(x, 1, weight=w, backend="cpu").sum()
        st = thermokern.thermo_stats(x * 0.5, 0, temperature=0.7, backend="cpu")
        return (
            a
            + st.heat_capacity.sum()
            + st.entropy.sum()
            + thermokern.free_energy(x, (0, 2), backend="cpu").sum()
        )

    compiled = torch.compile(loss_fn, fullgraph=True)
    x = torch.randn(5, 33, 7, dtype=torch.float64, requires_grad=True)
    w = torch.rand(33, 7, dtype=torch.float64, requires_grad=True)
    out = compiled(x, w)
    gx, gw = torch.autograd.grad(out, (x, w))
    ref_out = (
        reference.logsumexp(x, 1, weight=w).sum()
        + sum(v.sum() for v in reference.thermo_stats(x * 0.5, 0, temperature=0.7)[3:])
        + reference.free_energy(x, (0, 2)).sum()
    )
    rx, rw = torch.autograd.grad(ref_out, (x, w))
    assert_close(out.detach(), ref_out.detach(), torch.float64)
    assert_close(gx, rx, torch.float64, grad=True)
    assert_close(gw, rw, torch.float64, grad=True)

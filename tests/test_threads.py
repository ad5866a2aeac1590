"""The CPU kernels give the same results whatever the number of threads: CI's machine has 2
cores, users' have dozens, and the kernels split their work by the thread count."""

from __future__ import annotations

import contextlib

import pytest
import torch
from _util import assert_close

import thermokern
from thermokern.ops.mala import mala_accept, mala_proposal

THREADS = (1, 3, 16)  # one, an odd split, more threads than this machine's cores


@contextlib.contextmanager
def _threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _each_thread_count(fn):
    """fn() at every count of THREADS: a list of its (tuple of) outputs, detached."""
    outs = []
    for n in THREADS:
        with _threads(n):
            out = fn()
        outs.append(tuple(t.detach().clone() for t in (out if isinstance(out, tuple) else (out,))))
    return outs


def _grads(fn, *inputs):
    """fn(*inputs) and the gradients of its sum w.r.t. the inputs."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = fn(*leaves)
    grads = torch.autograd.grad(out.sum(), leaves)
    return (out, *grads)


def _row_cases():
    x = torch.randn(37, 5000, dtype=torch.float64).float() * 3
    t = torch.randint(0, 5000, (37,))
    t[3] = -100
    ce = {"entropy_weight": 0.2, "label_smoothing": 0.1, "z_loss_weight": 1e-3, "temperature": 0.8}
    return {
        "softmax_entropy": lambda: _grads(lambda x: thermokern.softmax_entropy(x, backend="cpu"), x),
        "cross_entropy": lambda: _grads(
            lambda x: thermokern.entropy_regularized_cross_entropy(
                x, t, reduction="none", backend="cpu", **ce
            ),
            x,
        ),
        "token_logprobs": lambda: _grads(lambda x: thermokern.token_logprobs(x, t, backend="cpu"), x),
    }


def _partition_cases():
    rows = torch.randn(6, 20000) * 4  # few long rows (a task per output row)
    cols = torch.randn(3, 2000, 37) * 4  # a reduction over a middle dimension (column tiles)
    return {
        "logsumexp rows": lambda: _grads(lambda x: thermokern.logsumexp(x, -1, backend="cpu"), rows),
        "logsumexp cols": lambda: _grads(lambda x: thermokern.logsumexp(x, 1, backend="cpu"), cols),
        "thermo_stats": lambda: thermokern.thermo_stats(rows, -1, temperature=0.7, backend="cpu"),
    }


def _blas_cases():
    h, w = torch.randn(300, 64), torch.randn(5000, 64) / 8
    t = torch.randint(0, 5000, (300,))
    return {
        # the matmuls of the chunks are the BLAS's, whose splits may follow the thread count
        "linear_cross_entropy": lambda: _grads(
            lambda h, w: thermokern.linear_cross_entropy(h, w, t, entropy_weight=0.2, backend="cpu"), h, w
        ),
    }


def _sampler_cases():
    x, g = torch.randn(64, 3001), torch.randn(64, 3001)
    xp, gp = torch.randn(64, 3001), torch.randn(64, 3001)
    e, ep = torch.randn(64), torch.randn(64)
    eta = torch.linspace(0.01, 0.2, 64)
    kw = {"seed": 3, "offset": 5}

    def sgld():
        # 50,001 Philox counters: several tasks of the kernel's grain (16,384 counters)
        params = [torch.nn.Parameter(torch.ones(1000, 200)), torch.nn.Parameter(torch.ones(3))]
        for p in params:
            p.grad = torch.full_like(p, 0.5)
        thermokern.optim.SGLD(params, lr=1e-3, seed=9, backend="cpu").step()
        return tuple(p.detach() for p in params)

    return {
        "langevin_step": lambda: _grads(
            lambda x, g: thermokern.langevin_step(
                x, g, step_size=0.1, clamp=(-2.0, 2.0), backend="cpu", **kw
            ),
            x,
            g,
        ),
        "mala_proposal": lambda: mala_proposal(x, g, step_size=eta, backend="cpu", **kw),
        "mala_accept": lambda: mala_accept(x, xp, g, gp, e, ep, step_size=eta, backend="cpu", **kw),
        "sgld": sgld,
    }


@pytest.mark.parametrize("case", list(_row_cases()) + list(_partition_cases()) + list(_sampler_cases()))
def test_same_bits_at_any_thread_count(case):
    """The kernels split their work by rows, output rows or column tiles, or Philox counters,
    each computed the same way wherever it runs (a reduction is never split): the same bits."""
    fn = (_row_cases() | _partition_cases() | _sampler_cases())[case]
    first, *rest = _each_thread_count(fn)
    for other in rest:
        for a, b in zip(first, other, strict=True):
            assert torch.equal(a, b), case


@pytest.mark.parametrize("case", list(_blas_cases()))
def test_close_at_any_thread_count(case):
    """The language-model head, whose chunk matmuls are the BLAS's (their splits may follow the
    thread count): equal to rounding."""
    first, *rest = _each_thread_count(_blas_cases()[case])
    for other in rest:
        for a, b in zip(first, other, strict=True):
            assert_close(b, a.double(), torch.float32)

"""Hypothesis fuzzing of softmax_entropy against the reference: shapes, dims, strides, T."""

from __future__ import annotations

import pytest
import torch
from _util import assert_close, gpu_launch_sizes
from conftest import cpu_backends
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import thermokern
from thermokern import reference

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


# Reduced sizes that span several blocks of a GPU launch (4096 classes or rows per block).
GPU_BLOCK_SIZES = [17, 4097, 4100, 8193]


@st.composite
def cases(draw, sizes=(1, 2, 3, 17, 64, 255, 2047, 2049, 4100)):
    ndim = draw(st.integers(1, 3))
    shape = [draw(st.integers(1, 6)) for _ in range(ndim)]
    dim = draw(st.integers(-ndim, ndim - 1))
    shape[dim] = draw(st.sampled_from(sizes))
    dtype = draw(st.sampled_from(DTYPES))
    temperature = draw(st.floats(0.05, 20.0))
    scale = draw(st.sampled_from([0.1, 1.0, 10.0, 100.0]))
    transpose = ndim >= 2 and draw(st.booleans())
    mask_frac = draw(st.sampled_from([0.0, 0.0, 0.3]))
    seed = draw(st.integers(0, 2**31 - 1))
    return shape, dim, dtype, temperature, scale, transpose, mask_frac, seed


def _run(backend, case):
    shape, dim, dtype, temperature, scale, transpose, mask_frac, seed = case
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * scale
    if mask_frac:
        mask = torch.rand(shape, generator=g) < mask_frac
        # keep at least one live entry per reduced row
        first = [slice(None)] * len(shape)
        first[dim] = 0
        mask[tuple(first)] = False
        x = x.masked_fill(mask, float("-inf"))
    x = x.to(dtype)
    if transpose:
        x = x.transpose(0, -1).contiguous().transpose(0, -1)  # same values, other strides
    xg = x.clone().requires_grad_(True)
    out = thermokern.softmax_entropy(xg, dim, temperature=temperature, backend=backend)
    xr = x.double().requires_grad_(True)
    ref = reference.softmax_entropy(xr, dim, temperature=temperature)
    # PyTorch at the input's precision, for the round-off any implementation pays there.
    xn = x.clone().requires_grad_(True)
    nat = reference.softmax_entropy(xn, dim, temperature=temperature)
    assert_close(out.detach(), ref.detach(), dtype, native=nat.detach())
    w = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    (gx,) = torch.autograd.grad(out, xg, w.to(dtype))
    (gr,) = torch.autograd.grad(ref, xr, w.to(dtype).double())
    (gn,) = torch.autograd.grad(nat, xn, w.to(dtype))
    assert_close(gx, gr, dtype, grad=True, native=gn, grad_scale=float(w.abs().max()) / temperature)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_fuzz_cpu(case):
    _run("cpu", case)


@pytest.mark.skipif("triton" not in cpu_backends(), reason="needs triton (interpreter)")
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_fuzz_triton(case):
    _run("triton", case)


@pytest.mark.skipif("triton" not in cpu_backends(), reason="needs triton (interpreter)")
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(GPU_BLOCK_SIZES))
def test_fuzz_triton_gpu_launch_sizes(case):
    """The Triton kernels at the block sizes they launch with on a GPU (rows of up to 8193: up
    to three blocks of 4096), through the interpreter."""
    with gpu_launch_sizes():
        _run("triton", case)


# ----------------------------------------------------------------------------- logsumexp
@st.composite
def lse_cases(draw, sizes=(1, 2, 17, 255, 2049, 4100)):
    ndim = draw(st.integers(1, 3))
    shape = [draw(st.integers(1, 5)) for _ in range(ndim)]
    dim = draw(st.integers(-ndim, ndim - 1))
    shape[dim] = draw(st.sampled_from(sizes))
    dtype = draw(st.sampled_from(DTYPES))
    scale = draw(st.sampled_from([0.1, 1.0, 30.0, 300.0]))
    specials = draw(st.sampled_from([0.0, 0.0, 0.05]))
    weighted = draw(st.booleans())
    masked = draw(st.booleans())
    transpose = ndim >= 2 and draw(st.booleans())
    seed = draw(st.integers(0, 2**31 - 1))
    return shape, dim, dtype, scale, specials, weighted, masked, transpose, seed


def _run_lse(backend, case):
    shape, dim, dtype, scale, specials, weighted, masked, transpose, seed = case
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * scale
    if specials:
        pick = torch.rand(shape, generator=g)
        x = torch.where(pick < specials / 2, float("-inf"), x)
        x = torch.where((pick > 1 - specials / 4), float("inf"), x)
    x = x.to(dtype)
    if transpose:
        x = x.transpose(0, -1).contiguous().transpose(0, -1)
    w = (torch.rand(shape, generator=g, dtype=torch.float64) + 0.05).to(dtype) if weighted else None
    m = (torch.rand(shape, generator=g) > 0.2) if masked else None
    out = thermokern.logsumexp(x, dim, weight=w, mask=m, backend=backend)
    ref = reference.logsumexp(x.double(), dim, weight=None if w is None else w.double(), mask=m)
    nat = reference.logsumexp(x, dim, weight=w, mask=m)
    assert_close(out, ref, dtype, native=nat)
    if w is None and m is None:
        assert_close(out, torch.logsumexp(x.double(), dim), dtype, native=torch.logsumexp(x, dim))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lse_cases())
def test_fuzz_logsumexp_cpu(case):
    _run_lse("cpu", case)


@pytest.mark.skipif("triton" not in cpu_backends(), reason="needs triton (interpreter)")
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lse_cases())
def test_fuzz_logsumexp_triton(case):
    _run_lse("triton", case)


@pytest.mark.skipif("triton" not in cpu_backends(), reason="needs triton (interpreter)")
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lse_cases(GPU_BLOCK_SIZES))
def test_fuzz_logsumexp_triton_gpu_launch_sizes(case):
    """The partition kernels at the tiles and program counts they launch with on a GPU (column
    tiles, the backward's split of R), through the interpreter."""
    with gpu_launch_sizes():
        _run_lse("triton", case)

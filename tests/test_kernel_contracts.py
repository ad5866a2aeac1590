"""Every kernel against its contract (thermokern.reference.kernels), through its KernelOp.

The public-level tests compare the ops with the specification; these check the level below,
which thermokern.distributed relies on: the statistics each forward kernel returns and the
gradient each backward kernel computes from given statistics, on every backend that runs
here. Where the contract leaves a choice (the shift of a row), shift-invariant combinations
are compared.
"""

from __future__ import annotations

import math

import pytest
import torch
from _util import assert_close, counter_starts, gpu_launch_sizes
from conftest import HAS_GPU, cpu_backends, gpu_backends

from thermokern._dtypes import acc_dtype
from thermokern.ops.cross_entropy import cross_entropy_bwd, cross_entropy_fwd
from thermokern.ops.langevin import langevin_step_bwd, langevin_step_fwd, langevin_step_inplace
from thermokern.ops.mala import mala_accept_kernel, mala_proposal_kernel
from thermokern.ops.partition import partition_bwd, partition_fwd
from thermokern.ops.sgld import sgld_step_kernel
from thermokern.ops.softmax_entropy import softmax_entropy_bwd, softmax_entropy_fwd
from thermokern.ops.token_logprobs import token_logprobs_bwd, token_logprobs_fwd

BACKENDS = [b for b in cpu_backends() if b != "reference"]
DTYPES = [torch.float32, torch.float64]
ALL_DTYPES = [*DTYPES, torch.bfloat16, torch.float16]


def _logits(n: int, c: int, dtype: torch.dtype) -> torch.Tensor:
    x = torch.randn(n, c, dtype=torch.float64) * 3
    x[0, 1 % c] = -math.inf  # a masked logit
    return x.to(dtype)


def _targets(c: int) -> torch.Tensor:
    """Targets of 6 rows of ``c`` >= 37 classes: row 1 ignored (index -100), the first and the
    last class (the last class in a later block than the first when a row spans blocks), and
    one in the middle."""
    return torch.tensor([3, -100, 0, c - 1, 5, c // 2 + 1])


def _rows(dtype: torch.dtype, temperatures: int, c: int = 37):
    """Logits of 6 rows of ``c`` >= 37 classes, their targets (:func:`_targets`) and
    ``temperatures`` (1 or 6) inverse temperatures."""
    x = _logits(6, c, dtype)
    target = _targets(c)
    inv_t = torch.rand(temperatures, dtype=acc_dtype(dtype)) + 0.5
    return x, target, inv_t


def _lse(shift, log_norm, inv_t):
    return shift * inv_t + log_norm


def _check_fwd(fwd, backend, args, inv_t, dtype):
    """``fwd(backend, *args)`` against the reference: every output but the last two as is, the
    last two (the row's shift and log-normaliser) through the lse they give. Returns ``backend``'s."""
    got = fwd(backend, *args)
    want = fwd("reference", *args)
    for a, b in zip(got[:-2], want[:-2], strict=True):
        assert_close(a, b, dtype)
    assert_close(_lse(*got[-2:], inv_t), _lse(*want[-2:], inv_t), dtype)
    return got


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_softmax_entropy_kernels(backend, dtype, c=37):
    x, _, inv_t = _rows(dtype, 6, c)
    got = _check_fwd(softmax_entropy_fwd, backend, (x, inv_t), inv_t, dtype)
    g = torch.randn(6, dtype=acc_dtype(dtype))
    gx = softmax_entropy_bwd(backend, g, x, inv_t, *got)
    assert_close(gx, softmax_entropy_bwd("reference", g, x, inv_t, *got), dtype, grad=True)


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_cross_entropy_kernels(backend, dtype, c=37):
    x, target, inv_t = _rows(dtype, 1, c)
    params = (0.3, 0.1, -100, 1e-3)  # entropy_weight, label_smoothing, ignore_index, z_loss_weight
    got = _check_fwd(cross_entropy_fwd, backend, (x, target, inv_t, *params), inv_t, dtype)
    g = torch.randn(6, dtype=acc_dtype(dtype))
    gx = cross_entropy_bwd(backend, g, x, target, inv_t, *got[1:], *params)
    want_gx = cross_entropy_bwd("reference", g, x, target, inv_t, *got[1:], *params)
    assert_close(gx, want_gx, dtype, grad=True)
    assert (gx[1] == 0).all()  # the ignored row


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_token_logprobs_kernels(backend, dtype, c=37):
    x, target, inv_t = _rows(dtype, 6, c)
    got = _check_fwd(token_logprobs_fwd, backend, (x, target, inv_t, -100), inv_t, dtype)
    gl, gh = torch.randn(6, dtype=acc_dtype(dtype)), torch.randn(6, dtype=acc_dtype(dtype))
    for g_h in (gh, None):
        gx = token_logprobs_bwd(backend, gl, g_h, x, target, inv_t, *got[1:], -100)
        assert_close(
            gx, token_logprobs_bwd("reference", gl, g_h, x, target, inv_t, *got[1:], -100), dtype, grad=True
        )
        assert (gx[1] == 0).all()  # the ignored row


def _row_bwd_cases(x, dtype):
    """(backward KernelOp, its arguments) of the three row ops on logits ``x``."""
    target = _targets(x.shape[1])
    acc = acc_dtype(dtype)
    inv_t = torch.rand(6, dtype=acc) + 0.5
    g, g2 = torch.randn(6, dtype=acc), torch.randn(6, dtype=acc)
    stats = softmax_entropy_fwd("reference", x, inv_t)
    return [
        (softmax_entropy_bwd, (g, x, inv_t, *stats)),
        (cross_entropy_bwd, (g, x, target, inv_t, *stats, 0.3, 0.1, -100, 1e-3)),
        (token_logprobs_bwd, (g, g2, x, target, inv_t, *stats, -100)),
        (token_logprobs_bwd, (g, None, x, target, inv_t, *stats, -100)),
    ]


def _check_in_place(backend, dtype, device, c):
    """Each row op's <op>_bwd_ writes over the logits exactly what <op>_bwd returns, and
    refuses logits it cannot overwrite row by row."""
    for bwd, args in _row_bwd_cases(_logits(6, c, dtype), dtype):
        args = tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in args)
        at = next(i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.dim() == 2)
        want = bwd(backend, *args)
        logits = args[at].clone()
        assert bwd.twin(backend, *args[:at], logits, *args[at + 1 :]) is None
        assert torch.equal(logits, want), bwd.name
        strided = torch.empty(6, 2 * c, dtype=dtype, device=device)[:, ::2]
        strided.copy_(args[at])
        with pytest.raises(ValueError, match="logits"):
            bwd.twin(backend, *args[:at], strided, *args[at + 1 :])


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@pytest.mark.parametrize("backend", cpu_backends())
def test_in_place_backwards(backend, dtype):
    _check_in_place(backend, dtype, "cpu", 37)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_GPU, reason="needs an NVIDIA GPU")
@pytest.mark.parametrize("c", [37, 1024], ids=str)  # the scalar and the vectorised CUDA paths
@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@pytest.mark.parametrize("backend", gpu_backends() or ["cuda"])
def test_gpu_in_place_backwards(backend, dtype, c):
    _check_in_place(backend, dtype, "cuda", c)


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(5, 40, 1), (3, 20, 6)], ids=str)
def test_partition_kernels(backend, dtype, shape):
    o, r, i = shape
    x = (torch.randn(shape, dtype=torch.float64) * 2).to(dtype)
    x[0, 3, 0] = math.inf  # an output holding +inf
    x[1, :, 0] = -math.inf  # an output with nothing finite
    w = (torch.rand((1, r, i), dtype=torch.float64) * 2 - 0.5).to(dtype).expand(shape)  # stride 0
    m = torch.rand(shape) > 0.2
    k = torch.rand(o * i, dtype=acc_dtype(dtype)) + 0.5
    got = partition_fwd(backend, x, w, m, k, True, 2)
    want = partition_fwd("reference", x, w, m, k, True, 2)

    def invariant(shift, total, m1, m2):
        safe = torch.where(total == 0, torch.ones_like(total), total)
        mean_u = m1 / safe
        return k * shift + torch.log(total.abs()), mean_u + k * shift, m2 / safe - mean_u * mean_u

    for a, b in zip(invariant(*got), invariant(*want), strict=True):
        assert_close(a, b, dtype)
    assert torch.equal(torch.sign(got[1]), torch.sign(want[1]))
    shift, total = got[0], got[1]
    finite = torch.isfinite(shift) & (total != 0)
    shift_b = torch.where(finite, shift, torch.zeros_like(shift))
    log_norm = torch.where(finite, torch.log(total.abs()), torch.full_like(total, math.inf))
    coef = torch.randn(o * i, 3, dtype=acc_dtype(dtype))
    gx, gw = partition_bwd(backend, x, w, m, k, True, shift_b, log_norm, coef, True)
    rx, rw = partition_bwd("reference", x, w, m, k, True, shift_b, log_norm, coef, True)
    assert_close(gx, rx, dtype, grad=True)
    assert_close(gw, rw, dtype, grad=True)


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_langevin_kernels(backend, dtype, n=1001):
    x = torch.randn(n, dtype=dtype)
    g = torch.randn(n, dtype=dtype) * 3
    seed, offset = torch.tensor(7), torch.tensor(12)
    args = (seed, offset, 0.1, 0.3, 2.0, -1.5, 1.2)  # step, sigma, grad_clip, clamp lo/hi
    want = langevin_step_fwd("reference", x, g, *args)
    assert_close(langevin_step_fwd(backend, x, g, *args), want, dtype)
    y = x.clone()
    langevin_step_inplace(backend, y, g, *args)
    assert_close(y, want, dtype)
    up = torch.randn(n, dtype=dtype)
    got = langevin_step_bwd(backend, up, x, g, *args)
    ref = langevin_step_bwd("reference", up, x, g, *args)
    for a, b in zip(got, ref, strict=True):
        assert_close(a, b, dtype, grad=True)


def _check_per_chain_mala(backend, dtype, device, shape):
    """mala_proposal and mala_accept with per-chain parameters (one per chain, and one for
    every chain) against their contracts."""
    acc = acc_dtype(dtype)
    chains = shape[0]
    x, g = ((torch.randn(shape, dtype=torch.float64) * 0.3).to(dtype).to(device) for _ in range(2))
    seed, offset = torch.tensor(5, device=device), torch.tensor(11, device=device)
    per_chain = (
        torch.linspace(0.01, 0.5, chains, dtype=acc, device=device),
        torch.linspace(0.5, 3.0, chains, dtype=acc, device=device),
    )
    shared = (
        torch.full((1,), 0.1, dtype=acc, device=device),
        torch.full((1,), 1.7, dtype=acc, device=device),
    )
    e, ep = (torch.randn(chains, dtype=acc, device=device) for _ in range(2))
    for eta, t in (per_chain, shared, (per_chain[0], shared[1])):
        xp = mala_proposal_kernel(backend, x, g, seed, offset, eta, t)
        want = mala_proposal_kernel("reference", x, g, seed, offset, eta, t)
        assert xp.shape == x.shape and xp.dtype == dtype
        # the float32 noise series differ between backends by ~1e-6 relative (which may move a
        # 16-bit rounding by one unit: 2^-8 relative in bfloat16, 2^-11 in float16)
        tol = {torch.bfloat16: 1e-2, torch.float16: 2e-3}.get(dtype, 1e-5)
        torch.testing.assert_close(xp.cpu(), want.cpu(), rtol=tol, atol=tol)
        gp = (g * 0.7).contiguous()
        got = mala_accept_kernel(backend, x, xp, g, gp, e, ep, seed, offset, 1.0, 1.0, eta, t)
        ref = mala_accept_kernel("reference", x, xp, g, gp, e, ep, seed, offset, 1.0, 1.0, eta, t)
        assert torch.equal(got[1].cpu(), ref[1].cpu()) and torch.equal(got[0].cpu(), ref[0].cpu())
        assert_close(got[2].cpu(), ref[2].cpu(), torch.float32)


@pytest.mark.parametrize("shape", [(9, 33), (6, 3), (5,), (4, 2, 7)], ids=str)
@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_per_chain_mala_kernels(backend, dtype, shape):
    _check_per_chain_mala(backend, dtype, "cpu", shape)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_GPU, reason="needs an NVIDIA GPU")
@pytest.mark.parametrize("shape", [(9, 33), (6, 3), (5,), (300, 1000)], ids=str)
@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@pytest.mark.parametrize("backend", gpu_backends() or ["cuda"])
def test_gpu_per_chain_mala_kernels(backend, dtype, shape):
    _check_per_chain_mala(backend, dtype, "cuda", shape)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_mala_proposal_with_equal_parameters_is_langevin_step(dtype):
    """On the CPU, exactly representable equal parameters give langevin_step bit for bit (the
    same noise, the same operations in the same order)."""
    x, g = torch.randn(7, 13, dtype=dtype), torch.randn(7, 13, dtype=dtype)
    seed, offset = torch.tensor(2), torch.tensor(9)
    eta, t = torch.full((7,), 0.25, dtype=dtype), torch.full((7,), 2.0, dtype=dtype)
    got = mala_proposal_kernel("cpu", x, g, seed, offset, eta, t)
    want = langevin_step_fwd(
        "cpu", x, g, seed, offset, 0.25, 1.0, None, None, None
    )  # sigma sqrt(2 * 0.25 * 2)
    assert torch.equal(got, want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_mala_and_sgld_kernels(backend, sgld_shapes=((5, 7), (300,))):
    x, xp, g, gp = (torch.randn(9, 33) * 0.3 for _ in range(4))
    e, ep = torch.randn(9), torch.randn(9)
    args = (torch.tensor(5), torch.tensor(11), 0.05, 0.9)
    got = mala_accept_kernel(backend, x, xp, g, gp, e, ep, *args)
    want = mala_accept_kernel("reference", x, xp, g, gp, e, ep, *args)
    assert torch.equal(got[1], want[1]) and torch.equal(got[0], want[0])
    assert_close(got[2], want[2], torch.float32)
    params = [torch.randn(shape) for shape in sgld_shapes]
    ref_params = [p.clone() for p in params]
    grads = [torch.randn_like(p) for p in params]
    starts, _ = counter_starts(params)  # disjoint counters per tensor
    sgld = (torch.tensor(3), torch.tensor(100), starts, 0.01, 0.2, 0.1)
    seed, offset, starts, lr, sigma, wd = sgld
    sgld_step_kernel(backend, params, grads, seed, offset, starts, lr, sigma, wd)
    sgld_step_kernel("reference", ref_params, grads, seed, offset, starts, lr, sigma, wd)
    for a, b in zip(params, ref_params, strict=True):
        assert_close(a, b, torch.float32)


# ----------------------------------------------------------------------------- GPU launch sizes
@pytest.mark.skipif("triton" not in BACKENDS, reason="needs triton (interpreter)")
@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_triton_kernels_at_gpu_launch_sizes(dtype):
    """Every Triton kernel against its contract at the launch sizes of a GPU, at shapes that
    need several blocks there: rows of 5000 classes (blocks of 4096; the in-place backwards
    too), partition rows of 5000 and columns of 37 (tiles of 16 columns, the backward's R split
    over a second grid axis), 3001 Langevin elements and 9000 MALA ones (programs of 1024),
    chains of 3000 (tiles of 2048) and of 3 (many chains per program), SGLD tensors of 3000, 17
    and 1000 elements."""
    with gpu_launch_sizes():
        test_softmax_entropy_kernels("triton", dtype, c=5000)
        test_cross_entropy_kernels("triton", dtype, c=5000)
        test_token_logprobs_kernels("triton", dtype, c=5000)
        _check_in_place("triton", dtype, "cpu", 5000)
        for shape in ((2, 5000, 1), (2, 300, 37)):
            test_partition_kernels("triton", dtype, shape)
        test_langevin_kernels("triton", dtype, n=3001)
        for shape in ((3, 3000), (300, 3)):
            _check_per_chain_mala("triton", dtype, "cpu", shape)
        test_mala_and_sgld_kernels("triton", sgld_shapes=((3000,), (17,), (1000,)))

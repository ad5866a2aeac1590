"""softmax_entropy: every backend that runs here x dtype against the float64 reference."""

from __future__ import annotations

import math

import pytest
import torch
from _util import DTYPES, assert_close, run_offline_triton_compile
from conftest import HAS_GPU, cpu_backends, gpu_backends

import thermokern
from thermokern import reference

# Shapes chosen to hit each code path of the kernels (CPU chunk = 2048 columns, vector widths
# 8/16/32 lanes, Triton blocks of up to 16384 columns under the interpreter / 4096 on GPU).
SHAPES = [
    (1, 1),  # one class: H = 0
    (3, 7),  # shorter than one vector: scalar tails only
    (5, 33),  # vector body + odd tail
    (4, 2048),  # exactly one CPU chunk
    (2, 2049),  # one chunk + 1: a second chunk of a single element
    (3, 5000),  # several chunks with a tail
    (2, 70000),  # C > 65536: many chunks / Triton blocks
    (0, 10),  # no rows
]


def _ref(x: torch.Tensor, dim: int = -1, temperature: float = 1.0) -> torch.Tensor:
    return reference.softmax_entropy(x.double(), dim, temperature=temperature)


def _make(shape, dtype, scale=3.0, device="cpu"):
    return (torch.randn(shape, dtype=torch.float64, device=device) * scale).to(dtype)


@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_matches_reference(backend, dtype, shape):
    x = _make(shape, dtype)
    out = thermokern.softmax_entropy(x, temperature=0.8, backend=backend)
    assert out.dtype == dtype and out.shape == shape[:-1]
    assert_close(out, _ref(x, temperature=0.8), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(3, 7), (2, 2049), (2, 5000), (1, 131072)], ids=str)
def test_cpu_every_isa(cpu_isa, dtype, shape):
    x = _make(shape, dtype).requires_grad_(True)
    out = thermokern.softmax_entropy(x, temperature=1.3, backend="cpu")
    assert_close(out, _ref(x.detach(), temperature=1.3), dtype)
    g = torch.randn(shape[0], dtype=torch.float64)
    (gx,) = torch.autograd.grad(out, x, g.to(dtype))
    xr = x.detach().double().requires_grad_(True)
    (gr,) = torch.autograd.grad(_ref(xr, temperature=1.3), xr, g.to(dtype).double())
    assert_close(gx, gr, dtype, grad=True)


@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(3, 7), (4, 2049), (2, 70000)], ids=str)
def test_backward_matches_reference(backend, dtype, shape):
    x = _make(shape, dtype).requires_grad_(True)
    out = thermokern.softmax_entropy(x, temperature=0.7, backend=backend)
    g = torch.randn(shape[0], dtype=torch.float64).to(dtype)
    (gx,) = torch.autograd.grad(out, x, g)
    assert gx.dtype == dtype
    xr = x.detach().double().requires_grad_(True)
    (gr,) = torch.autograd.grad(_ref(xr, temperature=0.7), xr, g.double())
    assert_close(gx, gr, dtype, grad=True)


@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("dim", [0, 1, 2, -1, -2])
def test_any_dim_and_leading_dims(backend, dim):
    x = torch.randn(4, 6, 9, dtype=torch.float64, requires_grad=True)
    out = thermokern.softmax_entropy(x, dim, backend=backend)
    ref = _ref(x, dim)
    assert out.shape == ref.shape
    assert_close(out, ref, torch.float64)
    (gx,) = torch.autograd.grad(out.sum(), x)
    (gr,) = torch.autograd.grad(ref.sum(), x)
    assert_close(gx, gr, torch.float64, grad=True)


@pytest.mark.parametrize("backend", cpu_backends())
def test_non_contiguous_inputs(backend):
    base = torch.randn(8, 50, 3, dtype=torch.float32)
    cases = [
        base[:, :, 1],  # strided along the class dim
        base.transpose(0, 1)[:, :, 0].t(),  # transposed
        base[::2, :, 0],  # row stride > C
        torch.randn(1, 40).expand(5, 40),  # row stride 0
        torch.randn(30, 6).t(),  # reduced dim not unit stride
    ]
    for x in cases:
        assert_close(thermokern.softmax_entropy(x, backend=backend), _ref(x), torch.float32)


@pytest.mark.parametrize("backend", cpu_backends())
def test_invariants(backend):
    x = torch.randn(16, 300) * 5
    h = thermokern.softmax_entropy(x, backend=backend).double()
    assert (h >= -1e-6).all() and (h <= math.log(300) + 1e-5).all()
    # Uniform logits reach the maximum log C; a dominant logit gives ~0.
    assert_close(
        thermokern.softmax_entropy(torch.zeros(3, 300), backend=backend),
        torch.full((3,), math.log(300), dtype=torch.float64),
        torch.float32,
    )
    spike = torch.zeros(2, 300)
    spike[:, 7] = 1e4
    assert thermokern.softmax_entropy(spike, backend=backend).abs().max() < 1e-6
    # Shift invariance: H(x + c) = H(x) for a per-row constant c.
    shifted = x.double() + torch.randn(16, 1, dtype=torch.float64) * 1e3
    assert_close(
        thermokern.softmax_entropy(shifted, backend=backend),
        thermokern.softmax_entropy(x.double(), backend=backend),
        torch.float64,
    )


@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_temperature_scaling(backend, dtype):
    # H(softmax(x / T)) equals H(softmax(x')) with x' = x / T computed outside.
    x = torch.randn(5, 333, dtype=dtype)
    for t in (0.05, 0.5, 1.0, 7.0):
        assert_close(
            thermokern.softmax_entropy(x, temperature=t, backend=backend), _ref(x.double() / t), dtype
        )


@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_extreme_and_masked_logits(backend, dtype):
    C = 5000
    x = torch.randn(6, C, dtype=torch.float64)
    x[0] *= 1e4  # huge spread: no overflow, no cancellation
    x[1] = -1e4 + torch.randn(C)  # all very negative
    x[2, ::3] = float("-inf")  # partially masked
    x[3, :4100] = float("-inf")  # whole CPU chunks masked, then live entries
    x[4, 1:] = float("-inf")  # a single live entry: H = 0
    x[5, : C // 2] = 1e4  # ties at a huge value
    x = x.to(dtype)
    xr = x.double()
    out = thermokern.softmax_entropy(x, backend=backend)
    assert torch.isfinite(out).all()
    assert_close(out, _ref(xr), dtype)
    # The gradient stays finite, and is exactly 0 at -inf entries.
    xg = x.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(thermokern.softmax_entropy(xg, backend=backend).sum(), xg)
    assert torch.isfinite(gx).all()
    assert (gx[torch.isinf(x)] == 0).all()
    xrg = xr.clone().requires_grad_(True)
    (gr,) = torch.autograd.grad(_ref(xrg).sum(), xrg)
    assert_close(gx, gr, dtype, grad=True)


@pytest.mark.parametrize("backend", cpu_backends())
def test_nan_and_inf_rows_give_nan(backend):
    x = torch.randn(4, 3000)
    x[0, :] = float("-inf")  # all -inf: softmax undefined
    x[1, 2500] = float("inf")
    x[2, 10] = float("nan")
    out = thermokern.softmax_entropy(x, backend=backend)
    assert torch.isnan(out[:3]).all()
    assert torch.isfinite(out[3])
    assert torch.isnan(_ref(x)[:3]).all()


@pytest.mark.parametrize("backend", cpu_backends())
def test_gradcheck_float64(backend):
    x = torch.randn(3, 11, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda t: thermokern.softmax_entropy(t, temperature=0.6, backend=backend), (x,)
    )
    y = torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: thermokern.softmax_entropy(t, 1, backend=backend), (y,))


def test_backends_agree_with_each_other():
    x = torch.randn(7, 3001, dtype=torch.float64)
    outs = {b: thermokern.softmax_entropy(x, backend=b) for b in cpu_backends()}
    for o in outs.values():
        assert_close(o, outs["reference"], torch.float64)


def test_auto_backend_and_env(monkeypatch):
    x = torch.randn(2, 10, dtype=torch.float64)
    assert_close(thermokern.softmax_entropy(x), _ref(x), torch.float64)
    monkeypatch.setenv("THERMOKERN_BACKEND", "reference")
    assert_close(thermokern.softmax_entropy(x), _ref(x), torch.float64)
    monkeypatch.setenv("THERMOKERN_BACKEND", "bogus")
    with pytest.raises(ValueError, match="THERMOKERN_BACKEND"):
        thermokern.softmax_entropy(x)


def test_available_backends_reports_reasons():
    info = thermokern.available_backends()
    assert set(info) == set(thermokern.BACKENDS)
    assert info["reference"].available
    for name, b in info.items():
        assert isinstance(b.reason, str) and b.reason, name
        assert b.available == bool(b.devices), name


# ----------------------------------------------------------------------------- GPU
gpu = pytest.mark.skipif(not HAS_GPU, reason="needs an NVIDIA GPU")


@pytest.mark.cuda
@gpu
@pytest.mark.parametrize("backend", gpu_backends() or ["cuda"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES + [(64, 32000), (3, 262144), (1000, 3)], ids=str)
def test_gpu_forward_backward(backend, dtype, shape):
    x = _make(shape, dtype, device="cuda").requires_grad_(True)
    out = thermokern.softmax_entropy(x, temperature=0.9, backend=backend)
    assert_close(out.cpu(), _ref(x.detach().cpu(), temperature=0.9), dtype)
    g = torch.randn(shape[0], device="cuda", dtype=torch.float64).to(dtype)
    (gx,) = torch.autograd.grad(out, x, g)
    xr = x.detach().cpu().double().requires_grad_(True)
    (gr,) = torch.autograd.grad(_ref(xr, temperature=0.9), xr, g.cpu().double())
    assert_close(gx.cpu(), gr, dtype, grad=True)


@pytest.mark.cuda
@gpu
@pytest.mark.parametrize("backend", gpu_backends() or ["cuda"])
def test_gpu_unaligned_and_strided(backend):
    base = torch.randn(9, 1001, device="cuda")
    for x in (base[:, 1:], base[1:, :999], base.t()[:500, :]):
        x = x.detach().requires_grad_(True)
        out = thermokern.softmax_entropy(x, backend=backend)
        assert_close(out.cpu(), _ref(x.detach().cpu()), torch.float32)
        (gx,) = torch.autograd.grad(out.sum(), x)
        xr = x.detach().cpu().double().requires_grad_(True)
        (gr,) = torch.autograd.grad(_ref(xr).sum(), xr)
        assert_close(gx.cpu(), gr, torch.float32, grad=True)


@pytest.mark.cuda
@gpu
@pytest.mark.parametrize("backend", gpu_backends() or ["cuda"])
def test_gpu_extreme_and_gradcheck(backend):
    x = torch.randn(4, 5000, device="cuda", dtype=torch.float64)
    x[0] *= 1e4
    x[1, ::2] = float("-inf")
    x[2, :4500] = float("-inf")
    assert_close(thermokern.softmax_entropy(x, backend=backend).cpu(), _ref(x.cpu()), torch.float64)
    y = torch.randn(3, 9, device="cuda", dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: thermokern.softmax_entropy(t, backend=backend), (y,))


@pytest.mark.parametrize("gap", [0.0, 3.0, 5.5, 5.6, 20.0, 100.0, 1e4])
@pytest.mark.parametrize("temperature", [0.3, 1.0, 4.0])
def test_cpu_late_maximum(cpu_isa, gap, temperature):
    """The row maximum in a late chunk, at various distances above the first chunk's maximum.

    The CPU kernel sweeps later chunks once relative to the first chunk's maximum, and redoes
    a chunk whose values exceed it by more than 8 base-2 units (5.55 T in logits); both sides
    of that boundary, and values far beyond it, must give the same entropy and gradient.
    """
    C = 7000
    x = torch.randn(3, C, dtype=torch.float64)
    x[0, 6000] = x[0, :2048].max() + gap * temperature  # one late spike
    x[1, 2048:] += gap * temperature  # every later chunk shifted up
    x[2, :2048] = float("-inf")  # no reference from the first chunk
    x[2, 5000] = gap
    x = x.float().requires_grad_(True)
    out = thermokern.softmax_entropy(x, temperature=temperature, backend="cpu")
    xr = x.detach().double().requires_grad_(True)
    ref = _ref(xr, temperature=temperature)
    assert_close(out, ref, torch.float32)
    g = torch.randn(3, dtype=torch.float64)
    (gx,) = torch.autograd.grad(out, x, g.float())
    (gr,) = torch.autograd.grad(ref, xr, g)
    assert_close(gx, gr, torch.float32, grad=True)


def test_cpu_nan_and_inf_in_late_chunks():
    x = torch.randn(3, 7000)
    x[0, 6999] = float("nan")
    x[1, 4100] = float("inf")
    x[2, 2048:] = float("-inf")  # later chunks all -inf: entropy of the first chunk only
    out = thermokern.softmax_entropy(x, backend="cpu")
    assert torch.isnan(out[:2]).all()
    assert_close(out[2:], _ref(x[2:, :2048]), torch.float32)


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_triton_launches_on_the_tensors_device():
    """Triton launches on the current device: every launcher makes the tensor's device current
    (kernels/_common.launcher), so cuda:1 tensors work while cuda:0 is current."""
    if "triton" not in gpu_backends():
        pytest.skip("triton cannot run on the GPU here")
    torch.cuda.set_device(0)
    x = torch.randn(8, 300, device="cuda:1")
    t = torch.randint(0, 300, (8,), device="cuda:1")
    assert_close(thermokern.softmax_entropy(x, backend="triton").cpu(), _ref(x.cpu()), torch.float32)
    loss = thermokern.entropy_regularized_cross_entropy(x, t, reduction="none", backend="triton")
    assert_close(
        loss.cpu(),
        reference.entropy_regularized_cross_entropy(x.cpu().double(), t.cpu(), reduction="none"),
        torch.float32,
    )
    assert_close(
        thermokern.logsumexp(x, 1, backend="triton").cpu(),
        torch.logsumexp(x.cpu().double(), 1),
        torch.float32,
    )
    y = thermokern.langevin_step(x, x, step_size=0.1, seed=1, backend="triton")
    assert y.device == x.device
    torch.testing.assert_close(
        y.cpu(),
        thermokern.langevin_step(x.cpu(), x.cpu(), step_size=0.1, seed=1, backend="cpu"),
        rtol=1e-5,
        atol=1e-5,
    )
    assert torch.cuda.current_device() == 0


_PTX_CHECK = r"""
from _util import compile_sm90, sm90_dtypes, spill_bytes, vector_accesses
from thermokern.kernels._common import OUTPUT_LOGP, OUTPUT_LOSS, OUTPUT_NONE, _block_and_warps, _row_bwd_kernel, _row_fwd_kernel

none = {"OUTPUT": OUTPUT_NONE.value, "HAS_SMOOTHING": False, "HAS_ENTROPY": False, "HAS_Z_LOSS": False}
loss = {"OUTPUT": OUTPUT_LOSS.value, "HAS_SMOOTHING": True, "HAS_ENTROPY": True, "HAS_Z_LOSS": True}
logp = {"OUTPUT": OUTPUT_LOGP.value, "HAS_SMOOTHING": False, "HAS_ENTROPY": False, "HAS_Z_LOSS": False}
block, warps = _block_and_warps(131072)  # the launch of a long row on a GPU
for ty, acc_ty, acc in sm90_dtypes():
    types = {"x_ptr": ty, "grad_x_ptr": ty, "target_ptr": "*i64"}
    for flags in (none, loss, logp):
        consts = flags | {"INV_T_STRIDE": 1, "ACC": acc, "BLOCK_C": block}
        bwd = consts | {"HAS_ENTROPY_GRAD": flags is logp, "HAS_W1": True}
        for kernel, c in ((_row_fwd_kernel, consts), (_row_bwd_kernel, bwd)):
            n = spill_bytes(compile_sm90(kernel, c, types, ptr=acc_ty, num_warps=warps))
            assert not n, f"{kernel.fn.__name__} {ty} {flags}: {n} bytes of register spills"
            # aligned rows (what a GPU launch on aligned logits compiles): wide loads, and wide
            # stores of the gradient
            aligned = compile_sm90(kernel, c, types, ptr=acc_ty, num_warps=warps, aligned=True)
            loads, stores = vector_accesses(aligned)
            assert loads and (stores or kernel is _row_fwd_kernel), (kernel.fn.__name__, ty, flags, loads, stores)
print("ok")
"""


@pytest.mark.skipif("triton" not in cpu_backends(), reason="needs triton")
def test_triton_entropy_kernels_compile_for_sm90():
    """The row kernels (entropy, cross-entropy, token log-probs) lower to sm_90 code without a
    GPU (the interpreter runs them here but does not type-check them as the compiler does),
    without register spills at the tile they launch with, and with vector loads and stores
    when the logits are aligned."""
    run_offline_triton_compile(_PTX_CHECK)

"""token_logprobs: every backend that runs here x dtype vs float64, both outputs and the
backward that takes both upstream gradients."""

from __future__ import annotations

import math

import pytest
import torch
from _util import assert_close, run_offline_triton_compile
from conftest import HAS_GPU, cpu_backends, gpu_backends

import thermokern
from thermokern import reference

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
SHAPES = [(1, 1), (4, 7), (5, 33), (3, 2049), (2, 70000), (0, 10), (2, 3, 50)]


def _out_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _targets(shape, ignore_every=3):
    t = torch.randint(0, shape[-1], shape[:-1])
    t.view(-1)[::ignore_every] = -100
    return t


@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("temperature", ["scalar", "per-row"])
def test_matches_reference(backend, dtype, shape, temperature):
    x = (torch.randn(shape, dtype=torch.float64) * 3).to(dtype).requires_grad_(True)
    t = _targets(shape)
    temp = 0.8 if temperature == "scalar" else torch.rand(shape[:-1], dtype=torch.float64) + 0.5
    logp, h = thermokern.token_logprobs(x, t, temperature=temp, with_entropy=True, backend=backend)
    assert logp.dtype == h.dtype == _out_dtype(dtype) and logp.shape == h.shape == shape[:-1]
    xr = x.detach().double().requires_grad_(True)
    rl, rh = reference.token_logprobs(xr, t, temperature=temp, with_entropy=True)
    assert_close(logp, rl.detach(), dtype)
    assert_close(h, rh.detach(), dtype)
    ignored = t == -100
    assert (logp[ignored] == 0).all() and (h[ignored] == 0).all()
    assert torch.equal(
        thermokern.token_logprobs(x.detach(), t, temperature=temp, backend=backend), logp.detach()
    )
    if logp.numel() == 0:
        return
    gl, gh = torch.randn(shape[:-1], dtype=torch.float64), torch.randn(shape[:-1], dtype=torch.float64)
    (gx,) = torch.autograd.grad((logp * gl.to(logp.dtype)).sum() + (h * gh.to(h.dtype)).sum(), x)
    (gr,) = torch.autograd.grad((rl * gl).sum() + (rh * gh).sum(), xr)
    assert gx.dtype == dtype
    assert_close(gx, gr, dtype, grad=True, grad_scale=float(gl.abs().max() + gh.abs().max()) * 2)
    assert (gx[ignored] == 0).all()
    # only the log-probs: the backward without an entropy gradient
    (gx1,) = torch.autograd.grad(thermokern.token_logprobs(x, t, temperature=temp, backend=backend).sum(), x)
    (gr1,) = torch.autograd.grad(reference.token_logprobs(xr, t, temperature=temp).sum(), xr)
    assert_close(gx1, gr1, dtype, grad=True, grad_scale=2.0)


@pytest.mark.parametrize("backend", cpu_backends())
def test_confident_bf16_and_masked_logits(backend):
    """bf16 logits with one dominant token (logp near 0, tiny gradients) and -inf entries."""
    x = torch.randn(8, 300, dtype=torch.float64)
    t = torch.randint(0, 300, (8,))
    x[torch.arange(8), t] = 40.0
    x[:, 7] = -math.inf
    t[0] = 7  # the target is masked: logp = -inf
    xb = x.to(torch.bfloat16)
    logp, h = thermokern.token_logprobs(xb, t, with_entropy=True, backend=backend)
    rl, rh = reference.token_logprobs(xb.double(), t, with_entropy=True)
    assert logp[0] == -math.inf
    assert_close(logp[1:], rl[1:], torch.bfloat16)
    assert_close(h, rh, torch.bfloat16)


@pytest.mark.parametrize("backend", cpu_backends())
def test_learnable_temperature(backend):
    x = torch.randn(6, 40, dtype=torch.float64, requires_grad=True)
    t = _targets((6, 40))
    temp = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    logp, h = thermokern.token_logprobs(x, t, temperature=temp, with_entropy=True, backend=backend)
    (logp.sum() + h.sum()).backward()
    xr, tr = x.detach().requires_grad_(True), temp.detach().requires_grad_(True)
    rl, rh = reference.token_logprobs(xr, t, temperature=tr, with_entropy=True)
    (rl.sum() + rh.sum()).backward()
    assert_close(temp.grad, tr.grad, torch.float64, grad=True)
    assert_close(x.grad, xr.grad, torch.float64, grad=True)


@pytest.mark.parametrize("backend", cpu_backends())
def test_gradcheck(backend):
    x = torch.randn(3, 9, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([2, -100, 8])

    def f(x):
        logp, h = thermokern.token_logprobs(x, t, temperature=1.3, with_entropy=True, backend=backend)
        return logp, h

    assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-7)


def test_errors():
    x = torch.randn(4, 5)
    with pytest.raises(ValueError, match="target"):
        thermokern.token_logprobs(x, torch.tensor([0, 1, 5, 2]))
    with pytest.raises(TypeError, match="target"):
        thermokern.token_logprobs(x, torch.zeros(4))
    with pytest.raises(ValueError, match="target"):
        thermokern.token_logprobs(x, torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match="with_entropy"):
        thermokern.token_logprobs(x, torch.zeros(4, dtype=torch.long), with_entropy=1)
    with pytest.raises(ValueError, match="temperature"):
        thermokern.token_logprobs(x, torch.zeros(4, dtype=torch.long), temperature=0.0)
    with pytest.raises(TypeError, match="logits"):
        thermokern.token_logprobs(torch.zeros(4, 5, dtype=torch.long), torch.zeros(4, dtype=torch.long))


_PTX_CHECK = r"""
from _util import compile_sm90, sm90_dtypes
from thermokern.kernels._common import OUTPUT_LOGP, _row_bwd_kernel, _row_fwd_kernel

flags = {"INV_T_STRIDE": 1, "OUTPUT": OUTPUT_LOGP.value, "HAS_SMOOTHING": False, "HAS_ENTROPY": False,
         "HAS_Z_LOSS": False}
for ty, acc_ty, acc in sm90_dtypes():
    types = {"x_ptr": ty, "grad_x_ptr": ty, "target_ptr": "*i64"}
    compile_sm90(_row_fwd_kernel, flags | {"ACC": acc, "BLOCK_C": 4096}, types, ptr=acc_ty)
    for grad_h in (False, True):
        consts = flags | {"HAS_ENTROPY_GRAD": grad_h, "HAS_W1": grad_h, "ACC": acc, "BLOCK_C": 4096}
        compile_sm90(_row_bwd_kernel, consts, types, ptr=acc_ty)
print("ok")
"""


@pytest.mark.skipif("triton" not in cpu_backends(), reason="needs triton")
def test_triton_kernels_compile_for_sm90():
    """The Triton kernels lower to sm_90 code without a GPU (the interpreter runs them here but
    does not type-check them as the compiler does)."""
    run_offline_triton_compile(_PTX_CHECK)


gpu = pytest.mark.skipif(not HAS_GPU, reason="needs an NVIDIA GPU")


@pytest.mark.cuda
@gpu
@pytest.mark.parametrize("backend", gpu_backends() or ["cuda"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(64, 32000), (3, 131072), (1000, 7)], ids=str)
def test_gpu_matches_reference(backend, dtype, shape):
    x = (torch.randn(shape, dtype=torch.float64) * 3).to(dtype)
    t = _targets(shape)
    xc = x.cuda().requires_grad_(True)
    logp, h = thermokern.token_logprobs(xc, t.cuda(), temperature=0.9, with_entropy=True, backend=backend)
    xr = x.double().requires_grad_(True)
    rl, rh = reference.token_logprobs(xr, t, temperature=0.9, with_entropy=True)
    assert_close(logp.cpu(), rl.detach(), dtype)
    assert_close(h.cpu(), rh.detach(), dtype)
    g = torch.randn(shape[0], dtype=torch.float64)
    (gx,) = torch.autograd.grad((logp * g.cuda().to(logp.dtype)).sum() + h.sum(), xc)
    (gr,) = torch.autograd.grad((rl * g).sum() + rh.sum(), xr)
    assert_close(gx.cpu(), gr, dtype, grad=True, grad_scale=4.0)

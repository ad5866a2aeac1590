"""torch.library.opcheck on the C++ ops (schema, fake kernels, autograd registration)."""

from __future__ import annotations

import pytest
import torch

import thermokern  # noqa: F401  (registers the ops)
from thermokern.ops import cross_entropy, partition, softmax_entropy, token_logprobs  # noqa: F401  (registrations)

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def _devices():
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _cases(*shapes):
    """Parametrize a test over every device, dtype and the given input shapes."""

    def decorate(test):
        test = pytest.mark.parametrize("shape", shapes, ids=str)(test)
        test = pytest.mark.parametrize("dtype", DTYPES, ids=str)(test)
        return pytest.mark.parametrize("device", _devices())(test)

    return decorate


def _input(shape, device, dtype):
    """Random input of ``shape`` and its accumulation dtype."""
    x = torch.randn(shape, device=device, dtype=dtype)
    return x, torch.float64 if dtype == torch.float64 else torch.float32


def _rows_with_targets(shape, device, dtype):
    """Logits, per-row inverse temperatures and targets (row 1 ignored, index -100)."""
    x, acc = _input(shape, device, dtype)
    inv_t = torch.rand(shape[0], device=device, dtype=acc) + 0.5
    target = torch.randint(0, shape[1], (shape[0],), device=device)
    if shape[0] > 1:
        target[1] = -100
    return x, acc, inv_t, target


def _opcheck_fwd(fwd, x, *args):
    """opcheck ``fwd(x, *args)`` without and with an input that requires grad; its outputs."""
    torch.library.opcheck(fwd, (x, *args))
    torch.library.opcheck(fwd, (x.clone().requires_grad_(True), *args))
    return fwd(x, *args)


@_cases((3, 7), (2, 2500), (0, 5))
def test_opcheck_softmax_entropy(device, dtype, shape):
    x, acc = _input(shape, device, dtype)
    inv_t = torch.full((1,), 1 / 0.9, device=device, dtype=acc)
    per_row = torch.rand(shape[0], device=device, dtype=acc) + 0.5
    fwd = torch.ops.thermokern.softmax_entropy_fwd.default
    torch.library.opcheck(fwd, (x, inv_t))
    xg = x.clone().requires_grad_(True)
    torch.library.opcheck(fwd, (xg, per_row))
    h, mx, ln = fwd(x, inv_t)
    g = torch.randn(shape[0], device=device, dtype=dtype)
    torch.library.opcheck(torch.ops.thermokern.softmax_entropy_bwd.default, (g, x, inv_t, h, mx, ln))
    torch.library.opcheck(torch.ops.thermokern.softmax_entropy_bwd_.default, (g, x.clone(), inv_t, h, mx, ln))


@_cases((5, 7), (3, 2500), (0, 5))
def test_opcheck_cross_entropy(device, dtype, shape):
    x, acc, inv_t, target = _rows_with_targets(shape, device, dtype)
    params = (0.3, 0.1, -100, 1e-3)
    _loss, h, mx, ln = _opcheck_fwd(torch.ops.thermokern.cross_entropy_fwd.default, x, target, inv_t, *params)
    g = torch.randn(shape[0], device=device, dtype=acc)
    bwd = torch.ops.thermokern.cross_entropy_bwd.default
    torch.library.opcheck(bwd, (g, x, target, inv_t, h, mx, ln, *params))
    torch.library.opcheck(
        torch.ops.thermokern.cross_entropy_bwd_.default, (g, x.clone(), target, inv_t, h, mx, ln, *params)
    )


@_cases((5, 7), (3, 2500), (0, 5))
def test_opcheck_token_logprobs(device, dtype, shape):
    x, acc, inv_t, target = _rows_with_targets(shape, device, dtype)
    _logp, h, mx, ln = _opcheck_fwd(torch.ops.thermokern.token_logprobs_fwd.default, x, target, inv_t, -100)
    gl, gh = (torch.randn(shape[0], device=device, dtype=acc) for _ in range(2))
    bwd = torch.ops.thermokern.token_logprobs_bwd.default
    torch.library.opcheck(bwd, (gl, gh, x, target, inv_t, h, mx, ln, -100))
    torch.library.opcheck(bwd, (gl, None, x, target, inv_t, h, mx, ln, -100))
    bwd_ = torch.ops.thermokern.token_logprobs_bwd_.default
    torch.library.opcheck(bwd_, (gl, gh, x.clone(), target, inv_t, h, mx, ln, -100))


@_cases((3, 7, 1), (2, 2500, 1), (2, 9, 20))
@pytest.mark.parametrize("extras", ["none", "weight", "mask", "broadcast"])
def test_opcheck_partition(device, dtype, shape, extras):
    x, acc = _input(shape, device, dtype)
    n = shape[0] * shape[2]
    scale = torch.rand(n, device=device, dtype=acc) + 0.5
    weight = torch.randn(shape, device=device, dtype=dtype) if extras == "weight" else None
    mask = torch.rand(shape, device=device) > 0.3 if extras == "mask" else None
    if extras == "broadcast":  # stride-0 views, as logsumexp passes broadcast arguments
        weight = torch.randn(1, shape[1], 1, device=device, dtype=dtype).expand(shape)
        mask = (torch.rand(shape[0], 1, shape[2], device=device) > 0.3).expand(shape)
    fwd = torch.ops.thermokern.partition_fwd.default
    moments = 0 if extras == "weight" else 2
    torch.library.opcheck(fwd, (x, weight, mask, scale, True, moments))
    xg = x.clone().requires_grad_(True)
    wg = None if weight is None else weight.clone().requires_grad_(True)
    torch.library.opcheck(fwd, (xg, wg, mask, scale, False, moments))
    shift, total, _, _ = fwd(x, weight, mask, scale, False, 0)
    coef = torch.randn(n, 3, device=device, dtype=acc)
    log_norm = total.abs().log()
    bwd = torch.ops.thermokern.partition_bwd.default
    torch.library.opcheck(bwd, (x, weight, mask, scale, False, shift, log_norm, coef, weight is not None))

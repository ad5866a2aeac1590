"""Gradients w.r.t. a temperature tensor (a learnable T): every op that takes ``temperature``
differentiates it when the tensor requires grad, on every backend and dtype."""

from __future__ import annotations

import pytest
import torch
from _util import DTYPES, assert_close
from conftest import HAS_GPU, cpu_backends, gpu_backends

import thermokern
from thermokern import reference

BACKENDS = cpu_backends()


def _entropy(x, t, backend):
    return thermokern.softmax_entropy(x, 1, temperature=t, backend=backend)


def _ce(x, t, backend):
    target = torch.tensor([1, 4, -100, 0, 2], device=x.device)[: x.shape[0]]
    return thermokern.entropy_regularized_cross_entropy(
        x, target, temperature=t, entropy_weight=0.3, label_smoothing=0.1, z_loss_weight=0.01,
        reduction="none", backend=backend,
    )  # fmt: skip


def _log_z(x, t, backend):
    return thermokern.log_partition(x, 1, temperature=t, backend=backend)


def _free_energy(x, t, backend):
    return thermokern.free_energy(x, 1, temperature=t, keepdim=True, backend=backend)


def _stats(x, t, backend):
    return torch.stack(list(thermokern.thermo_stats(x, 1, temperature=t, backend=backend)))


# Float64 truths written out from the definitions on z = x / T (pure torch, no thermokern op).
def _entropy_ref(x, t):
    z = x / t.reshape(-1, 1)
    return -(torch.softmax(z, 1) * torch.log_softmax(z, 1)).sum(1)


def _ce_ref(x, t):
    target = torch.tensor([1, 4, -100, 0, 2])[: x.shape[0]]
    return reference.entropy_regularized_cross_entropy(
        x / t.reshape(-1, 1), target, entropy_weight=0.3, label_smoothing=0.1, z_loss_weight=0.01,
        reduction="none",
    )  # fmt: skip


def _log_z_ref(x, t):
    return torch.logsumexp(-x / t.reshape(-1, 1), 1)


def _free_energy_ref(x, t):
    return (-t * _log_z_ref(x, t)).reshape(-1, 1)


def _stats_ref(x, t):
    tt = t.reshape(-1, 1)
    log_z = _log_z_ref(x, t)
    p = torch.softmax(-x / tt, 1)
    u = (p * x).sum(1)
    var = (p * (x - u.reshape(-1, 1)) ** 2).sum(1)
    return torch.stack([log_z, -t * log_z, u, (u + t * log_z) / t, var / t**2])


OPS = [
    ("softmax_entropy", _entropy, _entropy_ref),
    ("cross_entropy", _ce, _ce_ref),
    ("log_partition", _log_z, _log_z_ref),
    ("free_energy", _free_energy, _free_energy_ref),
    ("thermo_stats", _stats, _stats_ref),
]
IDS = [name for name, _, _ in OPS]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", OPS, ids=IDS)
def test_temperature_gradcheck(backend, op):
    _, fn, _ = op
    x = torch.randn(4, 9, dtype=torch.float64, requires_grad=True)
    per_row = (torch.rand(4, dtype=torch.float64) + 0.5).requires_grad_(True)
    one = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, t: fn(x, t, backend), (x, per_row))
    assert torch.autograd.gradcheck(lambda x, t: fn(x, t, backend), (x, one))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", OPS, ids=IDS)
def test_temperature_grad_matches_reference(backend, dtype, op):
    _, fn, ref_fn = op
    x = (torch.randn(5, 300, dtype=torch.float64) * 2).to(dtype).requires_grad_(True)
    t = (torch.rand(5, dtype=torch.float64) + 0.5).to(dtype).requires_grad_(True)
    out = fn(x, t, backend)
    # the value is that of the op with the temperature detached (the usual kernel path)
    assert_close(out, fn(x.detach(), t.detach(), backend).double(), dtype)
    xr = x.detach().double().requires_grad_(True)
    tr = t.detach().double().requires_grad_(True)
    ref = ref_fn(xr, tr)
    assert_close(out, ref, dtype)
    g = torch.randn(ref.shape, dtype=torch.float64)
    gx, gt = torch.autograd.grad(out, (x, t), g.to(out.dtype))
    rgx, rgt = torch.autograd.grad(ref, (xr, tr), g)
    assert gx.dtype == dtype and gt.dtype == dtype
    assert_close(gx, rgx, dtype, grad=True)
    assert_close(gt, rgt, dtype, grad=True)


def test_temperature_grad_several_dims_and_keepdim():
    e = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    t = (torch.rand(4, dtype=torch.float64) + 0.5).requires_grad_(True)
    for keepdim in (False, True):

        def f(e, t, keepdim=keepdim):
            return thermokern.free_energy(e, (0, 2), temperature=t, keepdim=keepdim, backend="cpu")

        assert torch.autograd.gradcheck(f, (e, t))
    stats = thermokern.thermo_stats(e, (0, 2), temperature=t, backend="cpu")
    assert stats.log_z.shape == (4,)
    assert torch.autograd.gradcheck(
        lambda e, t: thermokern.thermo_stats(e, (0, 2), temperature=t, backend="cpu").heat_capacity, (e, t)
    )


def test_temperature_requiring_grad_without_grad_mode():
    x = torch.randn(3, 8)
    t = torch.full((3,), 0.5, requires_grad=True)
    with torch.no_grad():
        h = thermokern.softmax_entropy(x, temperature=t)
    assert not h.requires_grad
    assert_close(h, _entropy_ref(x.double(), t.detach().double()), torch.float32)


def test_temperature_grad_checks_values():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="temperature"):
        thermokern.softmax_entropy(x, temperature=torch.tensor([1.0, 0.0, 1.0, 1.0], requires_grad=True))
    with pytest.raises(ValueError, match="temperature"):
        thermokern.log_partition(x, temperature=torch.ones(3, requires_grad=True))  # not (4,)


def test_distributed_rejects_temperature_grad():
    # a replicated temperature would get only this rank's part of its gradient: refused
    with pytest.raises(ValueError, match="temperature"):
        thermokern.distributed.softmax_entropy(
            torch.randn(2, 3), temperature=torch.ones(2, requires_grad=True)
        )


def test_nn_parameter_temperature_is_learned():
    t = torch.nn.Parameter(torch.tensor(2.0))
    module = thermokern.nn.SoftmaxEntropy(temperature=t, reduction="mean")
    assert any(p is t for p in module.parameters())
    module(torch.randn(4, 6)).backward()
    assert t.grad is not None and torch.isfinite(t.grad)
    buffered = thermokern.nn.EntropyRegularizedCrossEntropyLoss(temperature=torch.ones(4))
    assert "temperature" in dict(buffered.named_buffers())


def test_temperature_grad_under_compile():
    x = torch.randn(4, 50, requires_grad=True)
    t = torch.nn.Parameter(torch.rand(4) + 0.5)

    def loss(x, t):
        h = thermokern.softmax_entropy(x, temperature=t, backend="cpu")
        return (h + thermokern.free_energy(x, temperature=t, backend="cpu")).sum()

    compiled = torch.compile(loss, fullgraph=True)
    got = torch.autograd.grad(compiled(x, t), (x, t))
    want = torch.autograd.grad(loss(x, t), (x, t))
    for a, b in zip(got, want):
        assert_close(a, b.double(), torch.float32, grad=True)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_GPU, reason="needs an NVIDIA GPU")
@pytest.mark.parametrize("backend", gpu_backends() or ["cuda"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("op", OPS, ids=IDS)
def test_gpu_temperature_grad(backend, dtype, op):
    _, fn, ref_fn = op
    x = (torch.randn(5, 3000, dtype=torch.float64) * 2).to(dtype)
    t = (torch.rand(5, dtype=torch.float64) + 0.5).to(dtype)
    xg, tg = x.cuda().requires_grad_(True), t.cuda().requires_grad_(True)
    out = fn(xg, tg, backend)
    xr, tr = x.double().requires_grad_(True), t.double().requires_grad_(True)
    ref = ref_fn(xr, tr)
    assert_close(out.cpu(), ref, dtype)
    g = torch.randn(ref.shape, dtype=torch.float64)
    got = torch.autograd.grad(out, (xg, tg), g.to(out.dtype).cuda())
    for a, b in zip(got, torch.autograd.grad(ref, (xr, tr), g)):
        assert_close(a.cpu(), b, dtype, grad=True)

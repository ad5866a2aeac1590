"""entropy_regularized_cross_entropy: every backend that runs here x dtype vs float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _util import assert_close
from conftest import HAS_GPU, cpu_backends, gpu_backends
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import thermokern
from thermokern import reference

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
# (entropy_weight, label_smoothing, z_loss_weight)
PARAMS = [(0.0, 0.0, 0.0), (0.5, 0.0, 0.0), (-0.3, 0.1, 1e-3), (1.0, 1.0, 0.0)]
SHAPES = [
    (1, 1),  # one class
    (4, 7),  # scalar tails
    (5, 33),
    (3, 2049),  # a CPU chunk + 1
    (2, 70000),  # many chunks / Triton blocks
    (0, 10),  # no rows
]


def _loss_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _targets(n, c, ignore_every=3, device="cpu"):
    t = torch.randint(0, c, (n,), device=device)
    t[::ignore_every] = -100
    return t


def _ref(x, t, **kw):
    return reference.entropy_regularized_cross_entropy(x.double(), t, **kw)


def _check_value_and_grad(out, x, ref, xr, dtype, grad_scale=1.0):
    """``out`` (from input ``x``) against ``ref`` (from ``xr``), and the gradients of their sums."""
    assert_close(out, ref.detach(), dtype)
    (gx,) = torch.autograd.grad(out.sum(), x)
    (gr,) = torch.autograd.grad(ref.sum(), xr)
    assert_close(gx, gr, dtype, grad=True, grad_scale=grad_scale)


@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("params", PARAMS, ids=str)
def test_matches_reference(backend, dtype, shape, params):
    beta, eps, zw = params
    x = (torch.randn(shape, dtype=torch.float64) * 3).to(dtype).requires_grad_(True)
    t = _targets(shape[0], shape[1])
    kw = {"entropy_weight": beta, "label_smoothing": eps, "z_loss_weight": zw, "temperature": 0.8}
    out = thermokern.entropy_regularized_cross_entropy(x, t, reduction="none", backend=backend, **kw)
    assert out.dtype == _loss_dtype(dtype) and out.shape == shape[:-1]
    xr = x.detach().double().requires_grad_(True)
    ref = _ref(xr, t, reduction="none", **kw)
    assert_close(out, ref.detach(), dtype)
    if shape[0] == 0:
        return
    g = torch.randn(shape[0], dtype=torch.float64)
    (gx,) = torch.autograd.grad(out, x, g.to(out.dtype))
    (gr,) = torch.autograd.grad(ref, xr, g)
    assert gx.dtype == dtype
    assert_close(gx, gr, dtype, grad=True, grad_scale=float(g.abs().max()) / 0.8)


@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("eps", [0.0, 0.2])
@pytest.mark.parametrize("ignore", ["none", "some", "all"])
def test_equals_cross_entropy_without_entropy_term(backend, reduction, eps, ignore):
    x = torch.randn(6, 11, 13, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 13, (6, 11))
    if ignore == "some":
        t[:, ::4] = 7 - 100  # a custom ignore_index
    elif ignore == "all":
        t[:] = -93
    out = thermokern.entropy_regularized_cross_entropy(
        x, t, temperature=1.7, label_smoothing=eps, ignore_index=-93, reduction=reduction, backend=backend
    )
    ref = F.cross_entropy(
        (x / 1.7).permute(0, 2, 1), t, label_smoothing=eps, ignore_index=-93, reduction=reduction
    )
    if ignore == "all" and reduction == "mean":
        assert torch.isnan(out) and torch.isnan(ref)  # 0 / 0, as PyTorch
        return
    _check_value_and_grad(out, x, ref, x, torch.float64)


@pytest.mark.parametrize("backend", cpu_backends())
def test_gradcheck_float64(backend):
    x = torch.randn(5, 9, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 8, -100, 3, 4])
    temp = torch.rand(5, dtype=torch.float64) + 0.5
    for reduction in ("mean", "none"):
        assert torch.autograd.gradcheck(
            lambda z, reduction=reduction: thermokern.entropy_regularized_cross_entropy(
                z, t, entropy_weight=0.4, label_smoothing=0.1, z_loss_weight=0.01,
                temperature=temp, reduction=reduction, backend=backend,
            ),
            (x,),
        )  # fmt: skip


@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_per_row_temperature(backend, dtype):
    x = torch.randn(4, 5, 300, dtype=dtype, requires_grad=True)
    t = torch.randint(0, 300, (4, 5))
    for temp in (torch.rand(4, 5) * 3 + 0.1, torch.rand(4, 1) + 0.5, torch.tensor(0.7)):
        kw = {"entropy_weight": 0.2, "temperature": temp, "reduction": "none"}
        out = thermokern.entropy_regularized_cross_entropy(x, t, backend=backend, **kw)
        xr = x.detach().double().requires_grad_(True)
        ref = _ref(xr, t, **kw)
        _check_value_and_grad(out, x, ref, xr, dtype, grad_scale=1 / float(temp.min()))
        # softmax_entropy takes the same per-row temperatures
        h = thermokern.softmax_entropy(x, temperature=temp, backend=backend)
        assert_close(h, reference.softmax_entropy(x.detach().double(), temperature=temp.double()), dtype)


@pytest.mark.parametrize("backend", cpu_backends())
def test_confident_prediction_bf16_gradient(backend):
    """p_target ~ 0.999: the target's gradient p - 1 ~ -1e-3 must stay accurate in bf16."""
    C = 1000
    x = torch.zeros(8, C)
    t = torch.arange(8) * 7
    x[torch.arange(8), t] = torch.log(torch.tensor(0.999 * (C - 1) / 0.001))
    x = x.bfloat16().requires_grad_(True)
    out = thermokern.entropy_regularized_cross_entropy(x, t, reduction="sum", backend=backend)
    (gx,) = torch.autograd.grad(out, x)
    xr = x.detach().double().requires_grad_(True)
    (gr,) = torch.autograd.grad(_ref(xr, t, reduction="sum"), xr)
    g_t, r_t = gx[torch.arange(8), t].double(), gr[torch.arange(8), t]
    assert (r_t - -1e-3).abs().max() < 2e-4  # the setup really is p_target ~ 0.999
    assert ((g_t - r_t).abs() / r_t.abs()).max() < 1e-2  # bf16 rounding of the result only


@pytest.mark.parametrize("backend", cpu_backends())
def test_extreme_and_masked_logits(backend):
    C = 5000
    x = torch.randn(5, C, dtype=torch.float64)
    x[0] *= 1e4
    x[1] = -1e4 + torch.randn(C)
    x[2, ::3] = float("-inf")
    x[3, :4100] = float("-inf")
    x = x.float()
    t = torch.tensor([5, 6, 7, 4200, 9])  # targets on live entries
    kw = {"entropy_weight": 0.5, "reduction": "none"}
    out = thermokern.entropy_regularized_cross_entropy(x, t, backend=backend, **kw)
    assert torch.isfinite(out).all()
    assert_close(out, _ref(x, t, **kw), torch.float32, native=_ref(x.float(), t, **kw).float())


@pytest.mark.parametrize("backend", cpu_backends())
def test_large_vocabulary(backend):
    C = 262144
    x = torch.randn(2, C).requires_grad_(True)
    t = torch.tensor([C - 1, 12345])
    out = thermokern.entropy_regularized_cross_entropy(
        x, t, entropy_weight=0.1, reduction="none", backend=backend
    )
    xr = x.detach().double().requires_grad_(True)
    ref = _ref(xr, t, entropy_weight=0.1, reduction="none")
    _check_value_and_grad(out, x, ref, xr, torch.float32)


@pytest.mark.parametrize("backend", cpu_backends())
def test_target_out_of_range_is_a_clear_error(backend):
    x = torch.randn(3, 5)
    for bad in (5, -1, 100):
        t = torch.tensor([0, bad, 1])
        with pytest.raises(ValueError, match="target"):
            thermokern.entropy_regularized_cross_entropy(x, t, backend=backend)


def test_argument_errors():
    x = torch.randn(3, 5)
    t = torch.tensor([0, 1, 2])
    f = thermokern.entropy_regularized_cross_entropy
    with pytest.raises(TypeError, match="target"):
        f(x, t.float())
    with pytest.raises(ValueError, match="target"):
        f(x, torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="logits"):
        f(t, t)
    with pytest.raises(ValueError, match="reduction"):
        f(x, t, reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        f(x, t, label_smoothing=1.5)
    with pytest.raises(ValueError, match="z_loss_weight"):
        f(x, t, z_loss_weight=-1.0)
    with pytest.raises(ValueError, match="entropy_weight"):
        f(x, t, entropy_weight=float("nan"))
    with pytest.raises(ValueError, match="temperature"):
        f(x, t, temperature=0.0)
    with pytest.raises(TypeError, match="ignore_index"):
        f(x, t, ignore_index=1.5)


def test_compile_fullgraph_cpu():
    torch._dynamo.reset()

    def loss_fn(x, t):
        return thermokern.entropy_regularized_cross_entropy(
            x, t, entropy_weight=0.1, label_smoothing=0.05, backend="cpu"
        )

    compiled = torch.compile(loss_fn, fullgraph=True)
    x = torch.randn(16, 100, requires_grad=True)
    t = torch.randint(0, 100, (16,))
    out = compiled(x, t)
    (gx,) = torch.autograd.grad(out, x)
    xr = x.detach().double().requires_grad_(True)
    ref = _ref(xr, t, entropy_weight=0.1, label_smoothing=0.05)
    (gr,) = torch.autograd.grad(ref, xr)
    assert_close(out.detach(), ref.detach(), torch.float32)
    assert_close(gx, gr, torch.float32, grad=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 6),
    c=st.sampled_from([1, 2, 31, 2047, 2049, 5000]),
    dtype=st.sampled_from(DTYPES),
    beta=st.floats(-1, 1),
    eps=st.sampled_from([0.0, 0.1, 1.0]),
    zw=st.sampled_from([0.0, 1e-2]),
    temp=st.floats(0.1, 5.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_fuzz_cpu(n, c, dtype, beta, eps, zw, temp, seed):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, c, generator=g, dtype=torch.float64) * 4).to(dtype).requires_grad_(True)
    t = torch.randint(0, c, (n,), generator=g)
    t[torch.rand(n, generator=g) < 0.2] = -100
    kw = {
        "entropy_weight": beta,
        "label_smoothing": eps,
        "z_loss_weight": zw,
        "temperature": temp,
        "reduction": "none",
    }
    out = thermokern.entropy_regularized_cross_entropy(x, t, backend="cpu", **kw)
    xr = x.detach().double().requires_grad_(True)
    ref = _ref(xr, t, **kw)
    xn = x.detach().clone().requires_grad_(True)
    nat = reference.entropy_regularized_cross_entropy(xn, t, **kw)
    assert_close(out, ref.detach(), dtype, native=nat.detach())
    w = torch.randn(n, generator=g, dtype=torch.float64)
    (gx,) = torch.autograd.grad(out, x, w.to(out.dtype))
    (gr,) = torch.autograd.grad(ref, xr, w)
    (gn,) = torch.autograd.grad(nat, xn, w.to(nat.dtype))
    assert_close(
        gx, gr, dtype, grad=True, native=gn, grad_scale=float(w.abs().max()) * (1 + abs(beta)) / temp
    )


# ----------------------------------------------------------------------------- GPU
gpu = pytest.mark.skipif(not HAS_GPU, reason="needs an NVIDIA GPU")


@pytest.mark.cuda
@gpu
@pytest.mark.parametrize("backend", gpu_backends() or ["cuda"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES + [(64, 32000), (3, 262144)], ids=str)
@pytest.mark.parametrize("params", PARAMS, ids=str)
def test_gpu_matches_reference(backend, dtype, shape, params):
    beta, eps, zw = params
    x = (torch.randn(shape, device="cuda", dtype=torch.float64) * 3).to(dtype).requires_grad_(True)
    t = _targets(shape[0], shape[1], device="cuda")
    kw = {
        "entropy_weight": beta,
        "label_smoothing": eps,
        "z_loss_weight": zw,
        "temperature": 0.8,
        "reduction": "none",
    }
    out = thermokern.entropy_regularized_cross_entropy(x, t, backend=backend, **kw)
    xr = x.detach().cpu().double().requires_grad_(True)
    ref = _ref(xr, t.cpu(), **kw)
    assert_close(out.cpu(), ref.detach(), dtype)
    if shape[0]:
        (gx,) = torch.autograd.grad(out.sum(), x)
        (gr,) = torch.autograd.grad(ref.sum(), xr)
        assert_close(gx.cpu(), gr, dtype, grad=True, grad_scale=1 / 0.8)


@pytest.mark.cuda
@gpu
@pytest.mark.parametrize("backend", gpu_backends() or ["cuda"])
def test_gpu_invalid_target_error_and_graph_capture(backend):
    x = torch.randn(4, 10, device="cuda")
    with pytest.raises(ValueError, match="target"):
        thermokern.entropy_regularized_cross_entropy(
            x, torch.tensor([0, 10, 1, 2], device="cuda"), backend=backend
        )
    # No host sync: the op can be captured in a CUDA graph and replayed.
    t = torch.tensor([0, 3, -100, 9], device="cuda")
    out = thermokern.entropy_regularized_cross_entropy(x, t, entropy_weight=0.1, backend=backend)  # warm-up
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = thermokern.entropy_regularized_cross_entropy(x, t, entropy_weight=0.1, backend=backend)
    x.copy_(torch.randn_like(x))
    graph.replay()
    expected = thermokern.entropy_regularized_cross_entropy(x, t, entropy_weight=0.1, backend=backend)
    assert torch.allclose(captured, expected)
    del out


@pytest.mark.cuda
@pytest.mark.slow
@gpu
@pytest.mark.parametrize("backend", gpu_backends() or ["cuda"])
def test_gpu_more_than_2_31_elements(backend):
    """N * C > 2^31: int64 offsets (bf16, 8.6 GB of logits)."""
    free, _ = torch.cuda.mem_get_info()
    N, C = 16400, 131072  # 2.15e9 elements
    if free < N * C * 2 * 3:
        pytest.skip("not enough GPU memory")
    x = torch.zeros(N, C, device="cuda", dtype=torch.bfloat16)
    t = torch.full((N,), C - 1, device="cuda")
    x[-1, -1] = 5.0  # only the last row differs: its loss must reflect the last element
    out = thermokern.entropy_regularized_cross_entropy(x, t, reduction="none", backend=backend)
    uniform = torch.log(torch.tensor(float(C)))
    assert torch.allclose(out[:-1].cpu(), uniform.expand(N - 1), rtol=1e-5)
    last = -torch.log_softmax(x[-1].float(), 0)[-1].cpu()
    assert torch.allclose(out[-1].cpu(), last, rtol=1e-4)
    del x

"""thermokern.optim.SGLD and its multi-tensor op sgld_step_: the fused step against the
per-tensor reference (values and noise) on every CPU-runnable backend, the counter layout
(grad=None, groups added later), one launch per (group, device, dtype), state_dict round trips,
weight decay, param groups, torch.compile / opcheck, errors, and the stationary variance of
SGLD on a quadratic loss."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from _util import DTYPES, assert_close, counter_starts, counters
from conftest import HAS_GPU, cpu_backends, gpu_backends
from torch.utils._python_dispatch import TorchDispatchMode

import thermokern
from thermokern import reference
from thermokern.optim import SGLD

# Shapes chosen to hit each code path: a Philox counter covers 4 elements; (1,) and (5, 7)
# end in a partial counter; (3, 43) spans two AVX-512 SIMD groups plus a partial counter;
# (2, 3, 43) is one CPU block (64 counters) plus 2 elements; (0, 3) is empty (no counters).
SHAPES = [(1,), (4,), (5, 7), (3, 43), (0, 3), (2, 3, 43)]
# > 16K counters (the CPU task grain): the parallel region splits this tensor across tasks.
LARGE = (301, 223)

# Normals across backends: 1e-6 relative (float32 series ~3e-7), plus an absolute floor.
NOISE_TOL = {torch.float32: (1e-7, 1e-6), torch.float64: (1e-14, 1e-12)}


def _make_params(shapes, dtype, *, non_contiguous=(), scale=1.0):
    """Leaf parameters; indices in ``non_contiguous`` get transposed (strided) storage."""
    out = []
    for i, shape in enumerate(shapes):
        if i in non_contiguous and len(shape) >= 2:
            base = torch.randn(tuple(reversed(shape)), dtype=torch.float64) * scale
            t = base.to(dtype).transpose(0, len(shape) - 1)
            assert not t.is_contiguous()
        else:
            t = (torch.randn(shape, dtype=torch.float64) * scale).to(dtype)
        out.append(torch.nn.Parameter(t))
    return out


def _expected_step(params, grads, starts, *, lr, temperature, wd, seed, offset):
    """The specification: per tensor, the float64 reference langevin_step of the (rounded)
    inputs with grad + wd * p at offset + start (None grads: unchanged)."""
    out = []
    for p, g, s in zip(params, grads, starts, strict=True):
        if g is None:
            out.append(p.detach().double().clone())
            continue
        x = p.detach().double()
        out.append(
            reference.langevin_step(
                x, g.double() + wd * x, step_size=lr, temperature=temperature, seed=seed, offset=offset + s
            )
        )
    return out


# ----------------------------------------------------------------------------- values
@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fused_step_matches_per_tensor_reference(backend, dtype):
    """Two groups with their own lr/temperature/weight_decay; every shape, a non-contiguous
    param, a non-contiguous grad and a param without grad; two steps."""
    shapes = SHAPES + [(6, 5)]
    params = _make_params(shapes, dtype, non_contiguous={2, 6})
    extra = _make_params([(9, 4), (3,)], dtype)
    hp = [
        {"lr": 0.05, "temperature": 0.7, "weight_decay": 0.1},
        {"lr": 0.2, "temperature": 1.5, "weight_decay": 0.0},
    ]
    opt = SGLD(
        [{"params": params, **hp[0]}, {"params": extra, **hp[1]}],
        lr=1.0,
        seed=2**63 + 11,
        backend=backend,
    )
    everything = params + extra
    starts, total = counter_starts(everything)
    for step in range(2):
        grads = []
        for i, p in enumerate(everything):
            if i == 3:  # the (3, 43) param has no gradient
                p.grad = None
                grads.append(None)
                continue
            g = (torch.randn(p.shape, dtype=torch.float64) * 2).to(dtype)
            if i == 5:  # a non-contiguous gradient
                g = (torch.randn(tuple(reversed(p.shape)), dtype=torch.float64)).to(dtype).permute(2, 1, 0)
                assert not g.is_contiguous()
            p.grad = g
            grads.append(g)
        offset = opt.noise_offset
        assert offset == step * total
        n0 = len(params)
        want = _expected_step(
            params, grads[:n0], starts[:n0], **_hp(hp[0]), seed=opt.seed, offset=offset
        ) + _expected_step(extra, grads[n0:], starts[n0:], **_hp(hp[1]), seed=opt.seed, offset=offset)
        before = [p.detach().clone() for p in everything]
        opt.step()
        for i, (p, w) in enumerate(zip(everything, want, strict=True)):
            assert p.dtype == dtype and p.shape == w.shape
            if grads[i] is None:
                assert torch.equal(p.detach(), before[i])
            else:
                assert_close(p.detach(), w, dtype)
        assert not everything[2].is_contiguous() and not everything[6].is_contiguous()  # strides kept
    assert opt.noise_offset == 2 * total


def _hp(h):
    return {"lr": h["lr"], "temperature": h["temperature"], "wd": h["weight_decay"]}


@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_noise_is_langevin_noise_at_each_params_counters(backend, dtype):
    """With p = grad = 0 and lr = 1/2, T = 1 (sigma = 1) a step writes the noise itself: each
    param's normals are langevin_noise at offset + its start, within 1e-6 relative. A wrong
    counter (or word) would give unrelated normals, so this also pins the uniform bits, which
    every backend takes from the same Philox words (tests/test_langevin.py checks the bits)."""
    shapes = [(5, 7), (1,), (3, 43), (4,), (0, 3), (2, 3, 43)]
    params = [torch.nn.Parameter(torch.zeros(s, dtype=dtype)) for s in shapes]
    params[0] = torch.nn.Parameter(torch.zeros(7, 5, dtype=dtype).t())  # non-contiguous
    opt = SGLD(params, lr=0.5, seed=0xDEADBEEF, backend=backend)
    opt.load_state_dict({**opt.state_dict(), "rng": {"seed": 0xDEADBEEF, "offset": 2**32 - 3}})
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()
    start = 2**32 - 3  # the counters cross 2^32 inside the step
    atol, rtol = NOISE_TOL[dtype]
    for p in params:
        want = reference.langevin_noise(p.numel(), 0xDEADBEEF, start).reshape(p.shape)
        torch.testing.assert_close(p.detach().double(), want, atol=atol, rtol=rtol)
        start += counters(p)


def test_cpu_bit_identical_to_langevin_step_(cpu_isa):
    """On CPU, without weight decay, each tensor's update is bit for bit langevin_step_ on it
    at offset + start (same kernel arithmetic) while one task covers the tensor."""
    for dtype in DTYPES:
        params = _make_params([(3, 1111), (5, 7), (1,)], dtype)
        grads = [torch.randn_like(p) for p in params]
        want = []
        start = 0
        for p, g in zip(params, grads, strict=True):
            x = p.detach().clone()
            thermokern.langevin_step_(
                x, g, step_size=0.01, temperature=2.0, seed=77, offset=40 + start, backend="cpu"
            )
            want.append(x)
            start += counters(p)
        opt = SGLD(params, lr=0.01, temperature=2.0, seed=77, backend="cpu")
        opt.load_state_dict({**opt.state_dict(), "rng": {"seed": 77, "offset": 40}})
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        opt.step()
        for p, w in zip(params, want, strict=True):
            assert torch.equal(p.detach(), w), dtype


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cpu_tasks_split_tensors(cpu_isa, dtype):
    """More counters than one CPU task holds: tasks start and end inside tensors and span
    several small ones; every element still gets its own counter."""
    params = _make_params([(7,), LARGE, (3, 5), LARGE, (2,)], dtype, non_contiguous={1})
    grads = [torch.randn_like(p) for p in params]
    starts, _ = counter_starts(params)
    want = _expected_step(params, grads, starts, lr=0.03, temperature=1.0, wd=0.5, seed=3, offset=0)
    opt = SGLD(params, lr=0.03, weight_decay=0.5, seed=3, backend="cpu")
    for p, g in zip(params, grads, strict=True):
        p.grad = g
    opt.step()
    for p, w in zip(params, want, strict=True):
        assert_close(p.detach(), w, dtype)


@pytest.mark.parametrize("backend", cpu_backends())
def test_mixed_dtypes_in_one_group(backend):
    """A group holding float32, bfloat16 and float64 params: one launch per dtype, each with the
    counters of its position in the group."""
    params = [
        torch.nn.Parameter(torch.randn(5, 7)),
        torch.nn.Parameter(torch.randn(9).to(torch.bfloat16)),
        torch.nn.Parameter(torch.randn(3, 3, dtype=torch.float64)),
        torch.nn.Parameter(torch.randn(6)),
    ]
    grads = [torch.randn_like(p) for p in params]
    starts = [0, 9, 12, 15]
    want = _expected_step(params, grads, starts, lr=0.1, temperature=0.3, wd=0.0, seed=1, offset=0)
    opt = SGLD(params, lr=0.1, temperature=0.3, seed=1, backend=backend)
    for p, g in zip(params, grads, strict=True):
        p.grad = g
    opt.step()
    for p, w in zip(params, want, strict=True):
        assert_close(p.detach(), w, p.dtype)
    assert opt.noise_offset == 17


# ----------------------------------------------------------------------------- counter layout
@pytest.mark.parametrize("backend", cpu_backends())
def test_grad_none_keeps_its_counters(backend):
    """Skipping a param (grad None) does not shift the others' noise: counters go by position."""
    shapes = [(5, 3), (11,), (4, 4)]
    base = _make_params(shapes, torch.float32)
    grads = [torch.randn_like(p) for p in base]
    results = []
    for skip in (False, True):
        params = [torch.nn.Parameter(p.detach().clone()) for p in base]
        opt = SGLD(params, lr=0.1, seed=9, backend=backend)
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            p.grad = None if (skip and i == 1) else g
        opt.step()
        results.append(params)
        assert opt.noise_offset == 4 + 3 + 4  # every param's counters, with or without grad
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][2], results[1][2])
    assert torch.equal(results[1][1], base[1]) and not torch.equal(results[0][1], base[1])


def test_added_group_goes_after_existing_params():
    """add_param_group appends counters: the existing params' noise is unchanged."""
    a = _make_params([(6, 6), (3,)], torch.float32)
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    extra = _make_params([(10,)], torch.float32)
    opt_a = SGLD(a, lr=0.1, seed=4)
    opt_b = SGLD(b, lr=0.1, seed=4)
    opt_b.add_param_group({"params": extra, "lr": 0.01})
    for pa, pb in zip(a, b, strict=True):
        pa.grad = pb.grad = torch.ones_like(pa)
    extra[0].grad = torch.ones_like(extra[0])
    opt_a.step()
    opt_b.step()
    for pa, pb in zip(a, b, strict=True):
        assert torch.equal(pa, pb)
    assert opt_a.noise_offset == 10 and opt_b.noise_offset == 13


@pytest.mark.parametrize("backend", cpu_backends())
def test_steps_do_not_repeat_noise(backend):
    """The offset advances by the step's counter total: step k + 1's noise is new."""
    p = torch.nn.Parameter(torch.zeros(64))
    opt = SGLD([p], lr=0.5, seed=5, backend=backend)
    draws = []
    for _ in range(3):
        with torch.no_grad():
            p.zero_()
        p.grad = torch.zeros_like(p)
        opt.step()
        draws.append(p.detach().clone())
    for i in range(3):
        want = reference.langevin_noise(64, 5, 16 * i).float()
        torch.testing.assert_close(draws[i], want, atol=1e-7, rtol=1e-6)
    assert not torch.isclose(draws[0], draws[1]).any()


# ----------------------------------------------------------------------------- one launch
class _CountOps(TorchDispatchMode):
    """Counts the dispatcher ops a region calls (names without overload)."""

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def _mlp_params(n_layers=25, width=16):
    torch.manual_seed(0)
    layers = [torch.nn.Linear(width, width) for _ in range(n_layers)]
    return [p for layer in layers for p in layer.parameters()]


@pytest.mark.parametrize("backend", [b for b in cpu_backends() if b != "reference"])
def test_one_launch_per_group_device_dtype(backend, monkeypatch):
    """50 tensors in one group: one op call (and, for Triton, one kernel launch); the only other
    op of a step is the offset's add_. With groups x dtypes: one call per (group, dtype)."""
    params = _mlp_params()
    assert len(params) == 50
    opt = SGLD(params, lr=1e-3, backend=backend)
    for p in params:
        p.grad = torch.randn_like(p)
    launches = []
    if backend == "triton":
        from thermokern.kernels import sgld as tk

        kernel = tk._sgld_step_kernel

        class _Counting:
            def __getitem__(self, grid):
                launches.append(grid)
                return kernel[grid]

        monkeypatch.setattr(tk, "_sgld_step_kernel", _Counting())
    op = "sgld_step_triton_" if backend == "triton" else "sgld_step_"
    with _CountOps() as count:
        opt.step()
    calls = [c for c in count.calls if not c.startswith("_record_function")]
    assert calls == [op, "add_"], calls
    if backend == "triton":
        assert len(launches) == 1

    # two groups, the second with float32 and float64 params: three calls
    g0 = _mlp_params(3)
    g1 = _mlp_params(2) + [torch.nn.Parameter(torch.randn(4, 4, dtype=torch.float64)) for _ in range(3)]
    opt = SGLD([{"params": g0}, {"params": g1, "lr": 0.5}], lr=1e-3, backend=backend)
    for p in g0 + g1:
        p.grad = torch.randn_like(p)
    with _CountOps() as count:
        opt.step()
    assert [c for c in count.calls if c == op] == [op] * 3


# ----------------------------------------------------------------------------- state
def _quadratic_grads(params, c=0.7):
    for p in params:
        p.grad = c * p.detach() + 0.1


@pytest.mark.parametrize("backend", cpu_backends())
def test_state_dict_round_trip_continues_identically(backend):
    shapes = [(5, 7), (13,), (2, 2, 2)]
    params = _make_params(shapes, torch.float32)
    opt = SGLD(
        [{"params": params[:2]}, {"params": params[2:], "temperature": 0.5, "weight_decay": 0.1}],
        lr=0.05,
        seed=-12345,
        backend=backend,
    )
    for _ in range(3):
        _quadratic_grads(params)
        opt.step()
    buf = io.BytesIO()
    torch.save({"params": [p.detach().clone() for p in params], "opt": opt.state_dict()}, buf)
    sd = opt.state_dict()
    assert sd["rng"] == {"seed": 2**64 - 12345, "offset": 3 * (9 + 4 + 2)}
    assert sd["state"] == {}
    for _ in range(2):
        _quadratic_grads(params)
        opt.step()

    buf.seek(0)
    ckpt = torch.load(buf)
    restored = [torch.nn.Parameter(t) for t in ckpt["params"]]
    opt2 = SGLD(
        [{"params": restored[:2]}, {"params": restored[2:]}], lr=1.0, seed=999, backend=backend
    )  # other seed and hyperparameters: the state dict restores them all
    opt2.load_state_dict(ckpt["opt"])
    assert opt2.seed == 2**64 - 12345 and opt2.noise_offset == 45
    assert opt2.param_groups[1]["temperature"] == 0.5
    for _ in range(2):
        _quadratic_grads(restored)
        opt2.step()
    for p, q in zip(params, restored, strict=True):
        assert torch.equal(p, q)
    assert opt2.state_dict()["rng"] == opt.state_dict()["rng"]

    # a deep copy (pickle protocol) continues identically too
    twin = copy.deepcopy(opt)
    twin_params = [p for g in twin.param_groups for p in g["params"]]
    _quadratic_grads(params)
    _quadratic_grads(twin_params)
    opt.step()
    twin.step()
    for p, q in zip(params, twin_params, strict=True):
        assert torch.equal(p, q)


def test_load_state_dict_errors():
    p = torch.nn.Parameter(torch.randn(3))
    opt = SGLD([p], lr=0.1)
    sd = opt.state_dict()
    with pytest.raises(ValueError, match="rng"):
        opt.load_state_dict({k: v for k, v in sd.items() if k != "rng"})
    with pytest.raises(ValueError, match="offset"):
        opt.load_state_dict({**sd, "rng": {"seed": 0, "offset": -1}})
    with pytest.raises(TypeError, match="seed"):
        opt.load_state_dict({**sd, "rng": {"seed": 1.5, "offset": 0}})
    # a torch.optim.SGD state dict lacks the rng entry: refused rather than silently reseeded
    sgd = torch.optim.SGD([p], lr=0.1)
    with pytest.raises(ValueError, match="rng"):
        opt.load_state_dict(sgd.state_dict())


# ----------------------------------------------------------------------------- weight decay
@pytest.mark.parametrize("backend", cpu_backends())
def test_weight_decay_is_a_gradient_term(backend):
    """weight_decay = c with grad 0 is the step of grad = c p (same noise): bit for bit in
    float32 (both compute c * p in float32 and add it to 0 or use it)."""
    base = _make_params([(7, 9), (5,)], torch.float32)
    a = [torch.nn.Parameter(p.detach().clone()) for p in base]
    b = [torch.nn.Parameter(p.detach().clone()) for p in base]
    opt_a = SGLD(a, lr=0.1, weight_decay=0.75, seed=2, backend=backend)
    opt_b = SGLD(b, lr=0.1, seed=2, backend=backend)
    for _ in range(3):
        for pa, pb in zip(a, b, strict=True):
            pa.grad = torch.zeros_like(pa)
            pb.grad = 0.75 * pb.detach()
        opt_a.step()
        opt_b.step()
    for pa, pb in zip(a, b, strict=True):
        torch.testing.assert_close(pa, pb, atol=0, rtol=0 if backend != "reference" else 1e-6)


# ----------------------------------------------------------------------------- statistics
@pytest.mark.parametrize("rho", [0.1, 0.02])
def test_stationary_variance_on_quadratic(rho):
    """SGLD on L = c p^2 / 2 at temperature T targets Var p = T / c. With a finite step the
    chain p' = (1 - lr c) p + sqrt(2 lr T) xi is AR(1) with the exactly known stationary
    variance T / (c (1 - rho / 2)), rho = lr c: a bias of rho / 2 that vanishes with the step.

    Two groups with different c and lr (same rho): one with the gradient c p, one with grad 0
    and weight_decay = c (the same loss). From p = 0, after a burn-in of B steps (the variance
    is within a^(2B) < 1e-13 of stationary, a = 1 - rho) the normalised x^2 c / T is averaged
    over N = 16384 chains and S steps. Its standard error for the AR(1) chain is
    se = v sqrt(2 (1 + a^2) / (1 - a^2) / (N S)) (x^2 has lag-k correlation a^(2k)); the
    estimate must lie within 6 se of 1 / (1 - rho / 2) (a false-failure rate of 2e-9 for a
    correct sampler, normal approximation; the seed is fixed, so the run is deterministic), and
    hence within rho / 2 + 6 se of T / c (7% for rho = 0.1, 2.5% for rho = 0.02), while 6 se
    excludes the unbiased T / c for rho = 0.1 (bias 5.3% = 20 se): the test sees the step's bias.
    """
    temperature = 0.5
    burn_in, steps = (150, 200) if rho == 0.1 else (1000, 1000)
    c_a, c_b = 1.0, 4.0
    pa = [torch.nn.Parameter(torch.zeros(s)) for s in [(64, 64), (2048,), (3, 682), (2,)]]
    pb = [torch.nn.Parameter(torch.zeros(s)) for s in [(4096,), (16, 256)]]
    n = sum(p.numel() for p in pa + pb)
    assert n == 16384
    opt = SGLD(
        [
            {"params": pa, "lr": rho / c_a},
            {"params": pb, "lr": rho / c_b, "weight_decay": c_b},
        ],
        lr=1.0,
        temperature=temperature,
        seed=20240601,
    )
    acc = 0.0
    for k in range(burn_in + steps):
        for p in pa:
            p.grad = c_a * p.detach()
        for p in pb:
            p.grad = torch.zeros_like(p)
        opt.step()
        if k >= burn_in:
            r = sum(float((p.detach().double().square() * c_a / temperature).sum()) for p in pa)
            r += sum(float((p.detach().double().square() * c_b / temperature).sum()) for p in pb)
            acc += r / n
    est = acc / steps
    v = 1.0 / (1.0 - rho / 2.0)  # stationary E[x^2 c / T]
    a = 1.0 - rho
    se = v * math.sqrt(2.0 * (1.0 + a * a) / (1.0 - a * a) / (n * steps))
    assert abs(est - v) < 6 * se, (est, v, se)
    assert abs(est - 1.0) < rho / 2 + 6 * se, (est, se)
    if rho == 0.1:
        assert abs(est - 1.0) > 6 * se  # the test resolves the discretisation bias


# ----------------------------------------------------------------------------- compile / opcheck
def test_compile_optimizer_step():
    """torch.compile of the step (fullgraph): the op's fake impl and the functionalised
    mutation of the params list; the compiled step equals the eager one bit for bit."""
    torch._dynamo.reset()
    base = _make_params([(5, 7), (9,), (3, 4)], torch.float32)
    a = [torch.nn.Parameter(p.detach().clone()) for p in base]
    b = [torch.nn.Parameter(p.detach().clone()) for p in base]
    opt_a = SGLD(a, lr=0.1, weight_decay=0.01, seed=6, backend="cpu")
    opt_b = SGLD(b, lr=0.1, weight_decay=0.01, seed=6, backend="cpu")
    step = torch.compile(opt_b.step, fullgraph=True)
    for k in range(3):
        for pa, pb in zip(a, b, strict=True):
            pa.grad = pa.detach() * 0.5 + k
            pb.grad = pb.detach() * 0.5 + k
        opt_a.step()
        # the offset advances in a tensor: later steps reuse the first compilation
        with torch._dynamo.config.patch(error_on_recompile=k > 0):
            step()
    for pa, pb in zip(a, b, strict=True):
        assert torch.equal(pa, pb)
    assert opt_b.noise_offset == opt_a.noise_offset == 3 * (9 + 3 + 3)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_opcheck(dtype):
    params = [torch.randn(5, 7).to(dtype), torch.randn(3).to(dtype), torch.randn(7, 4).to(dtype).t()]
    grads = [torch.randn(p.shape).to(dtype) for p in params]
    args = (params, grads, torch.tensor(3), torch.tensor(12), [0, 9, 10], 0.1, 0.2, 0.01)
    torch.library.opcheck(torch.ops.thermokern.sgld_step_.default, args)
    if "triton" in cpu_backends():
        from thermokern.ops.sgld import sgld_step_kernel

        torch.library.opcheck(sgld_step_kernel.triton, args)


# ----------------------------------------------------------------------------- errors
def test_errors():
    p = torch.nn.Parameter(torch.randn(3, 4))
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="lr"):
            SGLD([p], lr=bad)
    for bad in (0.0, -2.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="temperature"):
            SGLD([p], lr=0.1, temperature=bad)
    for bad in (-0.1, math.nan, math.inf):
        with pytest.raises(ValueError, match="weight_decay"):
            SGLD([p], lr=0.1, weight_decay=bad)
    with pytest.raises(TypeError, match="lr"):
        SGLD([p], lr="0.1")
    with pytest.raises(ValueError, match=r"param_groups\[1\]: lr"):
        SGLD([{"params": [p]}, {"params": [torch.nn.Parameter(torch.randn(2))], "lr": -1.0}], lr=0.1)
    with pytest.raises(ValueError, match=r"param_groups\[0\]: temperature"):
        SGLD([{"params": [p], "temperature": 0.0}], lr=0.1)
    with pytest.raises(TypeError, match="params"):
        SGLD([torch.nn.Parameter(torch.ones(3, dtype=torch.complex64))], lr=0.1)
    for bad in (1.5, "1", None, True):
        with pytest.raises(TypeError, match="seed"):
            SGLD([p], lr=0.1, seed=bad)
    for bad in (2**64, -(2**63) - 1):
        with pytest.raises(ValueError, match="seed"):
            SGLD([p], lr=0.1, seed=bad)
    with pytest.raises(ValueError, match="backend"):
        SGLD([p], lr=0.1, backend="nope")

    # a rejected group leaves the optimizer as it was
    opt = SGLD([p], lr=0.1)
    with pytest.raises(ValueError, match=r"param_groups\[1\]: weight_decay"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.randn(2))], "weight_decay": -1.0})
    with pytest.raises(TypeError, match=r"param_groups\[1\]: params\[1\]"):
        opt.add_param_group(
            {"params": [torch.nn.Parameter(torch.randn(2)), torch.ones(2, dtype=torch.int32)]}
        )
    assert len(opt.param_groups) == 1

    # a scheduler (or user) setting a bad lr is caught at the step
    opt = SGLD([p], lr=0.1)
    p.grad = torch.randn_like(p)
    opt.param_groups[0]["lr"] = 0.0
    with pytest.raises(ValueError, match=r"param_groups\[0\]: lr"):
        opt.step()

    # sparse gradients: a clear error, nothing updated
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = SGLD(emb.parameters(), lr=0.1)
    emb(torch.tensor([1, 2])).sum().backward()
    before = emb.weight.detach().clone()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
    assert torch.equal(emb.weight, before)

    # the op checks its arguments too, naming them
    ops = torch.ops.thermokern
    x, g = torch.randn(3), torch.randn(3)
    s, o = torch.tensor(0), torch.tensor(0)
    with pytest.raises(ValueError, match="grads"):
        ops.sgld_step_([x], [], s, o, [0], 0.1, 0.1)
    with pytest.raises(ValueError, match="counter_starts"):
        ops.sgld_step_([x], [g], s, o, [], 0.1, 0.1)
    with pytest.raises(ValueError, match="counter_starts"):
        ops.sgld_step_([x], [g], s, o, [-1], 0.1, 0.1)
    with pytest.raises(ValueError, match="lr"):
        ops.sgld_step_([x], [g], s, o, [0], 0.0, 0.1)
    with pytest.raises(TypeError, match=r"params\[1\]"):
        ops.sgld_step_([x, x.double()], [g, g.double()], s, o, [0, 1], 0.1, 0.1)
    with pytest.raises(TypeError, match=r"grads\[0\]"):
        ops.sgld_step_([x], [g.double()], s, o, [0], 0.1, 0.1)
    with pytest.raises(ValueError, match=r"grads\[0\]"):
        ops.sgld_step_([x], [torch.randn(4)], s, o, [0], 0.1, 0.1)
    with pytest.raises(ValueError, match=r"grads\[0\].*sparse"):
        ops.sgld_step_([x], [g.to_sparse()], s, o, [0], 0.1, 0.1)
    with pytest.raises(TypeError, match="seed"):
        ops.sgld_step_([x], [g], torch.tensor(0.0), o, [0], 0.1, 0.1)
    with pytest.raises(TypeError, match=r"params\[0\]"):
        ops.sgld_step_(
            [torch.ones(3, dtype=torch.int64)], [torch.ones(3, dtype=torch.int64)], s, o, [0], 0.1, 0.1
        )
    ops.sgld_step_([], [], s, o, [], 0.1, 0.1)  # nothing to do


# ----------------------------------------------------------------------------- GPU
gpu = pytest.mark.skipif(not HAS_GPU, reason="needs an NVIDIA GPU")


@pytest.mark.cuda
@gpu
@pytest.mark.parametrize("backend", gpu_backends() or ["cuda"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_gpu_matches_cpu(backend, dtype):
    """The CUDA / Triton step against the float64 reference (unaligned views included), and the
    same noise as the CPU within 1e-6 relative."""
    shapes = [*SHAPES, LARGE, (1 << 18,)]
    params = _make_params(shapes, dtype, non_contiguous={2})
    grads = [torch.randn_like(p) for p in params]
    starts, s = counter_starts(params)
    want = _expected_step(params, grads, starts, lr=0.02, temperature=0.8, wd=0.3, seed=13, offset=0)
    dev = [torch.nn.Parameter(p.detach().cuda()) for p in params]
    dev[2] = torch.nn.Parameter(params[2].detach().t().contiguous().cuda().t())
    # an unaligned param: a view starting one element into its storage
    store = torch.zeros(8 * 43 + 1, dtype=dtype, device="cuda")
    store[1:].view(8, 43).copy_(torch.randn(8, 43).to(dtype))
    unaligned = torch.nn.Parameter(store[1:].view(8, 43))
    dev.append(unaligned)
    grads.append(torch.randn(8, 43).to(dtype))
    starts.append(s)
    want += _expected_step(
        [unaligned.cpu()], [grads[-1]], [s], lr=0.02, temperature=0.8, wd=0.3, seed=13, offset=0
    )
    opt = SGLD(dev, lr=0.02, temperature=0.8, weight_decay=0.3, seed=13, backend=backend)
    for p, g in zip(dev, grads, strict=True):
        p.grad = g.cuda()
    opt.step()
    for p, w in zip(dev, want, strict=True):
        assert_close(p.detach().cpu(), w, dtype)
    assert opt.noise_offset == s + counters(unaligned)


def test_docstring_example():
    import doctest

    import thermokern.optim

    failed, _ = doctest.testmod(thermokern.optim, verbose=False)
    assert failed == 0

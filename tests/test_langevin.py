"""langevin_step / langevin_step_: every backend x dtype against the reference, the noise
stream (bits, normals, statistics), autograd, the in-place twin, compile, opcheck, errors, and
the stationary distribution of the unadjusted Langevin algorithm."""

from __future__ import annotations

import math

import pytest
import torch
from _util import DTYPES, TOLERANCES, assert_close, run_offline_triton_compile, triton_randint4x
from conftest import HAS_GPU, cpu_backends, gpu_backends

import thermokern
from thermokern import _C, reference

# Shapes chosen to hit each code path: a Philox counter covers 4 elements; the CPU SIMD groups
# are 8 (AVX2) or 16 (AVX-512) counters, its blocks 64 counters (256 elements), its tasks 16K
# counters; Triton programs 4096 counters under the interpreter (256 on a GPU).
SHAPES = [
    (1,),  # one element: one partial counter
    (4,),  # exactly one counter
    (5, 7),  # 35 elements: scalar tail after no full SIMD group (AVX-512)
    (3, 43),  # 129: two AVX-512 groups + a partial counter
    (2, 3, 43),  # 258: one CPU block + 2 elements
    (4099,),  # many blocks, odd tail
    (0, 3),  # empty
]
LARGE = (70001,)  # > 16K counters: several CPU tasks (and two interpreter programs)

STEP = {"step_size": 0.05, "grad_clip": 1.5, "clamp": (-2.0, 1.7)}


def _inputs(shape, dtype, device="cpu", scale=1.0):
    x = (torch.randn(shape, dtype=torch.float64, device=device) * scale).to(dtype)
    g = (torch.randn(shape, dtype=torch.float64, device=device) * 3).to(dtype)
    return x, g


def _ref(x, g, **kw):
    """The float64 reference on the (already rounded) inputs."""
    return reference.langevin_step(x.double(), g.double(), **kw)


# ----------------------------------------------------------------------------- values
@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference_noise_off(backend, dtype, shape):
    x, g = _inputs(shape, dtype)
    kw = dict(STEP, noise_scale=0.0, seed=1)
    out = thermokern.langevin_step(x, g, backend=backend, **kw)
    assert out.dtype == dtype and out.shape == x.shape and out.is_contiguous()
    assert_close(out, _ref(x, g, **kw), dtype)


@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 43), LARGE], ids=str)
def test_matches_reference_with_noise(backend, dtype, shape):
    x, g = _inputs(shape, dtype)
    for kw in (
        dict(STEP, seed=7, offset=3),
        {"step_size": 0.01, "temperature": 2.0, "seed": 2**40 + 5, "offset": 2**33},  # no clip, no clamp
        {"step_size": 1.0, "noise_scale": 0.01, "clamp": (None, 0.5), "seed": 3},  # JEM-style, one bound
    ):
        out = thermokern.langevin_step(x, g, backend=backend, **kw)
        assert_close(out, _ref(x, g, **kw), dtype)


def test_cpu_every_isa(cpu_isa):
    """Each ISA's kernel against the reference; they may differ by an ulp (FMA contraction)."""
    for dtype in DTYPES:
        x, g = _inputs((3, 1111), dtype)
        kw = dict(STEP, seed=11, offset=5)
        assert_close(thermokern.langevin_step(x, g, backend="cpu", **kw), _ref(x, g, **kw), dtype)
    for seed, offset in [(3, 2**32 - 37), (2**64 - 1, 2**62)]:  # counters crossing 2^32
        assert _C._langevin_words(seed, offset, 300) == _C._philox_randint4x(seed, offset, 300)


@pytest.mark.parametrize("backend", cpu_backends())
def test_clamp_and_grad_clip(backend):
    x = torch.tensor([0.0, 0.0, 0.9, -0.9, 0.5, float("nan"), 0.0, 0.0], dtype=torch.float64)
    g = torch.tensor([100.0, -100.0, -10.0, 10.0, 0.1, 0.0, float("nan"), 1.0], dtype=torch.float64)
    out = thermokern.langevin_step(
        x, g, step_size=0.1, noise_scale=0.0, grad_clip=2.0, clamp=(-1.0, 1.0), seed=0, backend=backend
    )
    expected = torch.tensor(
        [-0.2, 0.2, 1.0, -1.0, 0.49, float("nan"), float("nan"), -0.1], dtype=torch.float64
    )
    torch.testing.assert_close(out, expected, equal_nan=True)
    # One-sided bounds, and an infinite clip (no clipping).
    out = thermokern.langevin_step(
        x[:5],
        g[:5],
        step_size=0.1,
        noise_scale=0.0,
        grad_clip=math.inf,
        clamp=(None, 0.95),
        seed=0,
        backend=backend,
    )
    torch.testing.assert_close(
        out, torch.tensor([-10.0, 10.0, 0.95, -1.9, 0.49], dtype=torch.float64).clamp(max=0.95)
    )
    out = thermokern.langevin_step(
        x[:5], g[:5], step_size=0.1, noise_scale=0.0, clamp=(-0.5, None), seed=0, backend=backend
    )
    torch.testing.assert_close(out, torch.tensor([-0.5, 10.0, 1.9, -0.5, 0.49], dtype=torch.float64))
    # With noise, every element stays inside the bounds.
    x, g = _inputs((4099,), torch.float32)
    out = thermokern.langevin_step(x, g, step_size=0.5, clamp=(-0.3, 0.4), seed=9, backend=backend)
    lo, hi = torch.tensor(-0.3), torch.tensor(0.4)  # the bounds as float32
    assert bool((out >= lo).all()) and bool((out <= hi).all())
    assert float((out == hi).float().mean()) > 0.1  # the bound is reached


@pytest.mark.parametrize("backend", cpu_backends())
def test_non_contiguous_and_any_shape(backend):
    base = torch.randn(6, 9, 5, dtype=torch.float64)
    gbase = torch.randn(6, 9, 5, dtype=torch.float64)
    kw = dict(STEP, seed=4, offset=1)
    for view in (
        lambda t: t.transpose(0, 2),
        lambda t: t[:, ::2, 1],
        lambda t: t[1:, 3:, :].permute(2, 0, 1),
    ):
        x, g = view(base), view(gbase)
        out = thermokern.langevin_step(x, g, backend=backend, **kw)
        # the noise follows the logical row-major index, whatever the strides
        torch.testing.assert_close(
            out, thermokern.langevin_step(x.contiguous(), g.contiguous(), backend=backend, **kw)
        )
        torch.testing.assert_close(out, _ref(x, g, **kw))
    scalar = thermokern.langevin_step(
        torch.tensor(0.5), torch.tensor(1.0), step_size=0.1, seed=0, backend=backend
    )
    assert scalar.shape == ()


# ----------------------------------------------------------------------------- noise stream
SEEDS_OFFSETS = [(0, 0), (1, 7), (0xDEADBEEF, 2**32 - 3), (2**63 + 12345, 2**40 + 1), (-5, 2**62)]


@pytest.mark.parametrize("seed,offset", SEEDS_OFFSETS)
def test_uniform_bits_identical_everywhere(seed, offset):
    """The words behind the noise: reference (torch int64 Philox) == C++ scalar == the vectorised
    CPU kernel == the Triton kernel's words == tl.randint4x (tests/test_philox.py ties C++ to
    tl.randint4x as well)."""
    n = 301
    ref = reference.philox_randint4x(seed, offset, n)
    key = seed % 2**64
    assert ref.reshape(-1).tolist() == _C._philox_randint4x(key, offset, n)
    assert _C._langevin_words(key, offset, n) == _C._philox_randint4x(key, offset, n)
    if "triton" in cpu_backends():
        from thermokern.kernels import langevin as tk

        seed_t = torch.tensor(key - 2**64 if key >= 2**63 else key)
        assert torch.equal(tk.philox_words(seed_t, torch.tensor(offset), n), ref)
        assert torch.equal(triton_randint4x(key, offset, n), ref)


def _noise(backend, numel, dtype=torch.float32, seed=5, offset=0, device="cpu"):
    """The normals a step draws: x = grad = 0 and noise_scale = 1 give the noise itself."""
    z = torch.zeros(numel, dtype=dtype, device=device)
    return thermokern.langevin_step(
        z, z, step_size=0.5, noise_scale=1.0, seed=seed, offset=offset, backend=backend
    )


# Normals across backends: 1e-6 relative (float32 series ~3e-7), plus an absolute floor for
# values near 0; float64 kernels evaluate double series.
NOISE_TOL = {torch.float32: (1e-7, 1e-6), torch.float64: (1e-14, 1e-12)}


@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("seed,offset", SEEDS_OFFSETS[:3])
def test_normals_match_box_muller(backend, dtype, seed, offset):
    got = _noise(backend, 5003, dtype, seed, offset).double()
    want = reference.langevin_noise(5003, seed, offset)
    atol, rtol = NOISE_TOL[dtype]
    torch.testing.assert_close(got, want, atol=atol, rtol=rtol)


def test_normals_agree_across_backends_and_isas(cpu_isa):
    want = _noise("cpu", 20000)
    for backend in cpu_backends():
        torch.testing.assert_close(_noise(backend, 20000), want, atol=1e-7, rtol=1e-6)


def test_noise_layout_counter_shift():
    """Counter offset + 1 is elements 4.. of offset: the step's noise is a window on one
    stream, so consecutive steps advanced by ceil(numel/4) counters never share noise."""
    for backend in cpu_backends():
        a = _noise(backend, 1001, offset=10)
        b = _noise(backend, 1001, offset=11)
        assert torch.equal(a[4:], b[:-4])
        assert not torch.isclose(a[:4], b[:4]).any()


def test_noise_moments():
    """2^20 normals (fixed seed) against N(0, 1). Each bound is 5 standard errors of its
    statistic (false-failure rate < 6e-7 each for a correct generator), the KS distance is
    below its 1e-6 critical value sqrt(ln(2e6) / (2n))."""
    n = 1 << 20
    z = _noise("cpu", n, torch.float64, seed=2024).double()
    se = 1.0 / math.sqrt(n)
    assert abs(float(z.mean())) < 5 * se
    assert abs(float(z.var()) - 1.0) < 5 * math.sqrt(2.0) * se  # Var(z^2) = 2
    assert abs(float((z**3).mean())) < 5 * math.sqrt(15.0) * se  # Var(z^3) = 15
    assert abs(float((z**4).mean()) - 3.0) < 5 * math.sqrt(96.0) * se  # Var(z^4) = 105 - 9
    assert float(z.abs().max()) <= math.sqrt(2 * 24 * math.log(2)) + 1e-9  # the 24-bit tail cut
    s = z.sort().values
    cdf = 0.5 * (1.0 + torch.erf(s / math.sqrt(2.0)))
    i = torch.arange(1, n + 1, dtype=torch.float64)
    ks = float(torch.maximum(i / n - cdf, cdf - (i - 1) / n).max())
    assert ks < math.sqrt(math.log(2e6) / (2 * n)), ks


def test_noise_independence():
    """Correlations between the Box-Muller partners, the two pairs of a counter, adjacent
    steps (offset advanced by ceil(n/4)) and seeds: each within 5/sqrt(n) (false-failure rate
    < 6e-7 each)."""
    n = 1 << 18
    bound = 5.0 / math.sqrt(n)

    def corr(a, b):
        a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
        return float((a * b).sum() / (a.norm() * b.norm()))

    z = _noise("cpu", 4 * n, seed=77).reshape(n, 4)
    for i, j in [(0, 1), (2, 3), (0, 2), (1, 3), (0, 3)]:
        assert abs(corr(z[:, i], z[:, j])) < bound, (i, j)
    assert (
        abs(corr(z[:, 0] ** 2, z[:, 1] ** 2)) < bound
    )  # Box-Muller partners: independent, not just uncorrelated
    a = _noise("cpu", n, seed=77, offset=0)
    b = _noise("cpu", n, seed=77, offset=n // 4)
    c = _noise("cpu", n, seed=78, offset=0)
    assert abs(corr(a, b)) < bound and abs(corr(a, c)) < bound
    assert abs(corr(a[1:], a[:-1])) < bound  # neighbouring elements


# ----------------------------------------------------------------------------- seeds/offsets
@pytest.mark.parametrize("backend", cpu_backends())
def test_tensor_seed_and_offset(backend):
    x, g = _inputs((3, 41), torch.float32)
    for seed, offset in [(3, 17), (2**64 - 2, 5)]:
        a = thermokern.langevin_step(x, g, step_size=0.1, seed=seed, offset=offset, backend=backend)
        seed_t = torch.tensor(seed - 2**64 if seed >= 2**63 else seed)
        b = thermokern.langevin_step(
            x, g, step_size=0.1, seed=seed_t, offset=torch.tensor(offset), backend=backend
        )
        assert torch.equal(a, b)
    # different seeds / offsets give different noise
    c = thermokern.langevin_step(x, g, step_size=0.1, seed=4, offset=17, backend=backend)
    d = thermokern.langevin_step(x, g, step_size=0.1, seed=3, offset=18, backend=backend)
    assert not torch.equal(a, c) and not torch.equal(c, d)
    # an offset tensor updated in place is read afresh at every call
    off = torch.tensor(0)
    first = thermokern.langevin_step(x, g, step_size=0.1, seed=3, offset=off, backend=backend)
    off.add_(x.numel())
    second = thermokern.langevin_step(x, g, step_size=0.1, seed=3, offset=off, backend=backend)
    assert torch.equal(
        second, thermokern.langevin_step(x, g, step_size=0.1, seed=3, offset=x.numel(), backend=backend)
    )
    assert not torch.equal(first, second)


def test_noise_conventions():
    """sigma = sqrt(2 eta T) by default; noise_scale overrides it (effective T = s^2 / (2 eta))."""
    z = torch.zeros(64)
    base = _noise("cpu", 64, seed=1)
    out = thermokern.langevin_step(z, z, step_size=0.02, temperature=2.0, seed=1)
    torch.testing.assert_close(out, base * math.sqrt(2 * 0.02 * 2.0))
    out = thermokern.langevin_step(z, z, step_size=10.0, noise_scale=0.005, temperature=123.0, seed=1)
    torch.testing.assert_close(out, base * 0.005)
    same_t = thermokern.langevin_step(z, z, step_size=10.0, temperature=0.005**2 / 20.0, seed=1)
    torch.testing.assert_close(same_t, out)


# ----------------------------------------------------------------------------- autograd
GRAD_CASES = [
    {},
    {"grad_clip": 0.8},
    {"clamp": (-0.6, 0.7)},
    {"clamp": (None, 0.2), "grad_clip": 0.5},
    {"clamp": (-0.3, None), "noise_scale": 0.0},
]


@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("case", range(len(GRAD_CASES)))
def test_gradcheck(backend, case):
    kw = dict(step_size=0.3, seed=3, offset=11, backend=backend, **GRAD_CASES[case])
    x = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    g = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, g: thermokern.langevin_step(x, g, **kw), (x, g))


@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_backward_matches_reference(backend, dtype):
    kw = {"step_size": 0.2, "grad_clip": 1.0, "clamp": (-0.8, 0.9), "seed": 5, "offset": 2}
    x, g = _inputs((7, 37), dtype)
    x.requires_grad_(True)
    g.requires_grad_(True)
    out = thermokern.langevin_step(x, g, backend=backend, **kw)
    up = torch.randn(out.shape, dtype=torch.float64).to(dtype)
    gx, gg = torch.autograd.grad(out, (x, g), up)
    assert gx.dtype == dtype and gg.dtype == dtype
    xr, gr = x.detach().double().requires_grad_(True), g.detach().double().requires_grad_(True)
    rx, rg = torch.autograd.grad(reference.langevin_step(xr, gr, **kw), (xr, gr), up.double())
    assert_close(gx, rx, dtype, grad=True)
    assert_close(gg, rg, dtype, grad=True)
    # the masks: zero where the output sits on a bound (16-bit outputs can round onto a bound
    # from inside, so only for float32/64) or the gradient was clipped
    if dtype in (torch.float32, torch.float64):
        clamped = (out.detach() == torch.tensor(-0.8, dtype=dtype)) | (
            out.detach() == torch.tensor(0.9, dtype=dtype)
        )
        assert clamped.any() and (gx[clamped] == 0).all() and (gg[clamped] == 0).all()
    assert (gg[(g.detach().abs() > 1.0)] == 0).all()


@pytest.mark.parametrize("backend", cpu_backends())
def test_gradient_only_where_needed(backend):
    """Only x requires grad (the usual case: grad is detached), and vice versa."""
    x = torch.randn(50, dtype=torch.float64, requires_grad=True)
    g = torch.randn(50, dtype=torch.float64)
    out = thermokern.langevin_step(x, g, step_size=0.1, clamp=(-1, 1), seed=0, backend=backend)
    (gx,) = torch.autograd.grad(out.sum(), x)
    inside = (out.detach() > -1) & (out.detach() < 1)
    assert torch.equal(gx, inside.double())
    g.requires_grad_(True)
    out = thermokern.langevin_step(x.detach(), g, step_size=0.1, seed=0, backend=backend)
    (gg,) = torch.autograd.grad(out.sum(), g)
    assert torch.equal(gg, torch.full_like(gg, -0.1))


@pytest.mark.parametrize("backend", cpu_backends())
def test_gradient_on_the_bounds(backend):
    """A value on a clamp bound counts as clamped, a gradient on +-grad_clip as clipped (as in
    torch.clamp's backward): zero gradient there, on every backend and the reference."""
    x = torch.tensor([0.0, 0.5, 1.0, 0.5], dtype=torch.float64, requires_grad=True)
    g = torch.tensor([0.0, 2.0, 0.0, -1.0], dtype=torch.float64, requires_grad=True)
    kw = {"step_size": 0.1, "noise_scale": 0.0, "grad_clip": 2.0, "clamp": (0.0, 1.0), "seed": 0}
    out = thermokern.langevin_step(x, g, backend=backend, **kw)
    gx, gg = torch.autograd.grad(out.sum(), (x, g))
    assert gx.tolist() == [0.0, 1.0, 0.0, 1.0]
    assert gg.tolist() == [0.0, 0.0, 0.0, -0.1]
    rx, rg = torch.autograd.grad(reference.langevin_step(x, g, **kw).sum(), (x, g))
    assert torch.equal(gx, rx) and torch.equal(gg, rg)


# ----------------------------------------------------------------------------- in-place twin
@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_inplace_twin(backend, dtype):
    x, g = _inputs((4, 131), dtype)
    kw = dict(STEP, seed=21, offset=9, backend=backend)
    expected = thermokern.langevin_step(x, g, **kw)
    y = x.clone()
    assert thermokern.langevin_step_(y, g, **kw) is y
    assert torch.equal(y, expected)
    # non-contiguous x: updated through its own strides
    base = x.t().contiguous()
    view = base.t()
    thermokern.langevin_step_(view, g, **kw)
    assert torch.equal(view, expected)
    # grad may be x itself: the gradient of |x|^2 / 2
    z = x.clone()
    expect_self = thermokern.langevin_step(z, z, **kw)
    thermokern.langevin_step_(z, z, **kw)
    assert torch.equal(z, expect_self)


@pytest.mark.parametrize("backend", cpu_backends())
def test_inplace_refuses_autograd(backend):
    x = torch.randn(10, requires_grad=True)
    g = torch.randn(10)
    with pytest.raises(RuntimeError, match="x requires grad"):
        thermokern.langevin_step_(x, g, step_size=0.1, seed=0, backend=backend)
    with pytest.raises(RuntimeError, match="grad requires grad"):
        thermokern.langevin_step_(x.detach(), g.requires_grad_(True), step_size=0.1, seed=0, backend=backend)
    with torch.no_grad():  # a sampler's update of a leaf: allowed
        thermokern.langevin_step_(x, g, step_size=0.1, seed=0, backend=backend)


@pytest.mark.parametrize("backend", [b for b in cpu_backends() if b != "reference"])
def test_inplace_partial_overlap_rejected(backend):
    x = torch.randn(20)
    with pytest.raises(RuntimeError, match="overlap|memory location"):
        thermokern.langevin_step_(x[1:], x[:-1], step_size=0.1, seed=0, backend=backend)


# ----------------------------------------------------------------------------- compile / opcheck
def test_compile_fullgraph_cpu():
    torch._dynamo.reset()

    def fwd_bwd(x, g):
        return (
            thermokern.langevin_step(
                x * 2.0, g, step_size=0.1, grad_clip=1.0, clamp=(-1.0, 1.0), seed=3, backend="cpu"
            )
            .square()
            .sum()
        )

    compiled = torch.compile(fwd_bwd, fullgraph=True)
    x = torch.randn(6, 33, dtype=torch.float32, requires_grad=True)
    g = torch.randn(6, 33, dtype=torch.float32, requires_grad=True)
    out = compiled(x, g)
    gx, gg = torch.autograd.grad(out, (x, g))
    ref = fwd_bwd(x, g)
    rx, rg = torch.autograd.grad(ref, (x, g))
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(gx, rx)
    torch.testing.assert_close(gg, rg)

    inplace = torch.compile(
        lambda x, g: thermokern.langevin_step_(x, g, step_size=0.1, seed=5, offset=4, backend="cpu"),
        fullgraph=True,
    )
    y = x.detach().clone()
    with torch.no_grad():
        inplace(y, g.detach())
    assert torch.equal(y, thermokern.langevin_step(x.detach(), g.detach(), step_size=0.1, seed=5, offset=4))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(3, 7), (2, 300), (0, 5)], ids=str)
def test_opcheck(dtype, shape):
    ops = torch.ops.thermokern
    x, g = _inputs(shape, dtype)
    seed, offset = torch.tensor(3), torch.tensor(12)
    args = (0.1, 0.2, 1.0, -0.9, 0.8)
    torch.library.opcheck(ops.langevin_step.default, (x, g, seed, offset, *args))
    torch.library.opcheck(ops.langevin_step.default, (x.clone().requires_grad_(True), g, seed, offset, *args))
    torch.library.opcheck(ops.langevin_step.default, (x, g, seed, offset, 0.1, 0.0, None, None, None))
    torch.library.opcheck(ops.langevin_step_.default, (x.clone(), g, seed, offset, *args))
    up = torch.randn(shape).to(dtype)
    torch.library.opcheck(ops.langevin_step_bwd.default, (up, x, g, seed, offset, *args))


# ----------------------------------------------------------------------------- errors
def test_errors():
    x, g = torch.randn(3, 4), torch.randn(3, 4)
    ok = {"step_size": 0.1, "seed": 0}

    def call(**kw):
        args = dict(ok)
        args.update(kw)
        xx, gg = args.pop("x", x), args.pop("grad", g)
        return thermokern.langevin_step(xx, gg, **args)

    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="step_size"):
            call(step_size=bad)
    for bad in (0.0, -2.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="temperature"):
            call(temperature=bad)
    for bad in (-0.1, math.nan, math.inf):
        with pytest.raises(ValueError, match="noise_scale"):
            call(noise_scale=bad)
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="grad_clip"):
            call(grad_clip=bad)
    with pytest.raises(ValueError, match="clamp"):
        call(clamp=(1.0, -1.0))
    with pytest.raises(ValueError, match="clamp"):
        call(clamp=(math.nan, 1.0))
    with pytest.raises(TypeError, match="clamp"):
        call(clamp=1.0)
    with pytest.raises(TypeError, match="step_size"):
        call(step_size="0.1")
    with pytest.raises(ValueError, match="grad"):
        call(grad=torch.randn(4, 3))
    with pytest.raises(TypeError, match="x"):
        call(x=torch.ones(3, 4, dtype=torch.int64))
    with pytest.raises(TypeError, match="grad"):
        call(grad=torch.ones(3, 4, dtype=torch.int32))
    with pytest.raises(TypeError, match="x"):
        call(x=[[1.0]])
    for bad in (1.5, "1", None, True, torch.tensor(1.0), torch.tensor([1])):
        with pytest.raises((TypeError, ValueError), match="seed"):
            call(seed=bad)
    for bad in (1.5, None, torch.tensor(1, dtype=torch.int32), torch.tensor([1, 2])):
        with pytest.raises((TypeError, ValueError), match="offset"):
            call(offset=bad)
    for bad in (-1, 2**63, torch.tensor(-3)):
        with pytest.raises(ValueError, match="offset"):
            call(offset=bad)
    for bad in (2**64, -(2**63) - 1):
        with pytest.raises(ValueError, match="seed"):
            call(seed=bad)
    with pytest.raises(ValueError, match="backend"):
        call(backend="nope")
    # grad of another dtype is cast to x's
    out = call(grad=g.double())
    assert out.dtype == torch.float32
    # the C++ op checks too (names the argument)
    ops = torch.ops.thermokern
    with pytest.raises(ValueError, match="step_size"):
        ops.langevin_step(x, g, torch.tensor(0), torch.tensor(0), -1.0, 0.1)
    with pytest.raises(TypeError, match="seed"):
        ops.langevin_step(x, g, torch.tensor(0.0), torch.tensor(0), 1.0, 0.1)
    with pytest.raises(ValueError, match="clamp"):
        ops.langevin_step(x, g, torch.tensor(0), torch.tensor(0), 1.0, 0.1, None, 2.0, 1.0)
    with pytest.raises(TypeError, match="grad"):
        ops.langevin_step(x, g.double(), torch.tensor(0), torch.tensor(0), 1.0, 0.1)


@pytest.mark.skipif(not HAS_GPU, reason="needs an NVIDIA GPU")
@pytest.mark.cuda
def test_gpu_device_mismatch_errors():
    x = torch.randn(3, 4, device="cuda")
    with pytest.raises(ValueError, match="grad"):
        thermokern.langevin_step(x, torch.randn(3, 4), step_size=0.1, seed=0)
    with pytest.raises(ValueError, match="seed"):
        thermokern.langevin_step(x, x, step_size=0.1, seed=torch.tensor(0))


# ----------------------------------------------------------------------------- statistics
def _ula_variance(backend, chains, burn_in, steps, s=1.0, eta=0.5, dtype=torch.float32):
    """Unadjusted Langevin on N(0, s^2) (grad = x / s^2, T = 1) from x = 0; returns the mean of
    x^2 over chains and the steps after burn-in, and its standard error for the AR(1) chain."""
    x = torch.zeros(chains, dtype=dtype)
    acc = torch.zeros((), dtype=torch.float64)
    for k in range(burn_in + steps):
        thermokern.langevin_step_(x, x / s**2, step_size=eta, seed=99, offset=k * chains, backend=backend)
        if k >= burn_in:
            acc += x.double().square().mean()
    v = s**2 / (1.0 - eta / (2.0 * s**2))  # the biased stationary variance of ULA
    a = 1.0 - eta / s**2  # x_{k+1} = a x_k + sqrt(2 eta) xi: AR(1), x^2 has lag-k correlation a^2k
    se = math.sqrt(2.0 * v * v * (1.0 + a * a) / (1.0 - a * a) / (chains * steps))
    return float(acc) / steps, v, se


@pytest.mark.parametrize("backend", cpu_backends())
def test_ula_stationary_variance(backend):
    """ULA's known bias: stationary variance T s^2 / (1 - eta / (2 s^2)) = 4/3 for s = 1,
    eta = 0.5, not s^2 = 1. The estimate must lie within 6 standard errors of it (a
    false-failure rate of 2e-9 for a correct sampler; the seeds are fixed, so the run is
    deterministic), which also rules out the unbiased value by > 40 standard errors."""
    chains, burn_in, steps = (8192, 40, 160) if backend == "cpu" else (4096, 30, 60)
    est, v, se = _ula_variance(backend, chains, burn_in, steps)
    assert abs(est - v) < 6 * se, (est, v, se)
    assert abs(est - 1.0) > 40 * se  # the test can tell the biased from the unbiased variance


# ----------------------------------------------------------------------------- GPU
gpu = pytest.mark.skipif(not HAS_GPU, reason="needs an NVIDIA GPU")


@pytest.mark.cuda
@gpu
@pytest.mark.parametrize("backend", gpu_backends() or ["cuda"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(5, 7), (3, 43), (4099,), LARGE, (1 << 20,)], ids=str)
def test_gpu_matches_cpu(backend, dtype, shape):
    x, g = _inputs(shape, dtype)
    kw = dict(STEP, seed=13, offset=2**32 - 7)
    out = thermokern.langevin_step(x.cuda(), g.cuda(), backend=backend, **kw)
    assert_close(out.cpu(), _ref(x, g, **kw), dtype)
    # the noise itself: same normals as the CPU within 1e-6 relative
    if dtype in NOISE_TOL:
        atol, rtol = NOISE_TOL[dtype]
        n = _noise(backend, shape[0] * 4 + 3, dtype, device="cuda").cpu().double()
        torch.testing.assert_close(n, reference.langevin_noise(n.numel(), 5, 0), atol=atol, rtol=rtol)


@pytest.mark.cuda
@gpu
@pytest.mark.parametrize("backend", gpu_backends() or ["cuda"])
def test_gpu_autograd_inplace_and_strides(backend):
    x = torch.randn(5, 7, dtype=torch.float64, device="cuda", requires_grad=True)
    g = torch.randn(5, 7, dtype=torch.float64, device="cuda", requires_grad=True)
    for kw in GRAD_CASES:

        def f(x, g, kw=kw):
            return thermokern.langevin_step(x, g, step_size=0.3, seed=3, backend=backend, **kw)

        assert torch.autograd.gradcheck(f, (x, g))
    base = torch.randn(9, 1001, device="cuda")
    for view in (base[:, 1:], base.t(), base[::2, 3:500]):
        gv = torch.randn_like(view)
        kw = dict(STEP, seed=1, offset=3, backend=backend)
        expected = thermokern.langevin_step(view, gv, **kw)
        assert_close(
            expected.cpu(),
            _ref(view.cpu(), gv.cpu(), **{k: v for k, v in kw.items() if k != "backend"}),
            torch.float32,
        )
        y = view.clone()
        thermokern.langevin_step_(y, gv, **kw)
        assert torch.equal(y, expected)


@pytest.mark.cuda
@gpu
@pytest.mark.parametrize("backend", gpu_backends() or ["cuda"])
def test_gpu_cuda_graph_replay_with_offsets(backend):
    """A captured step reads seed and offset from device memory: replays after offset.add_()
    equal eager steps at the new offsets."""
    n = 10007
    x0 = torch.randn(n, device="cuda")
    g = torch.randn(n, device="cuda")
    seed = torch.tensor(42, device="cuda")
    offset = torch.tensor(0, device="cuda")
    x = x0.clone()
    kw = {"step_size": 0.01, "clamp": (-3.0, 3.0), "backend": backend}
    thermokern.langevin_step_(x, g, seed=seed, offset=offset, **kw)  # warm-up (compiles Triton)
    x.copy_(x0)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        thermokern.langevin_step_(x, g, seed=seed, offset=offset, **kw)
    x.copy_(x0)
    expected = x0.clone()
    for k in range(3):
        offset.fill_(k * n)
        graph.replay()
        thermokern.langevin_step_(expected, g, seed=42, offset=k * n, **kw)
    torch.cuda.synchronize()
    assert torch.equal(x, expected)


@pytest.mark.cuda
@gpu
def test_gpu_ula_stationary_variance():
    for backend in gpu_backends():
        x = torch.zeros(1 << 16, device="cuda")
        acc = 0.0
        for k in range(240):
            thermokern.langevin_step_(x, x, step_size=0.5, seed=5, offset=k * x.numel(), backend=backend)
            if k >= 40:
                acc += float(x.double().square().mean())
        est, v = acc / 200, 4.0 / 3.0
        se = math.sqrt(2.0 * v * v * (1.25 / 0.75) / (x.numel() * 200))
        assert abs(est - v) < 6 * se, (backend, est)


def test_tolerance_table_covers_dtypes():
    assert set(TOLERANCES) == set(DTYPES)


_PTX_CHECK = r"""
import triton.language as tl
from _util import compile_sm90, sm90_dtypes, spill_bytes, vector_accesses
from thermokern.kernels import langevin as tk

common = {"seed_ptr": "*i64", "offset_ptr": "*i64", "n": "i64", "step_bits": "i64", "sigma_bits": "i64",
          "clip_bits": "i64", "lo_bits": "i64", "hi_bits": "i64"}
kernel = tk._langevin_step_kernel
for backward in (False, True):
    for ty, _, acc in sm90_dtypes():
        types = {p: ty for p in ("grad_out_ptr", "x_ptr", "grad_ptr", "out_ptr", "grad_grad_ptr")} | common
        consts = {"HAS_NOISE": True, "HAS_CLIP": True, "HAS_LO": True, "HAS_HI": True, "BACKWARD": backward,
                  "ACC": acc, "BLOCK_C": tk._block_c()[0]}
        assert set(types) | set(consts) == set(kernel.arg_names), kernel.arg_names  # every parameter typed here
        k = compile_sm90(kernel, consts, types, num_warps=tk._block_c()[1])
        assert not spill_bytes(k), (ty, backward)
        aligned = compile_sm90(kernel, consts, types, num_warps=tk._block_c()[1], aligned=True)
        assert all(vector_accesses(aligned)), (ty, backward)  # wide loads and stores
        ptx = k.asm["ptx"]
        assert "lg2.approx" not in ptx and "sin.approx" not in ptx and "cos.approx" not in ptx, ty
        assert "sqrt.rn" in ptx, ty
        assert ("div.rn.f32" if acc == tl.float32 else "div.rn.f64") in ptx, ty
# the Philox words kernel (philox_words: the noise stream's uniforms, for the tests)
types = {"out_ptr": "*i32", "seed_ptr": "*i64", "offset_ptr": "*i64", "n_ctr": "i64"}
k = compile_sm90(tk._philox_words_kernel, {"BLOCK_C": tk._block_c()[0]}, types, num_warps=tk._block_c()[1])
assert not spill_bytes(k), "philox_words"
print("ok")
"""


@pytest.mark.skipif("triton" not in cpu_backends(), reason="needs triton")
def test_triton_kernels_compile_for_sm90():
    """The Triton kernels lower to PTX for sm_90 without a GPU (a subprocess: the interpreter
    is on here), with correctly rounded division and square root and no approximate
    log/sin/cos instructions (which would break the 1e-6 agreement of the normals), without
    register spills at their launch tile, and with vector loads and stores on aligned tensors."""
    run_offline_triton_compile(_PTX_CHECK)


_PTX_CHECK_MALA_SGLD = r"""
import triton.language as tl
from _util import compile_sm90, sm90_dtypes, spill_bytes, vector_accesses
from thermokern.kernels import mala, sgld

block_c, warps_c = mala._block_c()
for ty, acc_ty, acc in sm90_dtypes():
    for per_chain in (False, True):
        for d in (4096, 2):  # long chains (one per program) and 2-D toy samples (many per program)
            block_n, block_d, warps = mala._blocks(d)
            consts = {"ACC": acc, "BLOCK_N": block_n, "BLOCK_D": block_d, "HAS_CHAIN_STEP": per_chain,
                      "HAS_CHAIN_TEMP": per_chain, "CHAIN_STEP_STRIDE": 1, "CHAIN_TEMP_STRIDE": 0}
            types = {"e_ptr": acc_ty, "ep_ptr": acc_ty, "log_alpha_ptr": acc_ty, "accepted_ptr": "*i1",
                     "seed_ptr": "*i64", "offset_ptr": "*i64", "chain_step_ptr": acc_ty, "chain_temp_ptr": acc_ty}
            k = compile_sm90(mala._mala_accept_kernel, consts, types, ptr=ty, num_warps=warps)
            assert not spill_bytes(k), ("mala_accept", ty, per_chain, d)
        # long aligned chains: wide loads in both sweeps and wide stores
        block_n, block_d, warps = mala._blocks(4096)
        consts |= {"BLOCK_N": block_n, "BLOCK_D": block_d}
        k = compile_sm90(mala._mala_accept_kernel, consts, types, ptr=ty, num_warps=warps, aligned=True)
        assert all(vector_accesses(k)), ("mala_accept", ty, per_chain, vector_accesses(k))
    consts = {"ACC": acc, "BLOCK_C": block_c, "STEP_STRIDE": 1, "TEMP_STRIDE": 0}
    types = {"seed_ptr": "*i64", "offset_ptr": "*i64", "step_ptr": acc_ty, "temp_ptr": acc_ty}
    k = compile_sm90(mala._mala_proposal_kernel, consts, types, ptr=ty, num_warps=warps_c)
    assert not spill_bytes(k), ("mala_proposal", ty)
    ptx = k.asm["ptx"]
    assert "sqrt.approx" not in ptx and "lg2.approx" not in ptx, ty
block_c, warps_c = sgld._block_c(1 << 20)
for dtype in (tl.float32, tl.bfloat16, tl.float64):
    consts = {"DTYPE": dtype, "HAS_NOISE": True, "HAS_WD": True, "BLOCK_C": block_c,
              "ACC": tl.float64 if dtype == tl.float64 else tl.float32}
    assert not spill_bytes(compile_sm90(sgld._sgld_step_kernel, consts, num_warps=warps_c)), ("sgld", dtype)
print("ok")
"""


@pytest.mark.skipif("triton" not in cpu_backends(), reason="needs triton")
def test_triton_mala_sgld_kernels_compile_for_sm90():
    """The MALA accept (with and without per-chain parameters), MALA proposal and SGLD
    multi-tensor kernels lower to sm_90 code without a GPU (the proposal's noise without
    approximate square roots or logarithms), without register spills at their launch tiles,
    and MALA accept with vector loads and stores on aligned chains."""
    run_offline_triton_compile(_PTX_CHECK_MALA_SGLD)

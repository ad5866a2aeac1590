"""mala_step / mala_accept (the fused accept/reject on every backend against the float64
reference, its counter layout), the exactness of MALA and the bias of ULA on Gaussians,
thermokern.sampling (langevin_sample, schedules, stats, progress, errors, ReplayBuffer), the
EBM demo and the sampler benchmark.

The statistical tests use fixed seeds, so they are deterministic; each bound's comment gives
the probability that a correct sampler would fail it for a random seed (its false-failure
rate)."""

from __future__ import annotations

import math
import sys
import types

import pytest
import torch
from _util import DTYPES
from conftest import HAS_GPU, cpu_backends

import thermokern
from thermokern import _C, reference, sampling
from thermokern.ops import mala


def _quartic(x: torch.Tensor) -> torch.Tensor:
    """A non-Gaussian energy per chain (double well per element, tilted)."""
    flat = x.reshape(x.shape[0], math.prod(x.shape[1:])).float()
    return ((flat.square() - 1.0).square() + 0.3 * flat).sum(1)


def _mala_inputs(shape, dtype, step=0.05, seed=3, offset=5):
    """x, x', dE/dx, dE/dx', E, E' of one MALA step on ``_quartic`` (proposal by the reference)."""
    x = torch.randn(shape, dtype=torch.float64).to(dtype)
    e, g = mala.energy_and_grad(_quartic, x)
    xp = thermokern.langevin_step(x, g, step_size=step, seed=seed, offset=offset, backend="reference")
    ep, gp = mala.energy_and_grad(_quartic, xp)
    return x, xp, g, gp, e, ep


# log alpha against the float64 reference: the kernels evaluate the factored sum in the
# accumulation dtype (float32 for 16-bit inputs), the reference the textbook formula in float64.
LOG_ALPHA_TOL = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (2e-4, 1e-5),
    torch.float16: (2e-4, 1e-5),
    torch.bfloat16: (2e-4, 1e-5),
}

# Shapes: chains x elements per chain; the CPU kernel's vectors hold 8 (AVX2) or 16 (AVX-512)
# floats, Triton programs take several short chains each.
ACCEPT_SHAPES = [
    (37, 13),  # odd chains (not a multiple of 4: the last counter's words partly used), vector tail
    (5,),  # 1-D x: one element per chain
    (3, 2, 43),  # chains of 86 elements: several vectors and a tail (16-bit: two halves)
    (64, 300),  # many vectors per chain
    (0, 4),  # no chains
]


# ----------------------------------------------------------------------------- fused kernel
@pytest.mark.parametrize("backend", [b for b in cpu_backends() if b != "reference"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", ACCEPT_SHAPES, ids=str)
def test_mala_accept_matches_reference(backend, dtype, shape):
    """Same decisions and x_new as the float64 reference for the same seed and offset. (A
    decision could only flip where log u and log alpha agree to ~1e-6, which none of these
    fixed inputs comes close to; the assertion message would show the margin.)"""
    x, xp, g, gp, e, ep = _mala_inputs(shape, dtype)
    kw = {"step_size": 0.05, "temperature": 1.0, "seed": 3, "offset": 5}
    x_new, acc, la = mala.mala_accept(x, xp, g, gp, e, ep, backend=backend, **kw)
    r_new, r_acc, r_la = mala.mala_accept(x, xp, g, gp, e, ep, backend="reference", **kw)
    assert x_new.shape == x.shape and x_new.dtype == dtype and x_new.is_contiguous()
    assert acc.dtype == torch.bool and acc.shape == (shape[0],)
    assert la.dtype == reference.acc_dtype(dtype)
    log_u = torch.log(reference.mala_uniform(shape[0], x.numel(), 3, 5))
    assert torch.equal(acc, r_acc), (acc, r_acc, (log_u - r_la.double()).abs().min())
    assert torch.equal(x_new, r_new)
    atol, rtol = LOG_ALPHA_TOL[dtype]
    torch.testing.assert_close(la.double(), r_la.double(), atol=atol, rtol=rtol)
    if shape[0] >= 37:  # the step size gives a mix of accepts and rejects
        assert 0 < int(acc.sum()) < shape[0]


def test_mala_accept_every_isa(cpu_isa):
    for dtype in DTYPES:
        x, xp, g, gp, e, ep = _mala_inputs((41, 37), dtype)
        kw = {"step_size": 0.05, "seed": 3, "offset": 5}
        got = mala.mala_accept(x, xp, g, gp, e, ep, backend="cpu", **kw)
        want = mala.mala_accept(x, xp, g, gp, e, ep, backend="reference", **kw)
        assert torch.equal(got[1], want[1]) and torch.equal(got[0], want[0])


def test_per_chain_mala_every_isa(cpu_isa):
    """mala_proposal and mala_accept's per-chain form on each CPU kernel variant, against the
    reference (chains of 37 elements: the chains change inside the kernel's vectors and noise
    blocks; one offset puts a block across the 2^32 counter boundary)."""
    for dtype in DTYPES:
        x, xp, g, gp, e, ep = _mala_inputs((41, 37), dtype)
        acc = e.dtype
        eta = torch.linspace(0.01, 0.2, 41, dtype=acc)
        t = torch.linspace(0.5, 2.0, 41, dtype=acc)
        for offset in (5, 2**32 - 100):
            s, o = torch.tensor(3), torch.tensor(offset)
            got = torch.ops.thermokern.mala_proposal(x, g, s, o, eta, t)
            want = reference.kernels.mala_proposal(x, g, s, o, eta, t)
            tol = 1e-2 if dtype in (torch.bfloat16, torch.float16) else 1e-5
            torch.testing.assert_close(got, want, rtol=tol, atol=tol)
        got = torch.ops.thermokern.mala_accept(x, xp, g, gp, e, ep, s, o, 1.0, 1.0, eta, t)
        want = reference.kernels.mala_accept(x, xp, g, gp, e, ep, s, o, 1.0, 1.0, eta, t)
        assert torch.equal(got[1], want[1]) and torch.equal(got[0], want[0])


@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("seed,offset", [(0, 0), (7, 2**32 - 3), (2**64 - 5, 2**40 + 1)])
def test_mala_uniform_counter_layout(backend, seed, offset):
    """With x' = x and g = g' = 0, log alpha = -(E' - E) / T exactly; E' - E = -T ln 0.3 makes
    a chain accept iff its uniform is <= 0.3: the decisions expose the documented uniforms
    (word c % 4 of counter offset + ceil(numel / 4) + c // 4)."""
    chains, d, t = 1001, 3, 1.7
    x = torch.randn(chains, d)
    zero = torch.zeros_like(x)
    e = torch.randn(chains)
    ep = e - t * math.log(0.3)
    seed_arg = seed - 2**64 if seed >= 2**63 else seed
    _, acc, la = mala.mala_accept(
        x, x, zero, zero, e, ep, step_size=0.1, temperature=t, seed=seed_arg, offset=offset, backend=backend
    )
    u = reference.mala_uniform(chains, x.numel(), seed, offset)
    assert torch.equal(acc, u <= 0.3)
    assert abs(float(acc.double().mean()) - 0.3) < 5 * math.sqrt(0.21 / chains)  # 5 sigma: 6e-7
    # (E' - E is float32-rounded: log alpha is ln 0.3 to float32 precision)
    torch.testing.assert_close(
        la.double(), torch.full((chains,), math.log(0.3), dtype=torch.float64), atol=2e-6, rtol=0
    )


@pytest.mark.parametrize("backend", cpu_backends())
def test_mala_accept_non_finite_energies(backend):
    """E' = +inf or NaN rejects, E' = -inf accepts; the rows follow the decisions."""
    x = torch.zeros(4, 3)
    xp = torch.ones(4, 3)
    zero = torch.zeros_like(x)
    e = torch.zeros(4)
    ep = torch.tensor([math.inf, math.nan, -math.inf, 0.0])
    x_new, acc, la = mala.mala_accept(x, xp, zero, zero, e, ep, step_size=0.1, seed=1, backend=backend)
    assert acc[:3].tolist() == [False, False, True]
    assert bool(acc[3])  # log alpha = 0: every u in (0, 1] accepts
    assert torch.equal(x_new[:2], x[:2]) and torch.equal(x_new[2:], xp[2:])
    assert la[0] == -math.inf and math.isnan(la[1]) and la[2] == math.inf


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(7, 5), (3, 2, 300), (0, 4)], ids=str)
def test_opcheck_mala_accept(dtype, shape):
    x, xp, g, gp, e, ep = _mala_inputs(shape, dtype)
    args = (x, xp, g, gp, e, ep, torch.tensor(3), torch.tensor(5), 0.05, 1.3)
    torch.library.opcheck(torch.ops.thermokern.mala_accept.default, args)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(7, 5), (3, 2, 300), (0, 4)], ids=str)
def test_opcheck_per_chain_mala(dtype, shape):
    """The per-chain forms: mala_accept's chain tensors and mala_proposal."""
    x, xp, g, gp, e, ep = _mala_inputs(shape, dtype)
    acc = e.dtype
    eta = torch.rand(shape[0], dtype=acc) + 0.01
    t = torch.rand(shape[0], dtype=acc) + 0.5
    s, o = torch.tensor(3), torch.tensor(5)
    torch.library.opcheck(
        torch.ops.thermokern.mala_accept.default, (x, xp, g, gp, e, ep, s, o, 1.0, 1.0, eta, t)
    )
    torch.library.opcheck(torch.ops.thermokern.mala_proposal.default, (x, g, s, o, eta, t))
    torch.library.opcheck(torch.ops.thermokern.mala_proposal.default, (x, g, s, o, eta[:1], t[:1]))


def test_per_chain_mala_op_errors():
    x, xp, g, gp, e, ep = _mala_inputs((4, 3), torch.float32)
    s, o = torch.tensor(0), torch.tensor(0)
    eta, t = torch.full((4,), 0.1), torch.ones(4)
    with pytest.raises(ValueError, match="chain_step_size: expected 1 or 4"):
        torch.ops.thermokern.mala_accept(x, xp, g, gp, e, ep, s, o, 0.1, 1.0, eta[:3], None)
    with pytest.raises(TypeError, match="chain_temperature"):
        torch.ops.thermokern.mala_accept(x, xp, g, gp, e, ep, s, o, 0.1, 1.0, None, t.double())
    prop = torch.ops.thermokern.mala_proposal
    with pytest.raises(ValueError, match="step_size: expected 1 or 4"):
        prop(x, g, s, o, torch.full((2,), 0.1), t)
    with pytest.raises(ValueError, match="grad"):
        prop(x, g[:, :2], s, o, eta, t)


def test_mala_accept_op_errors():
    x, xp, g, gp, e, ep = _mala_inputs((4, 3), torch.float32)
    op = torch.ops.thermokern.mala_accept
    s, o = torch.tensor(0), torch.tensor(0)
    with pytest.raises(ValueError, match="x_prop"):
        op(x, xp[:, :2], g, gp, e, ep, s, o, 0.1, 1.0)
    with pytest.raises(ValueError, match="energy_prop"):
        op(x, xp, g, gp, e, ep[:3], s, o, 0.1, 1.0)
    with pytest.raises(TypeError, match="energy"):
        op(x, xp, g, gp, e.double(), ep, s, o, 0.1, 1.0)
    with pytest.raises(ValueError, match="temperature"):
        op(x, xp, g, gp, e, ep, s, o, 0.1, 0.0)
    with pytest.raises(ValueError, match="step_size"):
        op(x, xp, g, gp, e, ep, s, o, -0.1, 1.0)
    with pytest.raises(TypeError, match="seed"):
        op(x, xp, g, gp, e, ep, torch.tensor(0.0), o, 0.1, 1.0)
    with pytest.raises(ValueError, match="x"):
        op(torch.tensor(1.0), torch.tensor(1.0), torch.tensor(1.0), torch.tensor(1.0), e, ep, s, o, 0.1, 1.0)


# ----------------------------------------------------------------------------- mala_step
def test_mala_counters():
    assert thermokern.mala_counters((37, 13)) == 121 + 10  # ceil(481 / 4) + ceil(37 / 4)
    assert thermokern.mala_counters(torch.zeros(8, 4)) == 8 + 2
    assert sampling.counters_per_step((37, 13), metropolis=True) == 131
    assert sampling.counters_per_step((37, 13)) == 121
    with pytest.raises(ValueError, match="dimension"):
        thermokern.mala_counters(())


@pytest.mark.parametrize("backend", cpu_backends())
def test_mala_step_proposal_is_langevin_step(backend):
    """With a flat energy every proposal is accepted (g = g' = 0, E = E'), so the step returns
    langevin_step's proposal itself: its noise comes from counters offset .. offset +
    ceil(numel / 4) - 1, as documented."""
    x = torch.randn(9, 7)
    flat = lambda x: 0.0 * x.sum(1)
    x_new, acc = thermokern.mala_step(
        x, flat, step_size=0.2, temperature=1.5, seed=11, offset=40, backend=backend
    )
    assert bool(acc.all())
    want = thermokern.langevin_step(
        x, torch.zeros_like(x), step_size=0.2, temperature=1.5, seed=11, offset=40, backend=backend
    )
    assert torch.equal(x_new, want)


@pytest.mark.parametrize("backend", [b for b in cpu_backends() if b != "reference"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_mala_step_matches_reference(backend, dtype):
    x = torch.randn(33, 6, dtype=dtype)
    kw = {"step_size": 0.1, "temperature": 0.7, "seed": 5, "offset": 17}
    x_new, acc = thermokern.mala_step(x, _quartic, backend=backend, **kw)
    r_new, r_acc = thermokern.mala_step(x, _quartic, backend="reference", **kw)
    assert torch.equal(acc, r_acc)
    # the proposals differ by the float32 noise series (~1e-6 relative) between backends
    torch.testing.assert_close(x_new, r_new, atol=1e-5, rtol=1e-5)
    assert not x_new.requires_grad and x_new.dtype == dtype


def test_mala_step_not_differentiable_and_leaves_params_alone():
    net = torch.nn.Linear(3, 1)
    x = torch.randn(16, 3, requires_grad=True)
    x_new, acc = thermokern.mala_step(x, lambda z: net(z).squeeze(-1), step_size=0.1, seed=0)
    assert not x_new.requires_grad and not acc.requires_grad
    assert net.weight.grad is None and x.grad is None


def test_mala_step_errors():
    x = torch.randn(8, 2)
    ok = lambda x: x.square().sum(1)
    with pytest.raises(ValueError, match="energy_fn.*shape \\(8,\\).*squeeze"):
        thermokern.mala_step(x, lambda x: x.square().sum(1, keepdim=True), step_size=0.1, seed=0)
    with pytest.raises(ValueError, match="energy_fn: expected one energy per chain"):
        thermokern.mala_step(x, lambda x: x.square().sum(), step_size=0.1, seed=0)
    with pytest.raises(TypeError, match="energy_fn"):
        thermokern.mala_step(x, "energy", step_size=0.1, seed=0)
    with pytest.raises(TypeError, match="energy_fn"):
        thermokern.mala_step(x, lambda x: x.sum(1).long(), step_size=0.1, seed=0)
    with pytest.raises(RuntimeError, match="energy_fn.*does not depend on x"):
        thermokern.mala_step(x, lambda x: x.detach().sum(1), step_size=0.1, seed=0)
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="step_size"):
            thermokern.mala_step(x, ok, step_size=bad, seed=0)
        with pytest.raises(ValueError, match="temperature"):
            thermokern.mala_step(x, ok, step_size=0.1, temperature=bad, seed=0)
    with pytest.raises(ValueError, match="x"):
        thermokern.mala_step(torch.tensor(1.0), ok, step_size=0.1, seed=0)
    with pytest.raises(TypeError, match="x"):
        thermokern.mala_step(torch.ones(3, 2, dtype=torch.int64), ok, step_size=0.1, seed=0)
    with pytest.raises(ValueError, match="offset"):
        thermokern.mala_step(x, ok, step_size=0.1, seed=0, offset=-1)
    with pytest.raises(ValueError, match="backend"):
        thermokern.mala_step(x, ok, step_size=0.1, seed=0, backend="nope")


# ----------------------------------------------------------------------------- statistics
def test_mala_reaches_exact_variance_1d():
    """MALA on N(0, s^2) at temperature T (E = x^2 / (2 s^2)) from x = 3 s, with a step so
    large (eta = 0.8 s^2) that ULA's variance would be T s^2 / (1 - 0.4) = 1.67 T s^2. After
    30 steps of burn-in (an accepted step shrinks the mean by 1 - eta / s^2 = 0.2, and ~85 % of
    the steps accept; with these seeds the mean of x^2 is within 2 % of the target after 5
    steps, so nothing measurable is left of the start after 30), the per-chain time averages of x^2 over 100 steps are i.i.d.
    across the 2048 chains; their mean must be within 5 estimated standard errors of T s^2
    (false-failure rate 6e-7) and, to show the test has power, > 20 of them away from ULA's
    biased value."""
    s, t = 1.5, 0.8
    eta = 0.8 * s * s
    chains, burn_in, steps = 2048, 30, 100
    x = torch.full((chains, 1), 3 * s, dtype=torch.float64)
    energy = lambda x: x.square().sum(1) / (2 * s * s)
    per_chain = torch.zeros(chains, dtype=torch.float64)
    counters = thermokern.mala_counters(x)
    accepted = 0
    for k in range(burn_in + steps):
        x, acc = thermokern.mala_step(x, energy, step_size=eta, temperature=t, seed=2024, offset=k * counters)
        if k >= burn_in:
            per_chain += x[:, 0].square() / steps
            accepted += int(acc.sum())
    est, se = float(per_chain.mean()), float(per_chain.std() / math.sqrt(chains))
    target, ula = t * s * s, t * s * s / (1 - eta / (2 * s * s))
    assert abs(est - target) < 5 * se, (est, target, se)
    assert abs(est - ula) > 20 * se
    assert 0.3 < accepted / (chains * steps) < 0.95  # a real mix of accepts and rejects


S2 = torch.tensor([[1.0, 0.6], [0.6, 0.5]], dtype=torch.float64)  # eigenvalues 1.40, 0.10


def _gaussian_energy(cov: torch.Tensor):
    prec = torch.linalg.inv(cov)

    def energy(x):
        return 0.5 * ((x @ prec.to(x.dtype)) * x).sum(1)

    return energy


def _cov_bounds(est: torch.Tensor, cov: torch.Tensor, chains: int) -> torch.Tensor:
    """|est - cov| in units of the standard error of the mean of x_i x_j for zero-mean
    Gaussian samples: Var(x_i x_j) = S_ii S_jj + S_ij^2."""
    var = torch.outer(cov.diagonal(), cov.diagonal()) + cov.square()
    return (est - cov).abs() / (var / chains).sqrt()


@pytest.mark.parametrize("backend", ["cpu"])
def test_mala_exact_covariance_2d(backend):
    """langevin_sample(metropolis=True) on a correlated 2-D Gaussian (condition number 14)
    with eta = 0.15, where ULA's stationary covariance is inv(P - eta P^2 / 2) (P the
    precision): its variance along the stiff direction quadruples. Chains start exactly from N(0, S) (drawn
    with a fixed generator), so MALA, which leaves N(0, S) invariant, must still sample it after
    60 steps: each of the 3 entries of the mean of x x^T over 8192 independent chains within 5
    standard errors of S (false-failure rate 3 x 6e-7). ULA from the same start ends within 5
    standard errors of its own biased covariance (its distance to it after 60 steps is
    0.893^120 < 2e-6 of their difference) and > 15 away from S in some entry (30 expected)."""
    chains, n_steps, eta = 8192, 60, 0.15
    gen = torch.Generator().manual_seed(7)
    chol = torch.linalg.cholesky(S2)
    x0 = (torch.randn(chains, 2, generator=gen, dtype=torch.float64) @ chol.T).float()
    energy = _gaussian_energy(S2)
    x, stats = sampling.langevin_sample(
        energy,
        x0,
        n_steps=n_steps,
        step_size=eta,
        metropolis=True,
        seed=1,
        return_stats=True,
        backend=backend,
    )
    est = x.double().T @ x.double() / chains
    assert (_cov_bounds(est, S2, chains) < 5).all(), (est, S2)
    assert 0.3 < stats.mean_acceptance < 0.95
    prec = torch.linalg.inv(S2)
    ula_cov = torch.linalg.inv(prec - eta * prec @ prec / 2)
    x = sampling.langevin_sample(energy, x0, n_steps=n_steps, step_size=eta, seed=1, backend=backend)
    est = x.double().T @ x.double() / chains
    assert (_cov_bounds(est, ula_cov, chains) < 5).all(), (est, ula_cov)
    assert (_cov_bounds(est, S2, chains) > 15).any()


def test_ula_biased_variance():
    """ULA via langevin_sample on N(0, s^2) at T = 1.5, eta = 0.5 (s = 1) from x = 0: x_k is
    exactly Gaussian with variance v (1 - a^2k), a = 1 - eta / s^2 = 0.5, v = T s^2 /
    (1 - eta / (2 s^2)) = 2 (ULA's bias; the target is T s^2 = 1.5). The mean of x^2 over 32768
    independent chains after 40 steps has standard error v sqrt(2 / n): within 5 of them of
    v (false-failure rate 6e-7), and > 25 away from T s^2."""
    s, t, eta, chains, n_steps = 1.0, 1.5, 0.5, 32768, 40
    energy = lambda x: x.square().sum(1) / (2 * s * s)
    x = sampling.langevin_sample(
        energy, torch.zeros(chains, 1), n_steps=n_steps, step_size=eta, temperature=t, seed=3
    )
    v = t * s * s / (1 - eta / (2 * s * s))
    var_k = v * (1 - (1 - eta / s**2) ** (2 * n_steps))
    est, se = float(x.double().square().mean()), var_k * math.sqrt(2 / chains)
    assert abs(est - var_k) < 5 * se, (est, var_k, se)
    assert abs(est - t * s * s) > 25 * se


# ----------------------------------------------------------------------------- langevin_sample
def test_ula_sampler_is_the_documented_step_loop():
    """langevin_sample = langevin_step_ with offsets k * ceil(numel / 4) (step_rng)."""
    x0 = torch.randn(6, 5)
    kw = {"noise_scale": 0.05, "grad_clip": 2.0, "clamp": (-1.5, 1.5)}
    got = sampling.langevin_sample(_quartic, x0, n_steps=4, step_size=0.02, seed=9, **kw)
    x = x0.clone()
    counters = (x.numel() + 3) // 4
    for k in range(4):
        _, g = mala.energy_and_grad(_quartic, x)
        thermokern.langevin_step_(x, g, step_size=0.02, seed=9, offset=k * counters, **kw)
    assert torch.equal(got, x)
    assert sampling.step_rng(9, 3, counters) == (9, 3 * counters)


def test_mala_sampler_is_the_documented_step_loop():
    """langevin_sample(metropolis=True) caches E and dE/dx of the accepted state, and is
    bit-identical to mala_step with offsets k * mala_counters(x)."""
    x0 = torch.randn(10, 3)
    calls = []

    def energy(x):
        calls.append(1)
        return _quartic(x)

    got, stats = sampling.langevin_sample(
        energy, x0, n_steps=5, step_size=0.1, temperature=0.8, metropolis=True, seed=4, return_stats=True
    )
    assert len(calls) == 1 + 5  # one evaluation per step, plus the initial state
    x = x0.clone()
    rates = []
    for k in range(5):
        x, acc = thermokern.mala_step(
            x, _quartic, step_size=0.1, temperature=0.8, seed=4, offset=k * thermokern.mala_counters(x)
        )
        rates.append(float(acc.double().mean()))
    assert torch.equal(got, x)
    torch.testing.assert_close(stats.acceptance_rate, torch.tensor(rates, dtype=torch.float64))


@pytest.mark.parametrize("metropolis", [False, True])
def test_sampler_backends_agree(metropolis):
    x0 = torch.randn(8, 3)
    kw = {"n_steps": 3, "step_size": 0.05, "metropolis": metropolis, "seed": 2}
    want = sampling.langevin_sample(_quartic, x0, backend="reference", **kw)
    for backend in cpu_backends():
        got = sampling.langevin_sample(_quartic, x0, backend=backend, **kw)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_sampler_determinism_and_inputs_untouched():
    x0 = torch.randn(16, 4)
    before = x0.clone()
    a = sampling.langevin_sample(_quartic, x0, n_steps=3, step_size=0.01, seed=1)
    b = sampling.langevin_sample(_quartic, x0, n_steps=3, step_size=0.01, seed=1)
    c = sampling.langevin_sample(_quartic, x0, n_steps=3, step_size=0.01, seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(x0, before)
    net = torch.nn.Linear(4, 1)
    x = sampling.langevin_sample(lambda z: net(z).squeeze(-1), x0, n_steps=2, step_size=0.1)
    assert net.weight.grad is None and not x.requires_grad
    assert torch.equal(sampling.langevin_sample(_quartic, x0, n_steps=0, step_size=0.1), x0)


@pytest.mark.parametrize("metropolis", [False, True])
def test_return_stats(metropolis):
    x0 = torch.randn(12, 2)
    _, stats = sampling.langevin_sample(
        _quartic,
        x0,
        n_steps=6,
        step_size=sampling.linear(0.1, 0.05),
        temperature=("geometric", 2.0, 0.5),
        metropolis=metropolis,
        return_stats=True,
    )
    assert isinstance(stats, sampling.SampleStats)
    for t in (stats.energy, stats.grad_norm, stats.step_size, stats.temperature):
        assert t.shape == (6,) and t.dtype == torch.float64
    torch.testing.assert_close(stats.energy[0], _quartic(x0).double().mean())
    _, g = mala.energy_and_grad(_quartic, x0)
    torch.testing.assert_close(stats.grad_norm[0], g.double().norm(dim=1).mean(), rtol=1e-5, atol=0)
    torch.testing.assert_close(stats.step_size, torch.linspace(0.1, 0.05, 6, dtype=torch.float64))
    assert stats.temperature[0] == 2.0 and abs(float(stats.temperature[-1]) - 0.5) < 1e-12
    if metropolis:
        assert stats.counters_per_step == thermokern.mala_counters(x0)
        assert ((stats.acceptance_rate >= 0) & (stats.acceptance_rate <= 1)).all()
        assert ((stats.accept_prob > 0) & (stats.accept_prob <= 1)).all()
        assert 0.0 <= stats.mean_acceptance <= 1.0
    else:
        assert (
            stats.counters_per_step == 6 and stats.acceptance_rate is None and stats.mean_acceptance is None
        )


# ----------------------------------------------------------------------------- schedules
def test_schedule_values():
    n = 5
    assert sampling.schedule_values(0.3, n) == [0.3] * n
    assert sampling.schedule_values(sampling.constant(2), n) == [2.0] * n
    lin = sampling.schedule_values(sampling.linear(1.0, 0.2), n)
    assert lin == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2])
    geo = sampling.schedule_values(sampling.geometric(1.0, 0.0625), n)
    assert geo == pytest.approx([1.0, 0.5, 0.25, 0.125, 0.0625])
    cos = sampling.schedule_values(sampling.cosine(1.0, 0.0 + 1e-9), 3)
    assert cos == pytest.approx([1.0, 0.5, 1e-9])
    assert sampling.schedule_values(("linear", 1.0, 0.2), n) == lin
    assert sampling.schedule_values(("cosine", 0.4, 0.1), n) == sampling.schedule_values(
        sampling.cosine(0.4, 0.1), n
    )
    assert sampling.schedule_values(lambda k: 0.1 * (k + 1), 3) == pytest.approx([0.1, 0.2, 0.3])
    assert sampling.schedule_values(sampling.linear(0.5, 0.1), 1) == [0.5]  # one step: the start
    assert sampling.schedule_values(sampling.linear(0.5, 0.1), 0) == []


def test_schedule_errors():
    with pytest.raises(ValueError, match="step_size.*step 0"):
        sampling.schedule_values(-0.1, 3, "step_size")
    with pytest.raises(ValueError, match="temperature.*step 4"):
        sampling.schedule_values(sampling.linear(1.0, 0.0), 5, "temperature")  # 0 at the end
    with pytest.raises(ValueError, match="step_size"):
        sampling.schedule_values(lambda k: math.nan, 2, "step_size")
    with pytest.raises(ValueError, match="unknown schedule"):
        sampling.schedule_values(("exponential", 1.0, 0.1), 2, "step_size")
    with pytest.raises(TypeError, match="needs its values"):
        sampling.schedule_values("linear", 2, "step_size")
    with pytest.raises(TypeError, match="bad arguments"):
        sampling.schedule_values(("linear", 1.0), 2, "step_size")
    with pytest.raises(ValueError, match="geometric"):
        sampling.geometric(1.0, 0.0)
    with pytest.raises(TypeError, match="step_size"):
        sampling.schedule_values([0.1, 0.2], 2, "step_size")


# ----------------------------------------------------------------------------- progress / errors
def test_progress_bar(monkeypatch):
    updates = []

    class FakeBar:
        def __init__(self, total, **kw):
            updates.append(("total", total))

        def update(self, n):
            updates.append(("update", n))

        def set_postfix(self, **kw):
            updates.append(("postfix", kw))

        def close(self):
            updates.append(("close",))

    fake = types.ModuleType("tqdm")
    fake_auto = types.ModuleType("tqdm.auto")
    fake_auto.tqdm = FakeBar
    fake.auto = fake_auto
    monkeypatch.setitem(sys.modules, "tqdm", fake)
    monkeypatch.setitem(sys.modules, "tqdm.auto", fake_auto)
    sampling.langevin_sample(
        _quartic, torch.randn(4, 2), n_steps=20, step_size=0.01, metropolis=True, progress=True
    )
    assert updates[0] == ("total", 20) and updates[-1] == ("close",)
    assert sum(1 for u in updates if u[0] == "update") == 20
    assert any(u[0] == "postfix" and "accept" in u[1] for u in updates)


def test_progress_without_tqdm(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    with pytest.raises(ImportError, match="progress=True needs tqdm.*pip install tqdm"):
        sampling.langevin_sample(_quartic, torch.randn(4, 2), n_steps=2, step_size=0.01, progress=True)


def test_cuda_graph_on_cpu_is_an_error():
    with pytest.raises(RuntimeError, match="cuda_graph=True needs CUDA tensors"):
        sampling.langevin_sample(_quartic, torch.randn(4, 2), n_steps=2, step_size=0.01, cuda_graph=True)


def test_sampler_errors():
    x0 = torch.randn(8, 2)

    def run(**kw):
        args = {"n_steps": 2, "step_size": 0.01}
        args.update(kw)
        return sampling.langevin_sample(args.pop("energy_fn", _quartic), args.pop("x0", x0), **args)

    for bad in (0.0, -0.1, math.inf, math.nan):
        with pytest.raises(ValueError, match="step_size"):
            run(step_size=bad)
        with pytest.raises(ValueError, match="temperature"):
            run(temperature=bad)
    with pytest.raises(TypeError, match="step_size"):
        run(step_size="0.1")
    with pytest.raises(ValueError, match="energy_fn.*one energy per chain"):
        run(energy_fn=lambda x: x.square())
    with pytest.raises(ValueError, match="energy_fn.*one energy per chain"):
        run(energy_fn=lambda x: x.square().sum(), metropolis=True)
    with pytest.raises(TypeError, match="energy_fn"):
        run(energy_fn=None)
    for name, value in (("noise_scale", 0.01), ("grad_clip", 1.0), ("clamp", (-1, 1))):
        with pytest.raises(ValueError, match=f"{name}.*metropolis"):
            run(metropolis=True, **{name: value})
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="n_steps"):
            run(n_steps=bad)
    with pytest.raises(TypeError, match="x0"):
        run(x0=torch.ones(3, 2, dtype=torch.int32))
    with pytest.raises(ValueError, match="x0"):
        run(x0=torch.tensor(1.0))
    with pytest.raises(TypeError, match="seed"):
        run(seed=1.5)
    with pytest.raises(ValueError, match="noise_scale"):
        run(noise_scale=-1.0)


@pytest.mark.skipif(not HAS_GPU, reason="needs an NVIDIA GPU")
@pytest.mark.cuda
@pytest.mark.parametrize("metropolis", [False, True])
def test_cuda_graph_matches_eager(metropolis):
    net = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.SiLU(), torch.nn.Linear(32, 1)).cuda()
    energy = lambda x: net(x).squeeze(-1)
    x0 = torch.randn(256, 3, device="cuda")
    kw = {"n_steps": 10, "step_size": 0.01, "metropolis": metropolis, "seed": 3, "return_stats": True}
    eager, se = sampling.langevin_sample(energy, x0, **kw)
    graphed, sg = sampling.langevin_sample(energy, x0, cuda_graph=True, **kw)
    torch.testing.assert_close(graphed, eager)
    torch.testing.assert_close(sg.energy, se.energy)
    with pytest.raises(ValueError, match="constant step_size"):
        sampling.langevin_sample(energy, x0, n_steps=3, step_size=("linear", 0.1, 0.01), cuda_graph=True)


# ----------------------------------------------------------------------------- ReplayBuffer
def test_replay_buffer_basics():
    buf = sampling.ReplayBuffer(100, (3, 2), low=-2.0, high=0.5, seed=1)
    assert len(buf) == 100 and buf.buffer.shape == (100, 3, 2)
    assert buf.device == torch.device("cpu") and buf.buffer.dtype == torch.get_default_dtype()
    assert float(buf.buffer.min()) >= -2.0 and float(buf.buffer.max()) < 0.5
    x, idx = buf.sample(40)
    assert x.shape == (40, 3, 2) and idx.shape == (40,) and idx.dtype == torch.int64
    assert int(idx.min()) >= 0 and int(idx.max()) < 100
    buf.update(idx, torch.full((40, 3, 2), 7.0))
    assert (buf.buffer[idx] == 7.0).all()
    assert "capacity=100" in repr(buf)
    one = sampling.ReplayBuffer(5, 4, reinit_prob=0.0, dtype=torch.float64)
    assert one.buffer.shape == (5, 4) and one.buffer.dtype == torch.float64
    x, idx = one.sample(3)
    assert torch.equal(x, one.buffer[idx])  # no reinitialisation: exact copies


def test_replay_buffer_reinit_fraction():
    """With the buffer filled with 5.0 (outside [low, high)), a row in [low, high) is fresh
    noise: over 200000 draws the fraction must be within 5 binomial standard errors of
    reinit_prob (false-failure rate 6e-7)."""
    n, p = 200_000, 0.05
    buf = sampling.ReplayBuffer(1000, (2,), reinit_prob=p, seed=3)
    buf.push(torch.full((1000, 2), 5.0))
    x, _ = buf.sample(n)
    fresh = (x.abs() <= 1.0).all(1)
    assert torch.equal(fresh, (x != 5.0).all(1))  # a row is wholly fresh or wholly kept
    assert abs(float(fresh.double().mean()) - p) < 5 * math.sqrt(p * (1 - p) / n)
    full = sampling.ReplayBuffer(10, (2,), reinit_prob=1.0)
    full.push(torch.full((10, 2), 5.0))
    assert (full.sample(50)[0].abs() <= 1.0).all()


def test_replay_buffer_push_ring():
    buf = sampling.ReplayBuffer(4, (1,), reinit_prob=0.0)
    buf.push(torch.tensor([[1.0], [2.0], [3.0]]))
    buf.push(torch.tensor([[4.0], [5.0]]))  # wraps: slot 0 gets 5
    assert buf.buffer.flatten().tolist() == [5.0, 2.0, 3.0, 4.0]
    buf.push(torch.arange(10.0, 16.0).reshape(6, 1))  # more than capacity: the last 4 win
    assert sorted(buf.buffer.flatten().tolist()) == [12.0, 13.0, 14.0, 15.0]
    buf.push(torch.zeros(0, 1))


def test_replay_buffer_state_dict_round_trip():
    a = sampling.ReplayBuffer(50, (2,), seed=5)
    x, idx = a.sample(10)
    a.update(idx, x + 100.0)
    a.push(torch.ones(3, 2))
    state = a.state_dict()
    b = sampling.ReplayBuffer(50, (2,), seed=99, reinit_prob=0.5)
    b.load_state_dict(state)
    assert torch.equal(a.buffer, b.buffer) and b.reinit_prob == a.reinit_prob
    xa, ia = a.sample(20)
    xb, ib = b.sample(20)  # the generator state came along: the same draws
    assert torch.equal(ia, ib) and torch.equal(xa, xb)
    torch.save(state, buf := __import__("io").BytesIO())
    buf.seek(0)
    c = sampling.ReplayBuffer(50, (2,))
    c.load_state_dict(torch.load(buf))
    assert torch.equal(c.buffer, b.buffer)
    with pytest.raises(ValueError, match="shape"):
        sampling.ReplayBuffer(40, (2,)).load_state_dict(state)
    other = dict(state, generator_device="cuda")
    with pytest.warns(UserWarning, match="generator"):
        sampling.ReplayBuffer(50, (2,)).load_state_dict(other)


def test_replay_buffer_errors_and_device():
    buf = sampling.ReplayBuffer(10, (2,), device="cpu")
    x, idx = buf.sample(4)
    assert x.device.type == "cpu" and idx.device.type == "cpu"
    with pytest.raises(ValueError, match="device"):
        buf.update(idx, torch.zeros(4, 2, device="meta"))
    with pytest.raises(ValueError, match="shape"):
        buf.update(idx, torch.zeros(4, 3))
    with pytest.raises(ValueError, match="shape"):
        buf.update(idx, torch.zeros(5, 2))
    with pytest.raises(TypeError, match="idx"):
        buf.update(idx.int(), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="capacity"):
        sampling.ReplayBuffer(0, (2,))
    with pytest.raises(ValueError, match="reinit_prob"):
        sampling.ReplayBuffer(10, (2,), reinit_prob=1.5)
    with pytest.raises(ValueError, match="low, high"):
        sampling.ReplayBuffer(10, (2,), low=1.0, high=-1.0)
    with pytest.raises(TypeError, match="sample_shape"):
        sampling.ReplayBuffer(10, "2")
    with pytest.raises(ValueError, match="n"):
        buf.sample(-1)


@pytest.mark.skipif(not HAS_GPU, reason="needs an NVIDIA GPU")
@pytest.mark.cuda
def test_replay_buffer_on_gpu():
    buf = sampling.ReplayBuffer(100, (2,), device="cuda")
    x, idx = buf.sample(8)
    assert x.is_cuda and idx.is_cuda and buf.buffer.is_cuda
    buf.update(idx, x + 1)
    with pytest.raises(ValueError, match="device"):
        buf.update(idx, torch.zeros(8, 2))


# ----------------------------------------------------------------------------- demo / bench
def test_demo_ebm_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    from thermokern import cli

    out = tmp_path / "demo" / "ebm.png"
    rc = cli.main(
        ["demo", "ebm", "--steps", "2", "--langevin-steps", "2", "--exchange-steps", "230"]
        + ["--exchange-chains", "100", "--quiet"]
        + ["--out", str(out)]
    )
    assert rc == 0 and out.exists() and out.stat().st_size > 10_000
    rc = cli.main(
        [
            "demo",
            "ebm",
            "--dataset",
            "2moons",
            "--steps",
            "1",
            "--langevin-steps",
            "1",
            "--metropolis",
            "--exchange-steps",
            "210",
            "--exchange-chains",
            "50",
            "--quiet",
        ]
        + ["--out", str(tmp_path / "moons.png")]
    )
    assert rc == 0 and (tmp_path / "moons.png").exists()


def test_demo_ais_writes_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from thermokern import cli

    out = tmp_path / "ais.png"
    rc = cli.main(["demo", "ais", "--steps", "2", "--levels", "2,8", "--chains", "64", "--out", str(out)])
    assert rc == 0 and out.exists() and out.stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "8-Gaussian mixture   K=    8" in printed and "exact -4.1536" in printed
    assert cli.main(["demo", "ais", "--levels", "0,x"]) == 2


def test_demo_sampler_panel_matches_the_learned_density():
    """On a fixed energy (the analytic 8-Gaussian mixture, rescaled to a bumpy ring), the demo's
    replica-exchange sampler puts the quadrature's share of its samples on the modes: 400
    independent chain columns, sd of the fraction <= 0.025, bound 0.1 = 4 sd (false-failure
    rate ~1e-4)."""
    from thermokern import demo

    mixture, _ = demo.mixture_energy()

    class Ring(torch.nn.Module):  # tempered mixture: 8 modes on a ring with mass between them
        def forward(self, x):
            return 0.05 * mixture(x)

    model = Ring()
    ex = demo.sample_exchange(model, chains=400, n_steps=400, burn_in=100)
    frac = float(demo.near_modes(ex["samples"]).double().mean())
    exact = demo.mode_mass(model)
    assert 0.2 < exact < 0.9 and abs(frac - exact) < 0.1, (frac, exact)
    assert 0.3 < ex["acceptance"] < 0.85 and ex["rhat"] < 1.1


def test_demo_without_matplotlib(monkeypatch, capsys):
    import importlib.util

    from thermokern import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a)
    )
    assert cli.main(["demo", "ebm", "--steps", "1"]) == 2
    assert "pip install 'thermokern[demo]'" in capsys.readouterr().err


def test_toy_data():
    from thermokern import demo

    gen = torch.Generator().manual_seed(0)
    for name in demo.DATASETS:
        x = demo.toy_data(name, 1000, gen)
        assert x.shape == (1000, 2) and float(x.abs().max()) < 1.0
    with pytest.raises(ValueError, match="dataset"):
        demo.toy_data("spirals", 10, gen)


def test_sampler_benchmark_runs():
    from thermokern import bench

    result = bench.run(ops=["langevin_sample"], shapes=["32x4"], quick=True, progress=False, out=None)
    rows = result["rows"]
    assert {r["provider"] for r in rows} == {"thermokern", "eager"}
    assert {r["mode"] for r in rows} == {"fwd"}
    for r in rows:
        assert r["median_ms"] > 0 and r["max_abs_err"] is None, r
    assert "langevin_sample" in bench.format_table(result)
    assert _C is not None


# ----------------------------------------------------------------------------- GPU
@pytest.mark.skipif(not HAS_GPU, reason="needs an NVIDIA GPU")
@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(37, 13), (5,), (3, 2, 43), (64, 300), (3, 5000), (4096, 2)], ids=str)
def test_gpu_mala_accept_matches_reference(backend, dtype, shape):
    x, xp, g, gp, e, ep = _mala_inputs(shape, dtype)
    kw = {"step_size": 0.05, "temperature": 1.0, "seed": 3, "offset": 5}
    got = mala.mala_accept(*(t.cuda() for t in (x, xp, g, gp, e, ep)), backend=backend, **kw)
    want = mala.mala_accept(x, xp, g, gp, e, ep, backend="reference", **kw)
    assert torch.equal(got[1].cpu(), want[1])
    assert torch.equal(got[0].cpu(), want[0])
    atol, rtol = LOG_ALPHA_TOL[dtype]
    torch.testing.assert_close(got[2].cpu().double(), want[2].double(), atol=atol, rtol=rtol)


@pytest.mark.skipif(not HAS_GPU, reason="needs an NVIDIA GPU")
@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_gpu_mala_step_and_sampler(backend):
    x = torch.randn(33, 6)
    kw = {"step_size": 0.1, "temperature": 0.7, "seed": 5, "offset": 17}
    got, acc = thermokern.mala_step(x.cuda(), _quartic, backend=backend, **kw)
    want, r_acc = thermokern.mala_step(x, _quartic, backend="reference", **kw)
    assert torch.equal(acc.cpu(), r_acc)
    torch.testing.assert_close(got.cpu(), want, atol=1e-5, rtol=1e-5)
    for metropolis in (False, True):
        a = sampling.langevin_sample(
            _quartic, x.cuda(), n_steps=4, step_size=0.05, metropolis=metropolis, backend=backend
        )
        b = sampling.langevin_sample(
            _quartic, x, n_steps=4, step_size=0.05, metropolis=metropolis, backend="reference"
        )
        torch.testing.assert_close(a.cpu(), b, atol=1e-5, rtol=1e-5)

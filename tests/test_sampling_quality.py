"""Sampling you can trust: per-chain MALA step sizes, step-size adaptation, thinned
trajectories, annealed importance sampling (ais, free_energy_difference) and replica exchange.

The statistical tests use fixed seeds, so they are deterministic; each bound's comment gives
the probability that a correct sampler would fail it for a random seed (its false-failure
rate)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import HAS_GPU, cpu_backends

import thermokern
from thermokern import sampling
from thermokern.ops import mala


def _gauss(scale: float = 1.0, mean: float = 0.0):
    """E(x) = |x - mean|^2 / (2 scale^2) per chain (any event shape)."""

    def energy(x):
        return 0.5 * (x - mean).flatten(1).square().sum(1) / scale**2

    return energy


def _mixture(weights, means, scale):
    """E(x) = -log sum_i w_i exp(-|x - mu_i|^2 / (2 s^2)); Z = sum_i w_i (2 pi s^2)^(d / 2)."""
    w = torch.tensor(weights, dtype=torch.float64)
    mu = torch.tensor(means, dtype=torch.float64)  # (modes, d)

    def energy(x):
        z = x.to(torch.float64)
        sq = (z[:, None, :] - mu).square().sum(-1)
        return -torch.logsumexp(w.log() - 0.5 * sq / scale**2, dim=1).to(x.dtype)

    log_z = math.log(sum(weights)) + 0.5 * mu.shape[1] * math.log(2 * math.pi * scale**2)
    return energy, log_z


# ----------------------------------------------------------------------------- per-chain MALA
@pytest.mark.parametrize("backend", cpu_backends())
def test_per_chain_parameters_equal_to_numbers(backend):
    """A (chains,) tensor of one repeated value gives the scalar step (up to the rescaling's
    rounding) with the same decisions."""
    torch.manual_seed(0)
    x = torch.randn(64, 3, dtype=torch.float64)
    kw = {"seed": 4, "offset": 7, "backend": backend}
    want, acc_want = thermokern.mala_step(x, _gauss(0.7), step_size=0.4, temperature=1.5, **kw)
    full = lambda v: torch.full((64,), v, dtype=torch.float64)
    got, acc_got = thermokern.mala_step(x, _gauss(0.7), step_size=full(0.4), temperature=full(1.5), **kw)
    assert torch.equal(acc_got, acc_want) and 0 < int(acc_want.sum()) < 64
    torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-13)
    # rejected chains keep x bit for bit
    assert torch.equal(got[~acc_got], x[~acc_got])


def test_per_chain_proposal_is_each_chains_langevin_step():
    torch.manual_seed(1)
    x, g = torch.randn(8, 5, dtype=torch.float64), torch.randn(8, 5, dtype=torch.float64)
    eta = torch.linspace(0.01, 1.0, 8, dtype=torch.float64)
    t = torch.linspace(0.5, 3.0, 8, dtype=torch.float64)
    got = mala.mala_proposal(x, g, step_size=eta, temperature=t, seed=3, offset=2)
    noise = thermokern.langevin_step(
        torch.zeros_like(x), torch.zeros_like(x), step_size=1.0, noise_scale=1.0, seed=3, offset=2
    )
    want = x - eta[:, None] * g + (2 * eta * t).sqrt()[:, None] * noise
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_per_chain_mala_is_exact():
    """Chains with step sizes from 0.05 to 4 and temperatures from 0.5 to 2 all sample
    N(0, 0.5 T) exactly (MALA). 4096 chains x 4 dims after 150 steps: the mean of x^2 / (0.5 T)
    has sd ~ sqrt(2 / 16384) ~ 0.011 (chains independent), so a bound of 0.05 is > 4 sd
    (false-failure rate < 1e-4)."""
    torch.manual_seed(2)
    n = 4096
    eta = torch.logspace(math.log10(0.05), math.log10(4.0), n, dtype=torch.float64)
    t = torch.linspace(0.5, 2.0, n, dtype=torch.float64)
    x = torch.randn(n, 4, dtype=torch.float64)
    for k in range(150):
        x, _ = thermokern.mala_step(
            x, _gauss(math.sqrt(0.5)), step_size=eta, temperature=t, seed=9, offset=k * 5000
        )
    ratio = float((x.square() / (0.5 * t[:, None])).mean())
    assert abs(ratio - 1.0) < 0.05, ratio


def test_per_chain_errors():
    x = torch.zeros(4, 2)
    e = _gauss()
    with pytest.raises(
        ValueError, match=r"step_size: expected a number or one value per chain, shape \(4,\)"
    ):
        thermokern.mala_step(x, e, step_size=torch.ones(3), seed=0)
    with pytest.raises(ValueError, match="step_size: expected finite values > 0"):
        thermokern.mala_step(x, e, step_size=torch.tensor([0.1, -0.1, 0.1, 0.1]), seed=0)
    with pytest.raises(ValueError, match="temperature: expected finite values > 0"):
        thermokern.mala_step(x, e, step_size=0.1, temperature=torch.tensor([1.0, math.nan, 1.0, 1.0]), seed=0)
    with pytest.raises(TypeError, match="step_size: expected a number or a floating-point tensor"):
        thermokern.mala_step(x, e, step_size=torch.ones(4, dtype=torch.int64), seed=0)


# ----------------------------------------------------------------------------- adaptation
def test_adapted_mala_reaches_target_acceptance():
    """Dual averaging toward 0.574 on a 10-D Gaussian of unequal scales: after 400 adaptation
    steps the acceptance of the next 200 steps (256 chains: its sd ~0.004) is within 0.05 of
    the target (measured ~0.60: dual averaging approaches from above; the bound is > 5 sd
    away, false-failure rate < 1e-6)."""
    torch.manual_seed(3)
    scales = torch.linspace(0.5, 2.0, 10)
    energy = lambda x: 0.5 * (x / scales).square().sum(1)
    x0 = torch.randn(256, 10)
    _, stats = sampling.langevin_sample(
        energy, x0, n_steps=600, step_size=1e-3, metropolis=True, target_accept=0.574,
        adapt_steps=400, return_stats=True,
    )  # fmt: skip
    after = float(stats.accept_prob[400:].mean())
    assert abs(after - 0.574) < 0.05, after
    eta = stats.adapted_step_size
    assert eta.shape == (256,) and bool((eta > 0.05).all())
    # frozen after the adaptation: the reported per-step mean no longer moves
    assert torch.equal(stats.step_size[400:], stats.step_size[400:401].expand(200))
    assert stats.step_size[0] == pytest.approx(1e-3)


def test_adapted_step_sizes_continue_a_run():
    x0 = torch.randn(64, 2)
    _, stats = sampling.langevin_sample(
        _gauss(), x0, n_steps=50, step_size=0.1, metropolis=True, target_accept=0.6, adapt_steps=50,
        return_stats=True,
    )  # fmt: skip
    eta = stats.adapted_step_size
    _, again = sampling.langevin_sample(
        _gauss(), x0, n_steps=5, step_size=eta, metropolis=True, return_stats=True
    )
    torch.testing.assert_close(again.adapted_step_size, eta)
    assert again.step_size.shape == (5,)


def test_thinned_trajectory():
    x0 = torch.randn(32, 3)
    kw = {"n_steps": 30, "step_size": 0.1, "metropolis": True, "seed": 5}
    final = sampling.langevin_sample(_gauss(), x0, **kw)
    traj = sampling.langevin_sample(_gauss(), x0, thin=3, **kw)
    assert traj.shape == (32, 10, 3)
    assert torch.equal(traj[:, -1], final)
    mid = sampling.langevin_sample(_gauss(), x0, **{**kw, "n_steps": 6})
    assert torch.equal(traj[:, 1], mid)
    # the adaptation steps are left out
    traj = sampling.langevin_sample(_gauss(), x0, thin=4, target_accept=0.5, adapt_steps=10, **kw)
    assert traj.shape == (32, 5, 3)


def test_diagnostics_of_a_mixed_sampler():
    """MALA on a Gaussian, 8 chains from a spread start: after adaptation R-hat ~ 1 and the
    bulk ESS is a sizeable fraction of the draws."""
    torch.manual_seed(6)
    x0 = 3.0 * torch.randn(8, 2)
    traj = sampling.langevin_sample(
        _gauss(), x0, n_steps=1100, step_size=0.5, metropolis=True, target_accept=0.574,
        adapt_steps=100, thin=1, seed=1,
    )  # fmt: skip
    assert traj.shape == (8, 1000, 2)
    rhat = sampling.rhat(traj)
    ess = sampling.ess(traj)
    assert rhat.shape == (2,) and bool((rhat < 1.02).all()), rhat
    assert bool((ess > 800).all()) and bool((ess < 8000).all()), ess
    assert bool((sampling.ess(traj, method="tail") > 300).all())


def test_adaptation_errors():
    x0 = torch.zeros(4, 2)

    def run(**kw):
        base = {"n_steps": 10, "step_size": 0.1, "metropolis": True}
        return sampling.langevin_sample(_gauss(), x0, **{**base, **kw})

    with pytest.raises(ValueError, match="target_accept: expected a value in"):
        run(target_accept=1.0, adapt_steps=5)
    with pytest.raises(ValueError, match="target_accept: step-size adaptation needs metropolis=True"):
        run(target_accept=0.5, adapt_steps=5, metropolis=False)
    with pytest.raises(ValueError, match="adapt_steps: expected 0 < adapt_steps <= n_steps"):
        run(target_accept=0.5, adapt_steps=11)
    with pytest.raises(ValueError, match="adapt_steps: set target_accept"):
        run(adapt_steps=3)
    with pytest.raises(TypeError, match="step_size: per-chain step sizes and adaptation need a number"):
        run(step_size=("linear", 0.1, 0.01), target_accept=0.5, adapt_steps=5)
    with pytest.raises(ValueError, match="thin: expected an int >= 1"):
        run(thin=0)
    with pytest.raises(ValueError, match="grad_clip: not supported with per-chain step sizes"):
        run(step_size=torch.full((4,), 0.1), metropolis=False, grad_clip=1.0)


# ----------------------------------------------------------------------------- AIS
def test_ais_gaussian_log_z():
    """A 3-D Gaussian N(2, 0.5^2) at T = 2 from the standard normal: log Z = (3/2) log(2 pi
    0.25 T). 512 chains, 100 levels: the estimate is within 3 standard errors (a 3-sigma bound
    of a near-normal estimator: false-failure rate ~0.3%, less with the ESS this high) and
    within 0.1 absolutely."""
    torch.manual_seed(7)
    t = 2.0
    res = sampling.ais(
        _gauss(0.5, 2.0), torch.randn(512, 3), betas=100, n_steps=2, step_size=0.1, temperature=t, seed=3
    )
    exact = 1.5 * math.log(2 * math.pi * 0.25 * t)
    err = float(res.log_z) - exact
    assert abs(err) < 3 * float(res.log_z_stderr) and abs(err) < 0.1, (err, float(res.log_z_stderr))
    assert res.log_weights.shape == (512,) and res.samples.shape == (512, 3)
    assert 100 < float(res.ess) <= 512
    # the samples are near the target N(2, 0.5^2 T)
    assert abs(float(res.samples.mean()) - 2.0) < 0.1
    assert abs(float(res.samples.var()) - 0.5) < 0.1


def test_ais_mixture_error_shrinks_with_levels():
    """A 2-D mixture of two separated modes (weights 0.25 / 0.75): with 3 levels the weights
    degenerate and the estimate is off; with 100 levels it is within 3 standard errors of the
    exact log Z. Over 5 seeds the mean absolute error with 100 levels is below half that with
    3 levels (a factor of ~10 is typical; false-failure rate well below 1%)."""
    energy, exact = _mixture([0.25, 0.75], [[-2.0, 0.0], [2.0, 1.0]], 0.6)
    errs = {3: [], 100: []}
    for seed in range(5):
        torch.manual_seed(seed)
        x0 = torch.randn(256, 2, dtype=torch.float64)
        for k, found in errs.items():
            res = sampling.ais(energy, x0, betas=k, n_steps=1, step_size=0.1, seed=seed)
            found.append(float(res.log_z) - exact)
            if k == 100 and seed == 0:
                assert abs(found[-1]) < 3 * float(res.log_z_stderr)
    fine = sum(abs(e) for e in errs[100]) / 5
    coarse = sum(abs(e) for e in errs[3]) / 5
    assert fine < 0.5 * coarse and fine < 0.1, (fine, coarse)


@pytest.mark.parametrize("backend", cpu_backends())
def test_ais_backends_and_ula(backend):
    """Every backend gives the same run (same Philox noise); ULA with small steps is close."""
    x0 = torch.randn(64, 2, dtype=torch.float64)
    kw = {"betas": [0.0, 0.3, 1.0], "n_steps": 2, "step_size": 0.05, "seed": 2}
    want = sampling.ais(_gauss(0.8), x0, backend="reference", **kw)
    got = sampling.ais(_gauss(0.8), x0, backend=backend, **kw)
    torch.testing.assert_close(got.log_weights, want.log_weights)
    torch.testing.assert_close(got.samples, want.samples)
    ula = sampling.ais(_gauss(0.8), x0, metropolis=False, backend=backend, **kw)
    assert torch.isfinite(ula.log_z)


def test_ais_custom_base_and_free_energy():
    """Between N(0, 1) and N(1, 0.5^2) in 2-D at T = 1: F_b - F_a = -log(Z_b / Z_a) = -2 log 0.5;
    the same through an explicit base. Within 0.1 (several standard errors; 512 chains)."""
    torch.manual_seed(8)
    x0 = torch.randn(512, 2, dtype=torch.float64)
    fe = sampling.free_energy_difference(_gauss(), _gauss(0.5, 1.0), x0, betas=60, n_steps=2, step_size=0.05)
    assert abs(float(fe.delta_f) + 2 * math.log(0.5)) < 0.1
    assert float(fe.delta_f_stderr) == pytest.approx(float(fe.ais.log_z_stderr))
    # at T = 2 the samples of exp(-E_a / 2) are N(0, 2): Z ratio unchanged for a scaling pair
    t = 2.0
    fe2 = sampling.free_energy_difference(
        _gauss(), _gauss(0.5, 1.0), math.sqrt(t) * x0, temperature=t, betas=60, n_steps=2, step_size=0.05
    )
    assert abs(float(fe2.delta_f) + 2 * t * math.log(0.5)) < 0.2
    res = sampling.ais(
        _gauss(0.5, 1.0), x0, betas=60, n_steps=2, step_size=0.05, base_energy_fn=_gauss(),
        base_log_z=math.log(2 * math.pi),
    )  # fmt: skip
    assert abs(float(res.log_z) - math.log(2 * math.pi * 0.25)) < 0.1


def test_ais_progress_and_dtypes():
    pytest.importorskip("tqdm")
    for dtype in (torch.float32, torch.bfloat16):
        res = sampling.ais(_gauss(), torch.randn(16, 2, dtype=dtype), betas=3, step_size=0.1, progress=True)
        assert res.log_z.dtype == torch.float32 and res.samples.dtype == dtype
        # the target is the base: every weight is 1 up to rounding, log Z = log 2 pi
        assert abs(float(res.log_z) - math.log(2 * math.pi)) < 1e-2


def test_ais_errors():
    x0 = torch.randn(8, 2)
    e = _gauss()
    with pytest.raises(ValueError, match="betas: expected an int >= 1"):
        sampling.ais(e, x0, betas=0, step_size=0.1)
    with pytest.raises(ValueError, match="betas: expected a sequence from 0 to 1"):
        sampling.ais(e, x0, betas=[0.0, 0.5], step_size=0.1)
    with pytest.raises(ValueError, match="betas: expected strictly increasing"):
        sampling.ais(e, x0, betas=[0.0, 0.6, 0.5, 1.0], step_size=0.1)
    with pytest.raises(ValueError, match="base_log_z: pass base_energy_fn and base_log_z together"):
        sampling.ais(e, x0, betas=3, step_size=0.1, base_energy_fn=e)
    with pytest.raises(ValueError, match="x0: expected at least 2 chains"):
        sampling.ais(e, x0[:1], betas=3, step_size=0.1)
    with pytest.raises(ValueError, match="n_steps: expected an int >= 1"):
        sampling.ais(e, x0, betas=3, n_steps=0, step_size=0.1)
    with pytest.raises(ValueError, match="base_energy_fn: expected one energy per chain"):
        sampling.ais(e, x0, betas=3, step_size=0.1, base_energy_fn=lambda x: x, base_log_z=0.0)
    with pytest.raises(RuntimeError, match="cuda_graph=True needs CUDA tensors"):
        sampling.ais(e, x0, betas=3, step_size=0.1, cuda_graph=True)


# ----------------------------------------------------------------------------- replica exchange
def _two_modes():
    """1-D: 0.3 N(-3, 0.5^2) + 0.7 N(3, 0.5^2); the barrier at 0 is ~18 units of energy high."""
    energy, _ = _mixture([0.3, 0.7], [[-3.0], [3.0]], 0.5)
    return energy


def test_replica_exchange_crosses_what_mala_cannot():
    """All chains start in the lighter mode. A single MALA chain at T = 1 never leaves it; the
    T = 1 replica of a 6-rung ladder up to T = 30 puts 0.7 of its chains in the heavier mode.
    1024 independent chain columns: the fraction's sd is 0.014, so the 0.05 bound is 3.5 sd
    (false-failure rate ~5e-4)."""
    torch.manual_seed(9)
    energy = _two_modes()
    x0 = torch.full((1024, 1), -3.0)
    temps = [30.0 ** (r / 5) for r in range(6)]
    samples, stats = sampling.replica_exchange(
        energy, x0, temperatures=temps, n_steps=600, step_size=[0.25 * t for t in temps], seed=4,
        return_stats=True,
    )  # fmt: skip
    assert samples.shape == (6, 1024, 1)
    heavy = float((samples[0, :, 0] > 0).double().mean())
    assert abs(heavy - 0.7) < 0.05, heavy
    single = sampling.langevin_sample(energy, x0, n_steps=600, step_size=0.25, metropolis=True, seed=4)
    assert float((single[:, 0] > 0).double().mean()) == 0.0
    assert stats.swap_acceptance.shape == (5,) and bool((stats.swap_acceptance > 0.3).all())
    assert bool((stats.swap_accept_prob - stats.swap_acceptance).abs().max() < 0.05)
    assert stats.acceptance_rate.shape == (6,) and bool((stats.acceptance_rate > 0).all())


def test_replica_exchange_tempered_marginals():
    """On a Gaussian every replica samples its own temperature: var = T (2-D, 1024 chains x
    2 dims: the variance estimate's relative sd is ~0.03; bound 0.12 is 4 sd, false-failure
    rate ~1e-4 per rung)."""
    torch.manual_seed(10)
    temps = [1.0, 2.0, 4.0]
    samples = sampling.replica_exchange(
        _gauss(), torch.zeros(1024, 2), temperatures=temps, n_steps=150, step_size=[0.5, 1.0, 2.0], seed=1
    )
    for r, t in enumerate(temps):
        rel = float(samples[r].square().mean()) / t
        assert abs(rel - 1.0) < 0.12, (t, rel)


@pytest.mark.parametrize("backend", cpu_backends())
def test_replica_exchange_backends_and_swaps(backend):
    x0 = torch.randn(16, 2, dtype=torch.float64)
    kw = {"temperatures": [1.0, 1.5, 2.0, 3.0], "n_steps": 6, "step_size": 0.2, "seed": 3, "swap_every": 2}
    want, st = sampling.replica_exchange(_gauss(), x0, backend="reference", return_stats=True, **kw)
    got = sampling.replica_exchange(_gauss(), x0, backend=backend, **kw)
    torch.testing.assert_close(got, want)
    # 3 swap rounds (steps 0, 2, 4): pairs (0,1), (2,3) twice, pair (1,2) once
    assert st.swap_acceptance.shape == (3,) and bool(
        ((st.swap_acceptance >= 0) & (st.swap_acceptance <= 1)).all()
    )
    traj = sampling.replica_exchange(_gauss(), x0, backend=backend, thin=2, **kw)
    assert traj.shape == (4, 16, 3, 2) and torch.equal(traj[:, :, -1], got)
    ula = sampling.replica_exchange(_gauss(), x0, metropolis=False, backend=backend, **kw)
    assert ula.shape == (4, 16, 2) and bool(torch.isfinite(ula).all())


def test_replica_exchange_swap_bookkeeping():
    """A flat energy: every swap accepts (alpha = 1). One step is one swap round, of the even
    pairs only: pair (0, 1) accepted every time, pair (1, 2) never attempted (NaN)."""
    x0 = torch.randn(32, 3, dtype=torch.float64)
    flat = lambda x: 0.0 * x.sum(1)
    _, stats = sampling.replica_exchange(
        flat, x0, temperatures=[1.0, 2.0, 3.0], n_steps=1, step_size=0.1, return_stats=True
    )
    assert float(stats.swap_acceptance[0]) == 1.0 and math.isnan(float(stats.swap_acceptance[1]))


def test_replica_exchange_errors():
    x0 = torch.zeros(4, 2)
    e = _gauss()
    with pytest.raises(ValueError, match="temperatures: expected strictly increasing"):
        sampling.replica_exchange(e, x0, temperatures=[2.0, 1.0], n_steps=1, step_size=0.1)
    with pytest.raises(ValueError, match="temperatures: expected a finite value > 0"):
        sampling.replica_exchange(e, x0, temperatures=[0.0, 1.0], n_steps=1, step_size=0.1)
    with pytest.raises(ValueError, match=r"step_size: expected a number or one value per temperature \(2\)"):
        sampling.replica_exchange(e, x0, temperatures=[1.0, 2.0], n_steps=1, step_size=[0.1])
    with pytest.raises(ValueError, match="swap_every: expected an int >= 1"):
        sampling.replica_exchange(e, x0, temperatures=[1.0, 2.0], n_steps=1, step_size=0.1, swap_every=0)
    with pytest.raises(RuntimeError, match="cuda_graph=True needs CUDA tensors"):
        sampling.replica_exchange(e, x0, temperatures=[1.0, 2.0], n_steps=1, step_size=0.1, cuda_graph=True)


# ----------------------------------------------------------------------------- GPU
@pytest.mark.skipif(not HAS_GPU, reason="needs an NVIDIA GPU")
@pytest.mark.cuda
@pytest.mark.parametrize("metropolis", [False, True])
def test_gpu_cuda_graph_samplers_match_eager(metropolis):
    net = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.SiLU(), torch.nn.Linear(32, 1)).cuda()
    energy = lambda x: net(x).squeeze(-1) + 0.5 * x.square().sum(1)
    x0 = torch.randn(256, 2, device="cuda")
    kw = {"betas": 8, "n_steps": 2, "step_size": 0.05, "metropolis": metropolis, "seed": 3}
    eager = sampling.ais(energy, x0, **kw)
    graphed = sampling.ais(energy, x0, cuda_graph=True, **kw)
    torch.testing.assert_close(graphed.log_weights, eager.log_weights)
    torch.testing.assert_close(graphed.samples, eager.samples)
    kw = {
        "temperatures": [1.0, 2.0, 4.0],
        "n_steps": 7,
        "step_size": 0.05,
        "metropolis": metropolis,
        "seed": 3,
    }
    eager, se = sampling.replica_exchange(energy, x0, return_stats=True, **kw)
    graphed, sg = sampling.replica_exchange(energy, x0, cuda_graph=True, return_stats=True, **kw)
    torch.testing.assert_close(graphed, eager)
    torch.testing.assert_close(sg.swap_acceptance, se.swap_acceptance)
    kw = {
        "n_steps": 20,
        "step_size": 0.05,
        "metropolis": True,
        "target_accept": 0.6,
        "adapt_steps": 10,
        "return_stats": True,
    }
    eager, se = sampling.langevin_sample(energy, x0, **kw)
    graphed, sg = sampling.langevin_sample(energy, x0, cuda_graph=True, **kw)
    torch.testing.assert_close(graphed, eager)
    torch.testing.assert_close(sg.adapted_step_size, se.adapted_step_size)

"""Annealed importance sampling: ``ais`` (log Z of an energy) and ``free_energy_difference``.

AIS (Neal 2001) is Jarzynski's equality put to work: chains start from exact samples of a base
density p0 ∝ exp(-E0) whose log Z0 is known and are carried through the intermediate densities
p_beta ∝ exp(-E_beta), ``E_beta = (1 - beta) E0 + beta E / T``, by Langevin or MALA transitions
(the fused kernels of :mod:`thermokern.ops`) while each chain accumulates the work of switching
beta, ``log w -= (beta_j - beta_{j-1}) (E(x) / T - E0(x))``. Then ``Z / Z0 = E[w]`` for any
schedule of betas and any transitions that leave each p_beta invariant (MALA; ULA is biased
at finite step sizes), and ``log Z = log Z0 + log mean w``, reduced by
:func:`thermokern.logsumexp`. Everything stays on the device until the final reduction.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

from thermokern import _backend
from thermokern._checks import check_chains, check_finite, check_int, check_positive
from thermokern._dtypes import acc_dtype
from thermokern.ops.langevin import checked_step_
from thermokern.ops.mala import checked_accept, checked_proposal, energy_and_grad
from thermokern.ops.partition import logsumexp
from thermokern.sampling.graph import _check_capturable, _run_graphed
from thermokern.sampling.langevin import _progress_bar
from thermokern.sampling.schedules import ScheduleLike, schedule_values
from thermokern.sampling.streams import counters_per_step, fill_rng

__all__ = ["AISResult", "FreeEnergyResult", "ais", "free_energy_difference"]

Energy = Callable[[torch.Tensor], torch.Tensor]


class AISResult(NamedTuple):
    """The result of :func:`ais` (0-dim tensors and tensors on the chains' device, in the
    accumulation dtype of ``x0``: float32, float64 for float64).

    Attributes:
        log_z: the estimate of log Z = log ∫ exp(-E(x) / T) dx.
        log_z_stderr: its standard error by the delta method,
            ``std(w) / (sqrt(chains) mean(w))`` (unreliable when ``ess`` is small).
        log_weights: each chain's log importance weight, shape (chains,).
        samples: the chains' final states (approximate samples of exp(-E / T)).
        ess: the effective sample size of the weights, ``(sum w)^2 / sum w^2``.
    """

    log_z: torch.Tensor
    log_z_stderr: torch.Tensor
    log_weights: torch.Tensor
    samples: torch.Tensor
    ess: torch.Tensor


class FreeEnergyResult(NamedTuple):
    """The result of :func:`free_energy_difference`.

    Attributes:
        delta_f: ``F_b - F_a = -T log(Z_b / Z_a)`` (0-dim tensor).
        delta_f_stderr: its standard error (``T`` times the AIS one).
        ais: the underlying :class:`AISResult` (its ``log_z`` is ``log(Z_b / Z_a)``).
    """

    delta_f: torch.Tensor
    delta_f_stderr: torch.Tensor
    ais: AISResult


def _betas(betas: int | Sequence[float] | torch.Tensor) -> list[float]:
    """The annealing schedule 0 = beta_0 < beta_1 < ... < beta_K = 1 (K >= 1)."""
    if isinstance(betas, numbers.Integral) and not isinstance(betas, bool):
        k = int(betas)
        if k < 1:
            raise ValueError(f"betas: expected an int >= 1 (the number of annealing levels), got {k}")
        return [j / k for j in range(k + 1)]
    if isinstance(betas, torch.Tensor):
        if betas.dim() != 1 or not betas.is_floating_point():
            raise ValueError(
                f"betas: expected a 1-D floating-point tensor, got shape {tuple(betas.shape)} {betas.dtype}"
            )
        values = [float(b) for b in betas.detach().cpu()]
    elif isinstance(betas, Sequence) and not isinstance(betas, str):
        values = [check_finite(b, "betas") for b in betas]
    else:
        raise TypeError(
            f"betas: expected an int or an increasing sequence from 0 to 1, got {type(betas).__name__}"
        )
    if len(values) < 2 or values[0] != 0.0 or values[-1] != 1.0:
        raise ValueError(
            f"betas: expected a sequence from 0 to 1 (at least 2 values), got {values[:3]}...{values[-2:]}"
        )
    if any(not b1 > b0 for b0, b1 in itertools.pairwise(values)):
        raise ValueError("betas: expected strictly increasing values")
    return values


class _Annealer:
    """The state of one AIS run and its transition (eager or captured in a CUDA graph).

    Per chain: x, and with MALA the energies ``e`` (E(x)), ``e0`` (E0(x)) and their gradients
    of the current state, kept across steps. The level ``beta`` and the weight increment's
    ``dbeta`` (beta_j - beta_{j-1} at the first transition of level j, else 0) are 0-dim
    device tensors refilled before each step.
    """

    def __init__(self, energy_fn, base_fn, x, inv_t, metropolis, backend):
        self.energy_fn, self.base_fn = energy_fn, base_fn
        self.x = x
        self.inv_t = inv_t
        self.metropolis = metropolis
        self.backend = backend
        acc = acc_dtype(x.dtype)
        dev = x.device
        self.seed = torch.zeros((), dtype=torch.int64, device=dev)
        self.offset = torch.zeros((), dtype=torch.int64, device=dev)
        self.beta = torch.zeros((), dtype=acc, device=dev)
        self.dbeta = torch.zeros((), dtype=acc, device=dev)
        self.log_w = torch.zeros(x.shape[0], dtype=acc, device=dev)
        self.cache = self.parts(x) if metropolis else None
        # The path's gradients at x and at the proposal, rewritten every step (fewer fresh
        # (chains, d) allocations per step, which a CPU heap may hand back to the OS and fault
        # in again every time).
        self.buffers = [torch.empty_like(x), torch.empty_like(x)]

    def parts(self, x):
        """[E(x), E0(x), dE/dx, dE0/dx]: energies in the accumulation dtype, gradients in x's
        (the standard normal base has no dE0/dx to keep: it is x)."""
        e, g = energy_and_grad(self.energy_fn, x)
        if self.base_fn is None:  # E0 = |x|^2 / 2
            flat = x.flatten(1).to(e.dtype)
            return [e, 0.5 * torch.linalg.vecdot(flat, flat), g]  # (no (chains, d) temporary)
        e0, g0 = energy_and_grad(self.base_fn, x, "base_energy_fn")
        return [e, e0, g, g0]

    def mix(self, x, parts, out):
        """E_beta = E0 + beta (E / T - E0) at x and its gradient (written into ``out``, a
        buffer of x's shape kept across steps), from ``parts(x)``."""
        e, e0, g = parts[:3]
        g0 = parts[3] if len(parts) == 4 else x
        if self.inv_t != 1.0:
            e, g = e * self.inv_t, g * self.inv_t
        ec = torch.lerp(e0, e, self.beta)
        if g.dtype == self.beta.dtype:
            return ec, torch.lerp(g0, g, self.beta, out=out)
        acc = self.beta.dtype  # (16-bit x: mix in float32)
        return ec, out.copy_(torch.lerp(g0.to(acc), g.to(acc), self.beta))

    def step(self, eta: float) -> dict[str, torch.Tensor]:
        x = self.x
        parts = self.cache if self.metropolis else self.parts(x)
        e, e0 = parts[0], parts[1]
        self.log_w.sub_(self.dbeta * (e * self.inv_t - e0))
        ec, gc = self.mix(x, parts, self.buffers[0])
        if not self.metropolis:
            with torch.no_grad():
                checked_step_(
                    x, gc, self.seed, self.offset, eta, math.sqrt(2.0 * eta), None, None, None, self.backend
                )  # fmt: skip
            return {}
        x_prop = checked_proposal(x, gc, eta, 1.0, self.seed, self.offset, self.backend)
        prop = self.parts(x_prop)
        ec_prop, gc_prop = self.mix(x_prop, prop, self.buffers[1])
        with torch.no_grad():
            x_new, accepted, _ = checked_accept(
                x, x_prop, gc, gc_prop, ec, ec_prop, eta, 1.0, self.seed, self.offset, self.backend
            )  # fmt: skip
            x.copy_(x_new)
            keep = accepted.reshape((x.shape[0],) + (1,) * (x.dim() - 1))
            for cur, new in zip(self.cache, prop):
                torch.where(accepted if cur.dim() == 1 else keep, new, cur, out=cur)
        return {"acceptance_rate": accepted.to(e.dtype).mean()}

    def state(self) -> list[torch.Tensor]:
        return [self.x, self.log_w] + (self.cache or [])


def ais(
    energy_fn: Energy,
    x0: torch.Tensor,
    *,
    betas: int | Sequence[float] | torch.Tensor,
    n_steps: int = 1,
    step_size: ScheduleLike,
    temperature: float = 1.0,
    base_energy_fn: Energy | None = None,
    base_log_z: float | None = None,
    metropolis: bool = True,
    seed: int = 0,
    progress: bool = False,
    backend: str = "auto",
    cuda_graph: bool = False,
) -> AISResult:
    """Annealed importance sampling of ``log Z = log ∫ exp(-E(x) / T) dx``.

    The chains ``x0`` (dim 0; the rest is the event, of size ``d``) must be exact samples of
    the base density ``p0 ∝ exp(-E0)``: by default the standard normal, ``E0 = |x|^2 / 2`` and
    ``log Z0 = (d / 2) log(2 pi)`` (draw ``x0 = torch.randn(chains, *event)``). They are
    annealed through ``E_beta = (1 - beta) E0 + beta E / T`` for ``beta`` in ``betas``; at each
    level ``beta_j`` (j = 1 .. K) every chain first adds ``-(beta_j - beta_{j-1}) (E(x) / T -
    E0(x))`` to its log weight and then makes ``n_steps`` transitions that leave
    ``exp(-E_{beta_j})`` invariant: MALA (``metropolis=True``, exact for any step size) or ULA
    steps ``x <- x - eta dE_beta/dx + sqrt(2 eta) xi`` (biased by the step size). Then
    ``log Z = log Z0 + log mean(exp(log_weights))``.

    The estimate is unbiased in Z (not in log Z: it is low on average by about half its
    variance) and its error shrinks as levels are added; with few levels the weights
    degenerate (small ``ess``) and ``log_z_stderr`` understates the error.

    Random numbers: step ``k`` (level ``k // n_steps + 1``) uses Philox key ``seed`` and offset
    ``k * counters_per_step(x0, metropolis)``, as :func:`langevin_sample`.

    Args:
        energy_fn: ``x -> (chains,)`` differentiable energies E.
        x0: exact samples of the base, float32/64/16/bf16, shape (chains, *event); not modified.
        betas: an int K >= 1 (K levels, ``beta_j = j / K``) or an increasing sequence (or 1-D
            tensor) from 0 to 1. Geometric or sigmoidal spacings that are dense near 0 often
            need fewer levels than the linear one.
        n_steps: transitions per level (>= 1).
        step_size: eta > 0 of the transitions (in the units of ``E_beta``: at T = 1, the eta of
            :func:`langevin_sample`), a number or a schedule over the K levels (e.g. larger
            steps near the broad base, smaller near the target).
        temperature: T > 0 of the target exp(-E / T).
        base_energy_fn: E0 of another base (then ``base_log_z`` is required and ``x0`` must be
            its exact samples); None: the standard normal.
        base_log_z: ``log ∫ exp(-E0)``, required with ``base_energy_fn``.
        metropolis: MALA transitions (True) or ULA (False).
        seed: the Philox key of the run.
        progress: a tqdm progress bar over the steps.
        backend: kernel backend of the transitions (``"auto"``, ``"cpu"``, ``"cuda"``,
            ``"triton"``, ``"reference"``).
        cuda_graph: capture one transition as a CUDA graph and replay it (CUDA tensors, a
            constant step size and a capturable ``energy_fn``; see :func:`langevin_sample`).

    Returns:
        :class:`AISResult` ``(log_z, log_z_stderr, log_weights, samples, ess)``.

    Raises:
        TypeError: non-callable energies, non-float ``x0``, bad argument types.
        ValueError: bad betas (not from 0 to 1, not increasing), n_steps < 1, step sizes or T
            not > 0, ``base_energy_fn`` without ``base_log_z`` (or the reverse), fewer than
            2 chains, energies of a shape other than (chains,).
        RuntimeError: ``cuda_graph=True`` without CUDA tensors.

    Example:
        >>> import math, torch
        >>> from thermokern import sampling
        >>> energy = lambda x: 0.5 * (x - 3.0).square().sum(1) / 0.25  # N(3, 0.5^2) in 2-D
        >>> res = sampling.ais(energy, torch.randn(1024, 2), betas=50, n_steps=2, step_size=0.05)
        >>> abs(float(res.log_z) - math.log(2 * math.pi * 0.25)) < 0.1
        True
    """
    if not callable(energy_fn):
        raise TypeError(f"energy_fn: expected a callable x -> energies, got {type(energy_fn).__name__}")
    check_chains(x0, "x0")
    if x0.shape[0] < 2:
        raise ValueError(f"x0: expected at least 2 chains (dim 0) for a weighted estimate, got {x0.shape[0]}")
    levels = _betas(betas)
    n_levels = len(levels) - 1
    n_steps = check_int(n_steps, "n_steps")
    if n_steps < 1:
        raise ValueError(f"n_steps: expected an int >= 1 (transitions per level), got {n_steps}")
    etas = schedule_values(step_size, n_levels, "step_size")
    t = check_positive(temperature, "temperature")
    check_int(seed, "seed")
    if (base_energy_fn is None) != (base_log_z is None):
        raise ValueError(
            "base_log_z: pass base_energy_fn and base_log_z together (the default base is the "
            "standard normal, whose log Z is known)"
        )
    if base_energy_fn is None:
        log_z0 = 0.5 * math.prod(x0.shape[1:]) * math.log(2.0 * math.pi)
    else:
        if not callable(base_energy_fn):
            raise TypeError(
                f"base_energy_fn: expected a callable x -> energies, got {type(base_energy_fn).__name__}"
            )
        log_z0 = check_finite(base_log_z, "base_log_z")
    total = n_levels * n_steps
    if cuda_graph:
        _check_capturable(x0, etas, [t])
    name = _backend.resolve_backend(backend, x0)
    x = x0.detach().clone(memory_format=torch.contiguous_format)
    run = _Annealer(energy_fn, base_energy_fn, x, 1.0 / t, metropolis, name)
    counters = counters_per_step(x, metropolis)
    bar = _progress_bar(total, "ais") if progress else None

    def before_step(k: int) -> None:
        j = k // n_steps + 1
        fill_rng(run.seed, run.offset, seed, k, counters)
        run.beta.fill_(levels[j])
        run.dbeta.fill_(levels[j] - levels[j - 1] if k % n_steps == 0 else 0.0)

    def after_step(k: int, stats: dict[str, torch.Tensor]) -> None:
        if bar is not None:
            bar.update(1)

    try:
        if cuda_graph:
            eta0 = etas[0]
            _run_graphed(lambda: run.step(eta0), run.state(), total, before_step, after_step)
        else:
            for k in range(total):
                before_step(k)
                after_step(k, run.step(etas[k // n_steps]))
    finally:
        if bar is not None:
            bar.close()
    return _estimate(run.log_w, log_z0, x)


def _estimate(log_w: torch.Tensor, log_z0: float, samples: torch.Tensor) -> AISResult:
    n = log_w.shape[0]
    log_mean = logsumexp(log_w, dim=0) - math.log(n)
    w = (log_w - log_w.max()).exp()  # weights scaled by a common factor (cancels below)
    mean = w.mean()
    stderr = w.std() / (math.sqrt(n) * mean)
    ess = w.sum().square() / w.square().sum()
    return AISResult(log_z0 + log_mean, stderr, log_w, samples, ess)


def free_energy_difference(
    energy_a: Energy,
    energy_b: Energy,
    x0: torch.Tensor,
    *,
    temperature: float = 1.0,
    betas: int | Sequence[float] | torch.Tensor,
    n_steps: int = 1,
    step_size: ScheduleLike,
    metropolis: bool = True,
    seed: int = 0,
    progress: bool = False,
    backend: str = "auto",
    cuda_graph: bool = False,
) -> FreeEnergyResult:
    """The free-energy difference ``F_b - F_a = -T log(Z_b / Z_a)`` between the Boltzmann
    densities ``exp(-E_a / T)`` and ``exp(-E_b / T)`` (Jarzynski's equality), by :func:`ais`
    from ``a`` to ``b``.

    ``x0`` must be exact (or well-equilibrated) samples of ``exp(-E_a / T)``, e.g. from a
    long :func:`langevin_sample` run with ``metropolis=True``. The path is
    ``E_beta = ((1 - beta) E_a + beta E_b) / T``; the other arguments are :func:`ais`'s.

    Returns:
        :class:`FreeEnergyResult` ``(delta_f, delta_f_stderr, ais)``.
    """
    t = check_positive(temperature, "temperature")
    if not callable(energy_a):
        raise TypeError(f"energy_a: expected a callable x -> energies, got {type(energy_a).__name__}")
    res = ais(
        energy_b, x0, betas=betas, n_steps=n_steps, step_size=step_size, temperature=t,
        base_energy_fn=lambda x: energy_a(x) / t, base_log_z=0.0, metropolis=metropolis,
        seed=seed, progress=progress, backend=backend, cuda_graph=cuda_graph,
    )  # fmt: skip
    return FreeEnergyResult(-t * res.log_z, t * res.log_z_stderr, res)

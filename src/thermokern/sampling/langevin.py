"""``langevin_sample``: many chains of Langevin dynamics (ULA or MALA) under an energy function.

``langevin_sample`` runs many chains (dim 0 of ``x0``) of unadjusted Langevin dynamics (ULA,
one fused :func:`thermokern.langevin_step_` per step) or of Metropolis-adjusted Langevin
(MALA, :func:`thermokern.mala_step`'s proposal and fused accept/reject, with the accepted
state's energy and gradient cached so that a step costs one energy evaluation), optionally
captured once as a CUDA graph and replayed (:mod:`thermokern.sampling.graph`). Step sizes and
temperatures take schedules (:mod:`thermokern.sampling.schedules`); step ``k`` draws its noise
from :func:`step_rng` (:mod:`thermokern.sampling.streams`). :class:`SampleStats` holds a run's
per-step statistics.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from thermokern import _backend, reference
from thermokern._checks import check_chain_param, check_finite, check_float_tensor, check_int
from thermokern._dtypes import acc_dtype
from thermokern.ops.langevin import checked_step_, langevin_args
from thermokern.ops.mala import checked_accept, checked_proposal, energy_and_grad
from thermokern.sampling.graph import _check_capturable, _run_graphed
from thermokern.sampling.schedules import ScheduleLike, schedule_values
from thermokern.sampling.streams import _resolve_stream, counters_per_step, fill_rng

__all__ = ["SampleStats", "langevin_sample"]


class SampleStats(NamedTuple):
    """Per-step statistics of :func:`langevin_sample` (float64 CPU tensors of length n_steps).

    Attributes:
        energy: mean energy over the chains at the start of each step.
        grad_norm: mean over the chains of |dE/dx| (over each chain's elements) at the start
            of each step, before any grad_clip.
        acceptance_rate: MALA: the fraction of chains that accepted at each step; ULA: None.
        accept_prob: MALA: the mean of min(1, alpha) at each step (a lower-variance estimate
            of the acceptance rate); ULA: None.
        step_size: the step size used at each step (per-chain step sizes: their mean over
            the chains).
        temperature: the temperature used at each step (ULA with ``noise_scale`` ignores it).
        counters_per_step: Philox counters each step used (offset of step k = k times this).
        adapted_step_size: with per-chain step sizes (a ``step_size`` tensor, or adaptation by
            ``target_accept``), each chain's step size at the end of the run, shape (chains,),
            on the samples' device (pass it back as ``step_size`` to continue); else None.
    """

    energy: torch.Tensor
    grad_norm: torch.Tensor
    acceptance_rate: torch.Tensor | None
    accept_prob: torch.Tensor | None
    step_size: torch.Tensor
    temperature: torch.Tensor
    counters_per_step: int
    adapted_step_size: torch.Tensor | None = None

    @property
    def mean_acceptance(self) -> float | None:
        """The acceptance rate over the whole run (MALA), else None."""
        if self.acceptance_rate is None or self.acceptance_rate.numel() == 0:
            return None
        return float(self.acceptance_rate.mean())


def _progress_bar(n_steps: int, desc: str = "langevin_sample"):
    try:
        from tqdm.auto import tqdm
    except ImportError:
        raise ImportError(
            f"{desc}: progress=True needs tqdm, which is not installed "
            "(pip install tqdm), or pass progress=False"
        ) from None
    return tqdm(total=n_steps, desc=desc, unit="step", leave=False)


class _DualAveraging:
    """Per-chain step-size adaptation by dual averaging (Hoffman & Gelman 2014, Algorithm 5),
    on device tensors and updated in place (no host synchronisation; capturable in a CUDA
    graph).

    After adaptation step ``m`` (1-based) with acceptance probability ``a_m = min(1, alpha)``:
    ``H_m = (1 - 1/(m + t0)) H_{m-1} + (delta - a_m) / (m + t0)``,
    ``log eta_m = mu - sqrt(m) / gamma * H_m`` and ``log etabar_m = m^-kappa log eta_m +
    (1 - m^-kappa) log etabar_{m-1}``, with ``mu = log(10 eta_0)``, gamma 0.05, t0 10,
    kappa 0.75. Steps ``1 .. adapt_steps`` use ``eta_m``; from then on the step size is frozen
    at ``etabar_{adapt_steps}``.
    """

    GAMMA, T0, KAPPA = 0.05, 10.0, 0.75

    def __init__(self, eta: torch.Tensor, target_accept: float, adapt_steps: int):
        self.eta = eta  # (chains,), read by every step
        self.delta = target_accept
        self.adapt_steps = adapt_steps
        self.mu = (10.0 * eta).log()
        self.m = torch.zeros((), dtype=eta.dtype, device=eta.device)
        self.hbar = torch.zeros_like(eta)
        self.log_eta_bar = torch.zeros_like(eta)

    def update(self, accept_prob: torch.Tensor) -> None:
        m = self.m.add_(1.0)
        w = (m + self.T0).reciprocal()
        hbar = (1.0 - w) * self.hbar + w * (self.delta - accept_prob)
        log_eta = self.mu - m.sqrt() / self.GAMMA * hbar
        mk = m.pow(-self.KAPPA)
        log_eta_bar = mk * log_eta + (1.0 - mk) * self.log_eta_bar
        # (past the last adaptation step every update is a no-op: a captured CUDA graph keeps
        # making it, the eager loop stops calling it)
        adapting = m <= self.adapt_steps
        torch.where(adapting, hbar, self.hbar, out=self.hbar)
        torch.where(adapting, log_eta_bar, self.log_eta_bar, out=self.log_eta_bar)
        # steps 1 .. adapt_steps - 1 are followed by eta_m, the last one by the frozen etabar
        eta = torch.where(m < self.adapt_steps, log_eta, self.log_eta_bar).exp()
        torch.where(adapting, eta, self.eta, out=self.eta)

    def state(self) -> list[torch.Tensor]:
        return [self.eta, self.m, self.hbar, self.log_eta_bar]


class _Sampler:
    """The state and the step of one langevin_sample run (eager or captured in a CUDA graph).

    ``step(eta, temperature)`` advances ``self.x`` in place by one step at the Philox key and
    offset held by ``self.seed`` / ``self.offset`` (0-dim int64 tensors on x's device) and
    returns the step's statistics as 0-dim tensors (no host synchronisation).
    """

    def __init__(
        self, energy_fn, x, backend, metropolis, noise_scale, grad_clip, clamp, want_stats,
        chain_eta=None, adapt=None,
    ):  # fmt: skip
        self.energy_fn = energy_fn
        # Per-chain step sizes ((chains,) tensor, updated in place by ``adapt``); None: each
        # step gets its step size as a number.
        self.chain_eta = chain_eta
        self.adapt = adapt
        self.x = x
        self.chains = x.shape[0]
        self.backend = backend  # the proposal's and the accept/reject's
        self.metropolis = metropolis
        self.noise_scale = noise_scale
        # Checked once here; every step then calls the op directly (checked_step_).
        _, _, self.grad_clip, self.lo, self.hi, _, _ = langevin_args(
            x, x, 1.0, 1.0, noise_scale, grad_clip, clamp, 0, 0
        )
        self.want_stats = want_stats
        self.seed = torch.zeros((), dtype=torch.int64, device=x.device)
        self.offset = torch.zeros((), dtype=torch.int64, device=x.device)
        self.energy = self.grad = None
        if metropolis:  # E and dE/dx of the current state, kept across steps
            self.energy, self.grad = energy_and_grad(energy_fn, x)

    def _grad_norm(self, g: torch.Tensor) -> torch.Tensor:
        row = math.prod(g.shape[1:])
        return g.reshape(self.chains, row).to(acc_dtype(g.dtype)).norm(dim=1).mean()

    def step(self, eta: float, temperature: float) -> dict[str, torch.Tensor]:
        stats: dict[str, torch.Tensor] = {}
        x = self.x
        if self.chain_eta is not None:
            eta = self.chain_eta
            if self.want_stats:
                stats["step_size"] = eta.mean()
        if not self.metropolis:
            energy, grad = energy_and_grad(self.energy_fn, x)
            if self.want_stats:
                stats["energy"] = energy.mean()
                stats["grad_norm"] = self._grad_norm(grad)
            with torch.no_grad():
                if self.chain_eta is not None:
                    x.copy_(self._propose(grad, eta, temperature))
                    return stats
                sigma = reference.langevin_noise_std(eta, temperature, self.noise_scale)
                checked_step_(
                    x, grad.to(x.dtype), self.seed, self.offset, float(eta), sigma, self.grad_clip,
                    self.lo, self.hi, self.backend,
                )  # fmt: skip
            return stats
        energy, grad = self.energy, self.grad
        if self.want_stats:
            stats["energy"] = energy.mean()
            stats["grad_norm"] = self._grad_norm(grad)
        x_prop = self._propose(grad, eta, temperature)
        energy_prop, grad_prop = energy_and_grad(self.energy_fn, x_prop)
        with torch.no_grad():
            x_new, accepted, log_alpha = checked_accept(
                x, x_prop, grad, grad_prop, energy, energy_prop, eta, temperature, self.seed,
                self.offset, self.backend,
            )  # fmt: skip
            x.copy_(x_new)
            torch.where(accepted, energy_prop, energy, out=energy)
            keep = accepted.reshape((self.chains,) + (1,) * (x.dim() - 1))
            torch.where(keep, grad_prop, grad, out=grad)
            if self.want_stats or self.adapt is not None:
                accept_prob = torch.nan_to_num(log_alpha, nan=-math.inf).clamp(max=0.0).exp()
            if self.want_stats:
                stats["acceptance_rate"] = accepted.to(energy.dtype).mean()
                stats["accept_prob"] = accept_prob.mean()
            if self.adapt is not None:
                self.adapt.update(accept_prob)
        return stats

    def _propose(self, grad: torch.Tensor, eta, temperature: float) -> torch.Tensor:
        return checked_proposal(self.x, grad, eta, temperature, self.seed, self.offset, self.backend)

    def state(self) -> list[torch.Tensor]:
        tensors = [self.x, self.energy, self.grad, self.chain_eta]
        if self.adapt is not None:
            tensors += self.adapt.state()[1:]  # (adapt.eta is chain_eta)
        return [t for t in tensors if t is not None]


def langevin_sample(
    energy_fn: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    *,
    n_steps: int,
    step_size: ScheduleLike | torch.Tensor,
    temperature: ScheduleLike = 1.0,
    noise_scale: float | None = None,
    grad_clip: float | None = None,
    clamp: tuple[float | None, float | None] | None = None,
    metropolis: bool = False,
    seed: int = 0,
    cuda_graph: bool = False,
    progress: bool = False,
    return_stats: bool = False,
    backend: str = "auto",
    stream: int | None = None,
    group: Any = None,
    target_accept: float | None = None,
    adapt_steps: int = 0,
    thin: int | None = None,
) -> torch.Tensor | tuple[torch.Tensor, SampleStats]:
    """Run ``n_steps`` of Langevin dynamics on the chains ``x0`` (dim 0) under ``energy_fn``.

    Targets ``p(x) ∝ exp(-E(x) / T)``. Each step evaluates ``E`` and ``dE/dx`` by autograd
    (w.r.t. x only: parameters of ``energy_fn`` get no ``.grad``), then

      * ``metropolis=False`` (ULA, the EBM-training workhorse): one fused
        :func:`thermokern.langevin_step_` ``x <- clamp(x - eta clip(dE/dx) + sigma xi)`` with
        ``sigma = sqrt(2 eta T)``, or ``noise_scale`` (the JEM / IGEBM convention, e.g.
        ``step_size=1, noise_scale=0.01, clamp=(-1, 1)``). ULA is biased at finite step sizes
        (for a Gaussian of variance s^2 its stationary variance is ``T s^2 / (1 - eta / (2 s^2))``).
      * ``metropolis=True`` (MALA, exact for any step size): the proposal ``x' = x - eta
        dE/dx + sqrt(2 eta T) xi``, then the fused accept/reject of :func:`thermokern.mala_step`.
        The accepted state's energy and gradient are kept, so a step costs one evaluation of
        ``energy_fn``. ``noise_scale``, ``grad_clip`` and ``clamp`` would break detailed
        balance and are refused.

    Schedules: ``step_size`` and ``temperature`` take a number, a schedule
    (:func:`constant`, :func:`linear`, :func:`geometric`, :func:`cosine`, or the tuple form
    ``("cosine", 0.1, 0.01)``, where ``t = step / (n_steps - 1)`` runs from 0 at the first step
    to 1 at the last), or a callable ``step -> value``. Every value must be finite and > 0.

    Per-chain step sizes: ``step_size`` may be a tensor of one step size per chain, shape
    ``(chains,)`` (e.g. the ``adapted_step_size`` of an earlier run's stats); the kernels then
    read each chain's own ([Note: per-chain MALA parameters] in csrc/thermokern.cpp). ULA takes
    them without ``noise_scale``, ``grad_clip`` and ``clamp``.

    Step-size adaptation (MALA): with ``target_accept`` set, each chain's step size is adapted
    during the first ``adapt_steps`` steps by dual averaging (Hoffman & Gelman 2014) toward
    that acceptance probability (0.574 is optimal for MALA in high dimension), starting from
    ``step_size`` (a number or a per-chain tensor), and then frozen; the adaptation runs on the
    device without host synchronisation. The adaptation steps are warm-up: they do not satisfy
    detailed balance, so use the samples after them (``thin`` does). The stats report the
    adapted step sizes (``adapted_step_size``).

    Trajectories: ``thin=k`` returns, instead of the final states, the states after every
    ``k``-th step that follows the adaptation, shape ``(chains, (n_steps - adapt_steps) // k,
    *x0.shape[1:])``: the (chain, draw, *event) layout of :func:`thermokern.sampling.ess` and
    :func:`thermokern.sampling.rhat`.

    Random numbers: step ``k`` uses Philox key ``seed`` and offset ``k * counters_per_step``
    (:func:`step_rng`, :func:`counters_per_step`), so no step reuses noise; the same
    arguments reproduce a run exactly on a given backend. Under torch.distributed (sharded
    sampling) rank ``r`` of ``group`` uses offset ``r * 2**48 + k * counters_per_step``: the
    ranks draw distinct noise from one seed, rank 0 the single-process noise.

    CUDA graphs (``cuda_graph=True``, CUDA tensors only): one step (energy forward, gradient,
    update, and for MALA the proposal and accept/reject) is captured once into a
    ``torch.cuda.CUDAGraph`` after two warm-up steps on a side stream (on copies of the state,
    so the run is unchanged) and replayed ``n_steps`` times; the key and offset live in 0-dim
    int64 device tensors that are updated in place before each replay, which the kernels read.
    This removes the per-step launch overhead of small energy networks. Needs constant
    step_size and temperature (the values are baked into the graph) and an ``energy_fn`` that
    is capturable: static shapes, no host synchronisation (``.item()``, printing), no CPU
    tensors.

    Args:
        energy_fn: ``x -> (chains,)`` differentiable energies.
        x0: initial states (not modified), float32/64/16/bf16, at least 1-D.
        n_steps: number of steps (>= 0).
        step_size: eta (> 0), a schedule of it, or a tensor of one step size per chain,
            shape ``(chains,)`` (floating point, on x0's device).
        temperature: T (> 0) or a schedule of it.
        noise_scale: ULA only: sigma overriding sqrt(2 eta T).
        grad_clip: ULA only: clamp each gradient element to [-g, g].
        clamp: ULA only: ``(lo, hi)`` bounds of the samples (either may be None).
        metropolis: MALA instead of ULA.
        seed: Philox key of the run (an int).
        cuda_graph: capture one step as a CUDA graph and replay it.
        progress: show a tqdm progress bar (with the acceptance rate for MALA; reading it
            synchronises with the device every n_steps / 20 steps).
        return_stats: also return :class:`SampleStats`.
        backend: kernel backend of the steps (``"auto"``, ``"cpu"``, ``"cuda"``, ``"triton"``,
            ``"reference"``).
        stream: the noise stream (0 <= stream < 2**15; see :func:`step_rng`). None: this
            process's rank in ``group`` when torch.distributed is initialised, else the
            single-process stream. ``stream=r`` in one process reproduces rank ``r``; passing
            the same stream on every rank gives all ranks the same noise.
        group: the process group whose rank picks the stream (None: the default group).
        target_accept: MALA: the acceptance probability (in (0, 1)) toward which each chain's
            step size is adapted during the first ``adapt_steps`` steps; None: no adaptation.
        adapt_steps: the number of adaptation steps (0 <= adapt_steps <= n_steps; > 0 with
            ``target_accept``).
        thin: None: return the final states; an int k >= 1: return the trajectory of every
            k-th state after the adaptation (see above).

    Returns:
        The final states (a new contiguous tensor of x0's shape and dtype, not requiring
        grad) or with ``thin`` the trajectory, and with ``return_stats`` a
        ``(samples, SampleStats)`` pair.

    Raises:
        TypeError: non-callable ``energy_fn``, non-float ``x0``, bad argument types.
        ValueError: bad n_steps, step sizes or temperatures <= 0, ``metropolis`` with
            noise_scale/grad_clip/clamp, ``cuda_graph`` with a varying schedule, energies of a
            shape other than ``(chains,)``, ``target_accept`` outside (0, 1) or without
            ``metropolis``, ``adapt_steps`` without ``target_accept`` or outside
            [0, n_steps], a per-chain step size with a schedule-only option, ``thin`` < 1.
        RuntimeError: ``cuda_graph=True`` on CPU tensors (or without CUDA).
        ImportError: ``progress=True`` without tqdm installed.

    Example:
        >>> import torch
        >>> from thermokern import sampling
        >>> x = sampling.langevin_sample(lambda x: 0.5 * x.square().sum(1), torch.zeros(256, 2),
        ...                              n_steps=100, step_size=sampling.linear(0.1, 0.01))
        >>> x.shape
        torch.Size([256, 2])
    """
    if not callable(energy_fn):
        raise TypeError(f"energy_fn: expected a callable x -> energies, got {type(energy_fn).__name__}")
    check_float_tensor(x0, "x0")
    if x0.dim() == 0:
        raise ValueError("x0: expected at least 1 dimension (dim 0 indexes chains), got a 0-dim tensor")
    if isinstance(n_steps, bool) or not isinstance(n_steps, numbers.Integral) or n_steps < 0:
        raise ValueError(f"n_steps: expected an int >= 0, got {n_steps!r}")
    n_steps = int(n_steps)
    check_int(seed, "seed")
    stream = _resolve_stream(stream, group)
    check_int(adapt_steps, "adapt_steps")
    if target_accept is not None:
        target_accept = check_finite(target_accept, "target_accept")
        if not 0.0 < target_accept < 1.0:
            raise ValueError(f"target_accept: expected a value in (0, 1), got {target_accept}")
        if not metropolis:
            raise ValueError(
                "target_accept: step-size adaptation needs metropolis=True (it adapts MALA's acceptance rate)"
            )
        if not 0 < adapt_steps <= n_steps:
            raise ValueError(
                f"adapt_steps: expected 0 < adapt_steps <= n_steps ({n_steps}) with target_accept, got {adapt_steps}"
            )
    elif adapt_steps != 0:
        raise ValueError("adapt_steps: set target_accept too (the acceptance probability to adapt toward)")
    if thin is not None and check_int(thin, "thin") < 1:
        raise ValueError(f"thin: expected an int >= 1 (or None), got {thin}")
    chain_eta = None
    if isinstance(step_size, torch.Tensor) or target_accept is not None:
        if not isinstance(step_size, (torch.Tensor, numbers.Real)) or isinstance(step_size, bool):
            raise TypeError(
                "step_size: per-chain step sizes and adaptation need a number or a (chains,) "
                f"tensor, not a schedule; got {type(step_size).__name__}"
            )
        chain_eta = check_chain_param(step_size, "step_size", x0)
        chain_eta = (
            torch.full((x0.shape[0],), chain_eta, dtype=acc_dtype(x0.dtype), device=x0.device)
            if not isinstance(chain_eta, torch.Tensor)
            else chain_eta.clone()
        )
        for name, value in (("noise_scale", noise_scale), ("grad_clip", grad_clip), ("clamp", clamp)):
            if value is not None:
                raise ValueError(
                    f"{name}: not supported with per-chain step sizes; pass a number as step_size"
                )
        etas = [math.nan] * n_steps  # (the chains' own; reported as their mean)
    else:
        etas = schedule_values(step_size, n_steps, "step_size")
    temps = schedule_values(temperature, n_steps, "temperature")
    if metropolis:
        for name, value in (("noise_scale", noise_scale), ("grad_clip", grad_clip), ("clamp", clamp)):
            if value is not None:
                raise ValueError(
                    f"{name}: not supported with metropolis=True (MALA's accept test assumes the exact "
                    "proposal x - eta dE/dx + sqrt(2 eta T) xi); use metropolis=False"
                )
    if cuda_graph:
        _check_capturable(x0, etas if chain_eta is None else [], temps)
    bar = _progress_bar(n_steps) if progress else None
    name = _backend.resolve_backend(backend, x0)
    want_stats = return_stats or (progress and metropolis)
    x = x0.detach().clone(memory_format=torch.contiguous_format)
    counters = counters_per_step(x, metropolis)
    adapt = None if target_accept is None else _DualAveraging(chain_eta, target_accept, adapt_steps)
    sampler = _Sampler(
        energy_fn, x, name, metropolis, noise_scale, grad_clip, clamp, want_stats, chain_eta, adapt
    )
    keys = ("energy", "grad_norm") + (("acceptance_rate", "accept_prob") if metropolis else ())
    keys += ("step_size",) if chain_eta is not None else ()
    acc = acc_dtype(x.dtype)
    bufs = {k: torch.zeros(n_steps, dtype=acc, device=x.device) for k in keys} if want_stats else {}
    every = max(1, n_steps // 20)
    traj = None
    if thin is not None:
        draws = (n_steps - adapt_steps) // thin
        traj = x.new_empty((x.shape[0], draws) + tuple(x.shape[1:]))

    def after_step(k: int, stats: dict[str, torch.Tensor]) -> None:
        for key, value in stats.items():
            bufs[key][k] = value  # a device copy, no synchronisation
        after = k + 1 - adapt_steps
        if traj is not None and after > 0 and after % thin == 0:
            traj[:, after // thin - 1].copy_(x)
        if bar is not None:
            bar.update(1)
            if metropolis and (k + 1) % every == 0:
                bar.set_postfix(accept=f"{float(bufs['acceptance_rate'][: k + 1].mean()):.3f}")

    def set_rng(k: int) -> None:
        fill_rng(sampler.seed, sampler.offset, seed, k, counters, stream)

    try:
        if cuda_graph and n_steps > 0:
            eta0 = etas[0]
            _run_graphed(lambda: sampler.step(eta0, temps[0]), sampler.state(), n_steps, set_rng, after_step)
        else:
            for k in range(n_steps):
                set_rng(k)
                after_step(k, sampler.step(etas[k], temps[k]))
                if k + 1 == adapt_steps:
                    sampler.adapt = None  # the step sizes are frozen now
    finally:
        if bar is not None:
            bar.close()
    out = x if traj is None else traj
    if not return_stats:
        return out
    cpu = {k: v.to("cpu", torch.float64) for k, v in bufs.items()}
    stats = SampleStats(
        energy=cpu["energy"],
        grad_norm=cpu["grad_norm"],
        acceptance_rate=cpu.get("acceptance_rate"),
        accept_prob=cpu.get("accept_prob"),
        step_size=cpu["step_size"] if chain_eta is not None else torch.tensor(etas, dtype=torch.float64),
        temperature=torch.tensor(temps, dtype=torch.float64),
        counters_per_step=counters,
        adapted_step_size=chain_eta,
    )
    return out, stats

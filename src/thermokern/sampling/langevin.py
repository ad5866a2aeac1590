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
from thermokern._checks import check_float_tensor, check_int
from thermokern._dtypes import acc_dtype
from thermokern.ops.langevin import checked_step_, langevin_args, langevin_step
from thermokern.ops.mala import energy_and_grad, mala_accept
from thermokern.sampling.graph import _check_capturable, _run_graphed
from thermokern.sampling.schedules import ScheduleLike, schedule_values
from thermokern.sampling.streams import _resolve_stream, counters_per_step, step_rng

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
        step_size: the step size used at each step.
        temperature: the temperature used at each step (ULA with ``noise_scale`` ignores it).
        counters_per_step: Philox counters each step used (offset of step k = k times this).
    """

    energy: torch.Tensor
    grad_norm: torch.Tensor
    acceptance_rate: torch.Tensor | None
    accept_prob: torch.Tensor | None
    step_size: torch.Tensor
    temperature: torch.Tensor
    counters_per_step: int

    @property
    def mean_acceptance(self) -> float | None:
        """The acceptance rate over the whole run (MALA), else None."""
        if self.acceptance_rate is None or self.acceptance_rate.numel() == 0:
            return None
        return float(self.acceptance_rate.mean())


def _progress_bar(n_steps: int):
    try:
        from tqdm.auto import tqdm
    except ImportError:
        raise ImportError(
            "langevin_sample: progress=True needs tqdm, which is not installed "
            "(pip install tqdm), or pass progress=False"
        ) from None
    return tqdm(total=n_steps, desc="langevin_sample", unit="step", leave=False)


class _Sampler:
    """The state and the step of one langevin_sample run (eager or captured in a CUDA graph).

    ``step(eta, temperature)`` advances ``self.x`` in place by one step at the Philox key and
    offset held by ``self.seed`` / ``self.offset`` (0-dim int64 tensors on x's device) and
    returns the step's statistics as 0-dim tensors (no host synchronisation).
    """

    def __init__(self, energy_fn, x, backend, metropolis, noise_scale, grad_clip, clamp, want_stats):
        self.energy_fn = energy_fn
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
        if not self.metropolis:
            energy, grad = energy_and_grad(self.energy_fn, x)
            if self.want_stats:
                stats["energy"] = energy.mean()
                stats["grad_norm"] = self._grad_norm(grad)
            sigma = reference.langevin_noise_std(eta, temperature, self.noise_scale)
            with torch.no_grad():
                checked_step_(
                    x, grad.to(x.dtype), self.seed, self.offset, float(eta), sigma, self.grad_clip,
                    self.lo, self.hi, self.backend,
                )  # fmt: skip
            return stats
        energy, grad = self.energy, self.grad
        if self.want_stats:
            stats["energy"] = energy.mean()
            stats["grad_norm"] = self._grad_norm(grad)
        with torch.no_grad():
            x_prop = langevin_step(
                x,
                grad,
                step_size=eta,
                temperature=temperature,
                seed=self.seed,
                offset=self.offset,
                backend=self.backend,
            )
        energy_prop, grad_prop = energy_and_grad(self.energy_fn, x_prop)
        with torch.no_grad():
            x_new, accepted, log_alpha = mala_accept(
                x,
                x_prop,
                grad,
                grad_prop,
                energy,
                energy_prop,
                step_size=eta,
                temperature=temperature,
                seed=self.seed,
                offset=self.offset,
                backend=self.backend,
            )
            x.copy_(x_new)
            energy.copy_(torch.where(accepted, energy_prop, energy))
            keep = accepted.reshape((self.chains,) + (1,) * (x.dim() - 1))
            grad.copy_(torch.where(keep, grad_prop, grad))
            if self.want_stats:
                acc_t = energy.dtype
                stats["acceptance_rate"] = accepted.to(acc_t).mean()
                la = torch.nan_to_num(log_alpha, nan=-math.inf)
                stats["accept_prob"] = la.clamp(max=0.0).exp().mean()
        return stats

    def state(self) -> list[torch.Tensor]:
        return [t for t in (self.x, self.energy, self.grad) if t is not None]


def langevin_sample(
    energy_fn: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    *,
    n_steps: int,
    step_size: ScheduleLike,
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
        step_size: eta (> 0) or a schedule of it.
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

    Returns:
        The final states (a new contiguous tensor of x0's shape and dtype, not requiring
        grad), and with ``return_stats`` a ``(samples, SampleStats)`` pair.

    Raises:
        TypeError: non-callable ``energy_fn``, non-float ``x0``, bad argument types.
        ValueError: bad n_steps, step sizes or temperatures <= 0, ``metropolis`` with
            noise_scale/grad_clip/clamp, ``cuda_graph`` with a varying schedule, energies of a
            shape other than ``(chains,)``.
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
        _check_capturable(x0, etas, temps)
    bar = _progress_bar(n_steps) if progress else None
    name = _backend.resolve_backend(backend, x0)
    want_stats = return_stats or (progress and metropolis)
    x = x0.detach().clone(memory_format=torch.contiguous_format)
    counters = counters_per_step(x, metropolis)
    sampler = _Sampler(energy_fn, x, name, metropolis, noise_scale, grad_clip, clamp, want_stats)
    keys = ("energy", "grad_norm") + (("acceptance_rate", "accept_prob") if metropolis else ())
    acc = acc_dtype(x.dtype)
    bufs = {k: torch.zeros(n_steps, dtype=acc, device=x.device) for k in keys} if want_stats else {}
    every = max(1, n_steps // 20)

    def after_step(k: int, stats: dict[str, torch.Tensor]) -> None:
        for key, value in stats.items():
            bufs[key][k] = value  # a device copy, no synchronisation
        if bar is not None:
            bar.update(1)
            if metropolis and (k + 1) % every == 0:
                bar.set_postfix(accept=f"{float(bufs['acceptance_rate'][: k + 1].mean()):.3f}")

    def set_rng(k: int) -> None:
        s, off = step_rng(seed, k, counters, stream)
        sampler.seed.fill_(s - 2**64 if s >= 2**63 else s)
        sampler.offset.fill_(off)

    try:
        if cuda_graph and n_steps > 0:
            _run_graphed(sampler, n_steps, etas[0], temps[0], set_rng, after_step)
        else:
            for k in range(n_steps):
                set_rng(k)
                after_step(k, sampler.step(etas[k], temps[k]))
    finally:
        if bar is not None:
            bar.close()
    if not return_stats:
        return x
    cpu = {k: v.to("cpu", torch.float64) for k, v in bufs.items()}
    stats = SampleStats(
        energy=cpu["energy"],
        grad_norm=cpu["grad_norm"],
        acceptance_rate=cpu.get("acceptance_rate"),
        accept_prob=cpu.get("accept_prob"),
        step_size=torch.tensor(etas, dtype=torch.float64),
        temperature=torch.tensor(temps, dtype=torch.float64),
        counters_per_step=counters,
    )
    return x, stats

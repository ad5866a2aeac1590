"""Samplers for energy-based models: ``langevin_sample``, ``ReplayBuffer`` and schedules.

``langevin_sample`` runs many chains (dim 0 of ``x0``) of unadjusted Langevin dynamics (ULA,
one fused :func:`thermokern.langevin_step_` per step) or of Metropolis-adjusted Langevin
(MALA, :func:`thermokern.mala_step`'s proposal and fused accept/reject, with the accepted
state's energy and gradient cached so that a step costs one energy evaluation), optionally
captured once as a CUDA graph and replayed. ``ReplayBuffer`` keeps the persistent chains of
persistent contrastive divergence (PCD) on the samples' device. Step sizes and temperatures
take schedules (:func:`constant`, :func:`linear`, :func:`geometric`, :func:`cosine`, or any
``step -> value`` callable).

Random numbers: step ``k`` of a run with ``seed`` draws from Philox at :func:`step_rng`
``(seed, k, counters_per_step)``, i.e. key ``seed`` and offset ``k * counters_per_step``, with
``counters_per_step = ceil(numel / 4)`` for ULA and ``ceil(numel / 4) + ceil(chains / 4)``
for MALA (:func:`counters_per_step`): no two steps share noise, and the same seed reproduces a
run bit for bit on a backend. Two runs that continue each other need different seeds (or one
run with more steps).

Sharded sampling (DDP-style data parallelism): under an initialised ``torch.distributed``
process group every rank draws from its own *stream* ``r`` (its rank in ``group``, or the
``stream=`` keyword): the key stays ``seed`` and the offset becomes ``r * 2**48 + k *
counters_per_step`` (:data:`STREAM_STRIDE`), so for one seed no two (rank, step) pairs share a
counter, whatever each rank's batch size (each rank's run must use fewer than 2**48 counters,
checked; at most 2**15 streams). Stream 0 is the single-process stream, so rank 0 reproduces a
run without a process group, and ``stream=r`` reproduces rank ``r`` in one process.
:class:`ReplayBuffer` seeds its generator with :func:`stream_seed` ``(seed, r)``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch

from thermokern import _backend, reference
from thermokern.ops._checks import check_float_tensor
from thermokern.ops.langevin import _check_real, _checked_step_, _parse, langevin_step
from thermokern.ops.mala import _proposal_backend, energy_and_grad, mala_accept

__all__ = [
    "STREAM_STRIDE",
    "Constant",
    "Cosine",
    "Geometric",
    "Linear",
    "ReplayBuffer",
    "SampleStats",
    "Schedule",
    "constant",
    "cosine",
    "counters_per_step",
    "geometric",
    "langevin_sample",
    "linear",
    "schedule",
    "schedule_values",
    "step_rng",
    "stream_seed",
]


# ============================================================================ schedules
class Schedule:
    """A value per sampler step: ``schedule(step, n_steps) -> float``.

    Subclasses define :meth:`value`. The run's progress is ``t = step / (n_steps - 1)`` (0
    for a one-step run): the first step gets ``start``, the last ``end``.
    """

    def value(self, t: float) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, step: int, n_steps: int) -> float:
        t = step / (n_steps - 1) if n_steps > 1 else 0.0
        return float(self.value(t))

    @property
    def is_constant(self) -> bool:
        return False


@dataclasses.dataclass(frozen=True)
class Constant(Schedule):
    """The same ``value`` at every step."""

    value_: float

    def value(self, t: float) -> float:
        return self.value_

    @property
    def is_constant(self) -> bool:
        return True


@dataclasses.dataclass(frozen=True)
class Linear(Schedule):
    """``start + (end - start) t``."""

    start: float
    end: float

    def value(self, t: float) -> float:
        return self.start + (self.end - self.start) * t

    @property
    def is_constant(self) -> bool:
        return self.start == self.end


@dataclasses.dataclass(frozen=True)
class Geometric(Schedule):
    """``start (end / start)^t``: a constant ratio between consecutive steps (both > 0);
    the usual annealing schedule for temperatures."""

    start: float
    end: float

    def __post_init__(self):
        if not (self.start > 0 and self.end > 0):
            raise ValueError(f"geometric: expected start > 0 and end > 0, got ({self.start}, {self.end})")

    def value(self, t: float) -> float:
        return self.start * (self.end / self.start) ** t

    @property
    def is_constant(self) -> bool:
        return self.start == self.end


@dataclasses.dataclass(frozen=True)
class Cosine(Schedule):
    """``end + (start - end) (1 + cos(pi t)) / 2``: flat near both ends (half a cosine)."""

    start: float
    end: float

    def value(self, t: float) -> float:
        return self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * t))

    @property
    def is_constant(self) -> bool:
        return self.start == self.end


def _real(v: object, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(v).__name__}")
    return float(v)


def constant(value: float) -> Constant:
    """The schedule ``value`` at every step."""
    return Constant(_real(value, "constant"))


def linear(start: float, end: float) -> Linear:
    """The schedule ``start + (end - start) * step / (n_steps - 1)``."""
    return Linear(_real(start, "linear"), _real(end, "linear"))


def geometric(start: float, end: float) -> Geometric:
    """The schedule ``start * (end / start) ** (step / (n_steps - 1))`` (start, end > 0)."""
    return Geometric(_real(start, "geometric"), _real(end, "geometric"))


def cosine(start: float, end: float) -> Cosine:
    """The schedule ``end + (start - end) * (1 + cos(pi * step / (n_steps - 1))) / 2``."""
    return Cosine(_real(start, "cosine"), _real(end, "cosine"))


SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "constant": constant,
    "linear": linear,
    "geometric": geometric,
    "cosine": cosine,
}

ScheduleLike = float | Schedule | tuple | Callable[[int], float]


def schedule(spec: ScheduleLike, name: str = "schedule") -> Schedule | Callable[[int], float]:
    """Turn a schedule specification into a schedule.

    Accepted forms:
      * a number: :func:`constant`;
      * a :class:`Schedule` (from :func:`constant`, :func:`linear`, :func:`geometric`,
        :func:`cosine`), returned as is;
      * a tuple ``(name, *args)`` with a name from ``"constant"``, ``"linear"``,
        ``"geometric"``, ``"cosine"``, e.g. ``("linear", 0.1, 0.01)``;
      * any other callable: ``step -> value`` (``step`` counts from 0), returned as is.

    Raises:
        TypeError/ValueError naming ``name`` for anything else.
    """
    if isinstance(spec, Schedule):
        return spec
    if isinstance(spec, numbers.Real) and not isinstance(spec, bool):
        return Constant(float(spec))
    if isinstance(spec, (tuple, list)) and spec and isinstance(spec[0], str):
        kind, *args = spec
        if kind not in SCHEDULES:
            raise ValueError(f"{name}: unknown schedule {kind!r}; expected one of {', '.join(SCHEDULES)}")
        try:
            return SCHEDULES[kind](*args)
        except TypeError as exc:
            raise TypeError(f"{name}: bad arguments for schedule {kind!r}: {exc}") from None
    if isinstance(spec, str):
        raise TypeError(
            f"{name}: a schedule name needs its values, e.g. ({spec!r}, start, end) or "
            f"thermokern.sampling.{spec if spec in SCHEDULES else 'linear'}(...); got {spec!r}"
        )
    if callable(spec):
        return spec
    raise TypeError(
        f"{name}: expected a number, a schedule (e.g. thermokern.sampling.linear(0.1, 0.01)), a "
        f"('linear', start, end) tuple or a callable step -> value; got {type(spec).__name__}"
    )


def schedule_values(spec: ScheduleLike, n_steps: int, name: str = "schedule") -> list[float]:
    """The values of ``spec`` (see :func:`schedule`) at steps ``0 .. n_steps - 1``, each
    checked to be finite and > 0.

    Raises:
        ValueError: a value <= 0, NaN or infinite (the message names ``name`` and the step).
    """
    sched = schedule(spec, name)
    values = []
    for k in range(n_steps):
        v = sched(k, n_steps) if isinstance(sched, Schedule) else sched(k)
        v = _check_real(v, name) if not isinstance(v, torch.Tensor) else float(v)
        if not 0.0 < v < math.inf:
            raise ValueError(f"{name}: expected finite values > 0, got {v} at step {k}")
        values.append(v)
    return values


def _is_constant(values: Sequence[float]) -> bool:
    return len(set(values)) <= 1


# ============================================================================ random streams
def counters_per_step(x: torch.Tensor | Sequence[int], metropolis: bool = False) -> int:
    """Philox counters one sampler step on ``x`` (or a shape) uses: ``ceil(numel / 4)`` for a
    Langevin step, plus ``ceil(chains / 4)`` for MALA's accept tests."""
    shape = tuple(x.shape) if isinstance(x, torch.Tensor) else tuple(x)
    numel = math.prod(shape)
    if metropolis:
        return reference.mala_counters(numel, shape[0])
    return (numel + 3) // 4


#: Philox counters reserved for each stream (rank) of a sharded run: stream ``r`` starts at
#: offset ``r * STREAM_STRIDE``.
STREAM_STRIDE = 2**48
#: Streams available (so that every offset stays below 2**63).
MAX_STREAMS = 2**15
# An odd 64-bit constant (2**64 / golden ratio): stream_seed's multiplier.
_SEED_MIX = 0x9E3779B97F4A7C15


def step_rng(seed: int, step: int, counters: int, stream: int | None = None) -> tuple[int, int]:
    """The Philox ``(seed, offset)`` of sampler step ``step``: the one place that maps a run's
    seed, step and stream (rank) to a random stream.

    The key is ``seed``. Without a stream (single process) the offset is ``step * counters``
    (``counters`` from :func:`counters_per_step`), so consecutive steps use disjoint counter
    ranges. Stream ``r`` (rank ``r`` of a sharded run, 0 <= r < 2**15) uses offset
    ``r * 2**48 + step * counters`` (:data:`STREAM_STRIDE`): each stream owns its own block of
    2**48 counters, so streams of different ranks and steps never overlap, even when the ranks'
    batch sizes (``counters``) differ. Stream 0 equals the single-process stream.

    Raises:
        ValueError: the offset would leave [0, 2**63), or with a stream the step's counters would
            leave the stream's block [0, 2**48), or the stream is out of [0, 2**15).
    """
    offset = step * counters
    if stream is None:
        if not 0 <= offset < 2**63:
            raise ValueError(f"offset: step {step} x {counters} counters leaves [0, 2**63)")
        return seed, offset
    if not 0 <= stream < MAX_STREAMS:
        raise ValueError(f"stream: expected 0 <= stream < {MAX_STREAMS}, got {stream}")
    if not 0 <= offset + counters <= STREAM_STRIDE:
        raise ValueError(
            f"offset: step {step} x {counters} counters leaves stream {stream}'s block of 2**48 counters"
        )
    return seed, stream * STREAM_STRIDE + offset


def stream_seed(seed: int, stream: int | None) -> int:
    """The generator seed of stream (rank) ``stream`` for a run seeded with ``seed``:
    ``(seed + stream * 0x9E3779B97F4A7C15) mod 2**64`` (``seed`` itself for stream None or 0).

    The multiplier is odd, so the low 32 bits (all that a CPU generator uses) differ between
    the streams of one seed.
    """
    if not stream:
        return int(seed)
    return (int(seed) + int(stream) * _SEED_MIX) % 2**64


def _resolve_stream(stream: int | None, group) -> int | None:
    """``stream`` checked, or (None) this process's rank in ``group`` when torch.distributed is
    initialised, else None (the single-process stream)."""
    if stream is not None:
        if isinstance(stream, bool) or not isinstance(stream, numbers.Integral):
            raise TypeError(f"stream: expected an int or None, got {type(stream).__name__}")
        if not 0 <= stream < MAX_STREAMS:
            raise ValueError(f"stream: expected 0 <= stream < {MAX_STREAMS}, got {stream}")
        return int(stream)
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        if group is not None:
            raise RuntimeError(
                "group: the default process group is not initialised; call "
                "torch.distributed.init_process_group(...) first, or pass group=None"
            )
        return None
    from thermokern.distributed import _group_rank_world

    rank, _ = _group_rank_world(group)
    if rank >= MAX_STREAMS:
        raise ValueError(f"stream: rank {rank} >= {MAX_STREAMS} streams")
    return rank


# ============================================================================ langevin_sample
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
        self.backend = backend  # the accept/reject's
        # langevin_step's: the same, until this build has its CUDA kernel (Triton meanwhile)
        self.prop_backend = _proposal_backend(backend)
        self.metropolis = metropolis
        self.noise_scale = noise_scale
        # Checked once here; every step then calls the op directly (_checked_step_).
        _, _, self.grad_clip, self.lo, self.hi, _, _ = _parse(
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
        return g.reshape(self.chains, row).to(reference.acc_dtype(g.dtype)).norm(dim=1).mean()

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
                _checked_step_(
                    x, grad.to(x.dtype), self.seed, self.offset, float(eta), sigma, self.grad_clip,
                    self.lo, self.hi, self.prop_backend,
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
                backend=self.prop_backend,
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
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
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
        if x0.device.type != "cuda":
            raise RuntimeError(
                f"cuda_graph=True needs CUDA tensors (x0 is on {x0.device}); CUDA graphs cannot "
                "capture CPU work: pass cuda_graph=False"
            )
        for name, values in (("step_size", etas), ("temperature", temps)):
            if not _is_constant(values):
                raise ValueError(
                    f"{name}: cuda_graph=True needs a constant {name} (the value is baked into the "
                    "captured kernels); use cuda_graph=False for schedules"
                )
    bar = _progress_bar(n_steps) if progress else None
    name = _backend.resolve_backend(backend, x0)
    want_stats = return_stats or (progress and metropolis)
    x = x0.detach().clone(memory_format=torch.contiguous_format)
    counters = counters_per_step(x, metropolis)
    sampler = _Sampler(energy_fn, x, name, metropolis, noise_scale, grad_clip, clamp, want_stats)
    keys = ("energy", "grad_norm") + (("acceptance_rate", "accept_prob") if metropolis else ())
    acc = reference.acc_dtype(x.dtype)
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


def _run_graphed(sampler: _Sampler, n_steps, eta, temperature, set_rng, after_step) -> None:
    """Capture one step of ``sampler`` in a CUDA graph and replay it ``n_steps`` times.

    The warm-up (required before capture: it lets autograd and the allocator settle on a side
    stream) runs on the real state, which is saved and restored around it, so the replays
    produce what the eager loop would.
    """
    saved = [t.clone() for t in sampler.state()]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        set_rng(0)
        for _ in range(2):
            sampler.step(eta, temperature)
    torch.cuda.current_stream().wait_stream(side)
    for t, s in zip(sampler.state(), saved):
        t.copy_(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_stats = sampler.step(eta, temperature)
    for k in range(n_steps):
        set_rng(k)
        graph.replay()
        after_step(k, static_stats)


# ============================================================================ replay buffer
class ReplayBuffer:
    """Persistent chains for PCD training of energy-based models, kept on one device.

    The buffer holds ``capacity`` samples of shape ``sample_shape``, initialised uniformly in
    ``[low, high)`` (so it can be sampled from the start, as in JEM). :meth:`sample` draws
    ``n`` of them uniformly with replacement, replacing each by fresh uniform noise with
    probability ``reinit_prob``, and returns their slot indices; after refining the samples
    (e.g. with :func:`langevin_sample`) :meth:`update` writes them back into those slots.
    :meth:`push` inserts new samples in ring-buffer order (e.g. to seed the buffer). All
    random draws use the buffer's own ``torch.Generator`` on its device (seeded by ``seed``):
    nothing touches the global RNG and nothing leaves the device.

    Sharded (one buffer per rank under torch.distributed): the generator is seeded with
    :func:`stream_seed` ``(seed, r)`` = ``(seed + r * 0x9E3779B97F4A7C15) mod 2**64`` for
    stream ``r`` (the rank in ``group`` by default), so the ranks' initial and reinitialised
    rows differ; :meth:`gather` concatenates all ranks' buffers.

    Example (one PCD iteration)::

        x, idx = buffer.sample(128)
        x = sampling.langevin_sample(model, x, n_steps=20, step_size=1.0, noise_scale=0.01,
                                     clamp=(-1, 1), seed=it)
        buffer.update(idx, x)
        loss = model(data).mean() - model(x).mean()

    Args:
        capacity: number of samples (> 0).
        sample_shape: shape of one sample (an int or a tuple).
        reinit_prob: probability in [0, 1] that a drawn sample is replaced by fresh noise.
        low, high: bounds of the uniform noise (finite, low < high).
        device: where the buffer lives (default: ``torch.get_default_device()``).
        seed: seed of the buffer's generator (of stream 0; see above).
        dtype: floating dtype of the samples (default: ``torch.get_default_dtype()``).
        stream: the stream; None: this process's rank in ``group`` when torch.distributed
            is initialised, else the single-process seed.
        group: the process group whose rank picks the stream (None: the default group).
    """

    def __init__(
        self,
        capacity: int,
        sample_shape: int | Sequence[int],
        *,
        reinit_prob: float = 0.05,
        low: float = -1.0,
        high: float = 1.0,
        device: torch.device | str | None = None,
        seed: int = 0,
        dtype: torch.dtype | None = None,
        stream: int | None = None,
        group: Any = None,
    ):
        if isinstance(capacity, bool) or not isinstance(capacity, numbers.Integral) or capacity <= 0:
            raise ValueError(f"capacity: expected an int > 0, got {capacity!r}")
        if isinstance(sample_shape, numbers.Integral):
            sample_shape = (int(sample_shape),)
        if isinstance(sample_shape, (str, bytes)):
            raise TypeError(f"sample_shape: expected an int or a tuple of ints, got {sample_shape!r}")
        try:
            shape = tuple(int(d) for d in sample_shape)
        except (TypeError, ValueError):
            raise TypeError(
                f"sample_shape: expected an int or a tuple of ints, got {sample_shape!r}"
            ) from None
        if any(d < 0 for d in shape):
            raise ValueError(f"sample_shape: expected non-negative sizes, got {shape}")
        p = _real(reinit_prob, "reinit_prob")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"reinit_prob: expected a probability in [0, 1], got {p}")
        lo, hi = _real(low, "low"), _real(high, "high")
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"low, high: expected finite bounds with low < high, got ({lo}, {hi})")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
        self.capacity = int(capacity)
        self.sample_shape = torch.Size(shape)
        self.reinit_prob, self.low, self.high = p, lo, hi
        self.device = torch.device(device) if device is not None else torch.get_default_device()
        self.dtype = dtype if dtype is not None else torch.get_default_dtype()
        if not self.dtype.is_floating_point:
            raise TypeError(f"dtype: expected a floating dtype, got {self.dtype}")
        self._gen = torch.Generator(device=self.device)
        self.stream = _resolve_stream(stream, group)
        self._gen.manual_seed(stream_seed(seed, self.stream))
        self._ptr = 0
        self.buffer = self._noise(self.capacity)

    def __len__(self) -> int:
        """The number of samples held: always ``capacity`` (the buffer starts full of noise)."""
        return self.capacity

    def __repr__(self) -> str:
        return (
            f"ReplayBuffer(capacity={self.capacity}, sample_shape={tuple(self.sample_shape)}, "
            f"reinit_prob={self.reinit_prob}, low={self.low}, high={self.high}, device={self.device}, "
            f"dtype={self.dtype})"
        )

    def _noise(self, n: int) -> torch.Tensor:
        u = torch.rand((n, *self.sample_shape), generator=self._gen, device=self.device, dtype=torch.float32)
        return (u * (self.high - self.low) + self.low).to(self.dtype)

    def _check_samples(self, x: object, name: str, n: int | None = None) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: expected a tensor, got {type(x).__name__}")
        if x.device != self.device:
            raise ValueError(
                f"{name}: expected a tensor on {self.device} (the buffer's device), got {x.device}; "
                "create the buffer with device=... where the samples live"
            )
        if x.dim() == 0 or x.shape[1:] != self.sample_shape or (n is not None and x.shape[0] != n):
            want = f"({n if n is not None else 'n'}, {', '.join(map(str, self.sample_shape))})"
            raise ValueError(f"{name}: expected shape {want}, got {tuple(x.shape)}")
        return x.detach().to(self.dtype)

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``n`` samples: ``(x, idx)``.

        ``idx`` (n,) int64: uniformly random slots (with replacement); ``x`` (n,
        *sample_shape): a copy of those slots, where each row is, with probability
        ``reinit_prob``, fresh uniform noise in ``[low, high)`` instead.
        """
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
            raise ValueError(f"n: expected an int >= 0, got {n!r}")
        n = int(n)
        idx = torch.randint(0, self.capacity, (n,), generator=self._gen, device=self.device)
        x = self.buffer.index_select(0, idx)
        if self.reinit_prob > 0.0:
            fresh = torch.rand(n, generator=self._gen, device=self.device) < self.reinit_prob
            keep = fresh.reshape((n,) + (1,) * len(self.sample_shape))
            x = torch.where(keep, self._noise(n), x)
        return x, idx

    def update(self, idx: torch.Tensor, x: torch.Tensor) -> None:
        """Write samples ``x`` (n, *sample_shape) back into slots ``idx`` (n,) from
        :meth:`sample` (if a slot repeats, one of its rows wins)."""
        if not isinstance(idx, torch.Tensor) or idx.dtype != torch.int64 or idx.dim() != 1:
            raise TypeError("idx: expected the (n,) int64 tensor of slots that sample() returned")
        if idx.device != self.device:
            raise ValueError(
                f"idx: expected a tensor on {self.device} (the buffer's device), got {idx.device}"
            )
        x = self._check_samples(x, "x", idx.shape[0])
        self.buffer.index_copy_(0, idx, x)

    def push(self, x: torch.Tensor) -> None:
        """Insert samples ``x`` (n, *sample_shape) in ring-buffer order, overwriting the
        oldest insertions (initially the noise); with n > capacity the last capacity rows win."""
        x = self._check_samples(x, "x")
        n = x.shape[0]
        if n == 0:
            return
        if n > self.capacity:
            x = x[n - self.capacity :]
            self._ptr = (self._ptr + n - self.capacity) % self.capacity
            n = self.capacity
        pos = (self._ptr + torch.arange(n, device=self.device)) % self.capacity
        self.buffer.index_copy_(0, pos, x)
        self._ptr = (self._ptr + n) % self.capacity

    def gather(self, group: Any = None) -> torch.Tensor:
        """Every rank's buffer concatenated along dim 0 in rank order (on every rank; a
        collective: call it on all ranks). See :func:`thermokern.distributed.gather_samples`."""
        from thermokern.distributed import gather_samples

        return gather_samples(self.buffer, group=group)

    def state_dict(self) -> dict[str, Any]:
        """The samples, the ring position, the generator state and the settings."""
        return {
            "buffer": self.buffer,
            "ptr": self._ptr,
            "generator": self._gen.get_state(),
            "generator_device": self.device.type,
            "capacity": self.capacity,
            "sample_shape": tuple(self.sample_shape),
            "reinit_prob": self.reinit_prob,
            "low": self.low,
            "high": self.high,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (samples copied to this buffer's device and dtype).

        The settings (reinit_prob, low, high) are restored too. The generator state is
        restored when it comes from the same device type, else it is kept (with a warning).

        Raises:
            ValueError: a buffer of another capacity or sample shape.
        """
        buf = state["buffer"]
        want = (self.capacity, *self.sample_shape)
        if tuple(buf.shape) != want:
            raise ValueError(f"state: expected a buffer of shape {want}, got {tuple(buf.shape)}")
        self.buffer.copy_(buf)
        self._ptr = int(state.get("ptr", 0)) % self.capacity
        self.reinit_prob = float(state.get("reinit_prob", self.reinit_prob))
        self.low = float(state.get("low", self.low))
        self.high = float(state.get("high", self.high))
        if "generator" in state:
            if state.get("generator_device", self.device.type) == self.device.type:
                self._gen.set_state(state["generator"])
            else:
                warnings.warn(
                    f"ReplayBuffer.load_state_dict: the generator state comes from a "
                    f"{state['generator_device']} buffer and cannot seed this {self.device.type} one; "
                    "keeping this buffer's generator",
                    stacklevel=2,
                )

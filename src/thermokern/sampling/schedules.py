"""Schedules of a sampler's step size and temperature: one value per step.

:func:`constant`, :func:`linear`, :func:`geometric` and :func:`cosine` build :class:`Schedule`
objects, which are evaluated at the run's progress ``t = step / (n_steps - 1)``.
:func:`schedule` also accepts a number, the tuple form ``("cosine", 0.1, 0.01)`` and any
``step -> value`` callable; :func:`schedule_values` evaluates a schedule over a run and checks
every value (finite, > 0).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable

import torch

from thermokern._checks import check_real

__all__ = [
    "SCHEDULES",
    "Constant",
    "Cosine",
    "Geometric",
    "Linear",
    "Schedule",
    "ScheduleLike",
    "constant",
    "cosine",
    "geometric",
    "linear",
    "schedule",
    "schedule_values",
]


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
class _Ramp(Schedule):
    """A schedule from ``start`` (t = 0) to ``end`` (t = 1): constant when they are equal."""

    start: float
    end: float

    @property
    def is_constant(self) -> bool:
        return self.start == self.end


@dataclasses.dataclass(frozen=True)
class Linear(_Ramp):
    """``start + (end - start) t``."""

    def value(self, t: float) -> float:
        return self.start + (self.end - self.start) * t


@dataclasses.dataclass(frozen=True)
class Geometric(_Ramp):
    """``start (end / start)^t``: a constant ratio between consecutive steps (both > 0);
    the usual annealing schedule for temperatures."""

    def __post_init__(self):
        if not (self.start > 0 and self.end > 0):
            raise ValueError(f"geometric: expected start > 0 and end > 0, got ({self.start}, {self.end})")

    def value(self, t: float) -> float:
        return self.start * (self.end / self.start) ** t


@dataclasses.dataclass(frozen=True)
class Cosine(_Ramp):
    """``end + (start - end) (1 + cos(pi t)) / 2``: flat near both ends (half a cosine)."""

    def value(self, t: float) -> float:
        return self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * t))


def constant(value: float) -> Constant:
    """The schedule ``value`` at every step."""
    return Constant(check_real(value, "constant"))


def linear(start: float, end: float) -> Linear:
    """The schedule ``start + (end - start) * step / (n_steps - 1)``."""
    return Linear(check_real(start, "linear"), check_real(end, "linear"))


def geometric(start: float, end: float) -> Geometric:
    """The schedule ``start * (end / start) ** (step / (n_steps - 1))`` (start, end > 0)."""
    return Geometric(check_real(start, "geometric"), check_real(end, "geometric"))


def cosine(start: float, end: float) -> Cosine:
    """The schedule ``end + (start - end) * (1 + cos(pi * step / (n_steps - 1))) / 2``."""
    return Cosine(check_real(start, "cosine"), check_real(end, "cosine"))


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
        v = check_real(v, name) if not isinstance(v, torch.Tensor) else float(v)
        if not 0.0 < v < math.inf:
            raise ValueError(f"{name}: expected finite values > 0, got {v} at step {k}")
        values.append(v)
    return values

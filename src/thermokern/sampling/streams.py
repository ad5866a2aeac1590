"""Noise streams of the samplers: which Philox counters each step, chain and rank draws.

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
:class:`~thermokern.sampling.ReplayBuffer` seeds its generator with :func:`stream_seed`
``(seed, r)``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
import torch.distributed as dist

from thermokern import reference
from thermokern.distributed import group_rank_world

__all__ = ["MAX_STREAMS", "STREAM_STRIDE", "counters_per_step", "step_rng", "stream_seed"]


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


def fill_rng(
    seed_t: torch.Tensor,
    offset_t: torch.Tensor,
    seed: int,
    step: int,
    counters: int,
    stream: int | None = None,
) -> None:
    """Write step ``step``'s Philox key and offset (:func:`step_rng`) into the 0-dim int64
    device tensors the kernels read (in place: no host synchronisation; a captured CUDA graph
    sees the new values at its next replay)."""
    s, off = step_rng(seed, step, counters, stream)
    seed_t.fill_(s - 2**64 if s >= 2**63 else s)
    offset_t.fill_(off)


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
    if not (dist.is_available() and dist.is_initialized()):
        if group is not None:
            raise RuntimeError(
                "group: the default process group is not initialised; call "
                "torch.distributed.init_process_group(...) first, or pass group=None"
            )
        return None
    rank, _ = group_rank_world(group)
    if rank >= MAX_STREAMS:
        raise ValueError(f"stream: rank {rank} >= {MAX_STREAMS} streams")
    return rank

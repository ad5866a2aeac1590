"""Samplers for energy-based models and their diagnostics: ``langevin_sample`` (with step-size
adaptation), ``ais`` (log Z), ``replica_exchange``, ``ess`` / ``rhat``, ``ReplayBuffer`` and
schedules.

The package's modules, each importing only those above it:

* :mod:`~thermokern.sampling.schedules`: step-size and temperature schedules
  (:func:`constant`, :func:`linear`, :func:`geometric`, :func:`cosine`, the tuple form,
  callables) and :func:`schedule` / :func:`schedule_values`, which parse and evaluate them.
* :mod:`~thermokern.sampling.streams`: the Philox noise streams: :func:`step_rng`,
  :func:`counters_per_step`, the per-rank streams of sharded runs (:data:`STREAM_STRIDE`,
  :func:`stream_seed`); its docstring states the random-number contract.
* :mod:`~thermokern.sampling.graph`: the CUDA-graph runner of ``cuda_graph=True``.
* :mod:`~thermokern.sampling.langevin`: :func:`langevin_sample` (ULA / MALA, the step loop)
  and :class:`SampleStats`.
* :mod:`~thermokern.sampling.replay`: :class:`ReplayBuffer`, the persistent chains of PCD.
* :mod:`~thermokern.sampling.ais`: :func:`ais`, annealed importance sampling of log Z, and
  :func:`free_energy_difference`.
* :mod:`~thermokern.sampling.tempering`: :func:`replica_exchange` (parallel tempering).
* :mod:`~thermokern.sampling.diagnostics`: :func:`ess` and :func:`rhat` (rank-normalised, split;
  Vehtari et al. 2021), in the (chain, draw, *event) layout.

From the rest of thermokern the package uses the public ops and the functions their modules
share on purpose (``ops.langevin.langevin_args`` / ``checked_step_``, ``_checks``,
``_backend.resolve_backend``, ``distributed.group_rank_world``). Every public name is re-exported here (``__all__``, plus ``MAX_STREAMS``, ``SCHEDULES`` and
``ScheduleLike``): use ``thermokern.sampling.X``.
"""

from __future__ import annotations

from thermokern.sampling.ais import AISResult, FreeEnergyResult, ais, free_energy_difference
from thermokern.sampling.diagnostics import ess, rhat
from thermokern.sampling.langevin import SampleStats, langevin_sample
from thermokern.sampling.replay import ReplayBuffer
from thermokern.sampling.schedules import (
    SCHEDULES,  # noqa: F401 - public, outside __all__ (as in the single-module sampling.py)
    Constant,
    Cosine,
    Geometric,
    Linear,
    Schedule,
    ScheduleLike,  # noqa: F401 - public, outside __all__
    constant,
    cosine,
    geometric,
    linear,
    schedule,
    schedule_values,
)
from thermokern.sampling.streams import (
    MAX_STREAMS,  # noqa: F401 - public, outside __all__
    STREAM_STRIDE,
    counters_per_step,
    step_rng,
    stream_seed,
)
from thermokern.sampling.tempering import ReplicaExchangeStats, replica_exchange

__all__ = [
    "STREAM_STRIDE",
    "AISResult",
    "Constant",
    "Cosine",
    "FreeEnergyResult",
    "Geometric",
    "Linear",
    "ReplayBuffer",
    "ReplicaExchangeStats",
    "SampleStats",
    "Schedule",
    "ais",
    "constant",
    "cosine",
    "counters_per_step",
    "ess",
    "free_energy_difference",
    "geometric",
    "langevin_sample",
    "linear",
    "replica_exchange",
    "rhat",
    "schedule",
    "schedule_values",
    "step_rng",
    "stream_seed",
]

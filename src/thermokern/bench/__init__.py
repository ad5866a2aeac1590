"""Benchmark engine behind ``thermokern bench``: thermokern's backends against PyTorch baselines.

For every op in :data:`OPS` (a registry; each :class:`OpSpec` names its providers, how to make
inputs, the minimal bytes a kernel must move, and a float64 reference), every shape and dtype,
and both modes (``fwd`` and ``fwd+bwd``), :func:`run` times each provider, measures the error
against float64 and the peak extra memory, and puts the numbers next to a ``dst.copy_(src)``
of the input's size measured in the same run (the practical bandwidth ceiling).

Layout:
  * ``registry``  :class:`OpSpec`, :data:`OPS`, :func:`register`, :func:`forward_spec`, shape/dtype parsing;
  * ``providers`` :class:`Provider`; thermokern backends, eager, ``torch.compile`` and peer
                  (Liger, quack) adapters;
  * ``specs/``    one module per op (baseline, providers, shapes, dtypes, reference, registration);
  * ``runner``    :func:`run`, and the per-call pieces the pytest-benchmark suites reuse;
  * ``timing``    timers, quantiles, cache size, copy bandwidth;
  * ``memory``    peak extra memory (CUDA allocator, /proc on Linux);
  * ``env``       environment and version capture;
  * ``report``    the Markdown table, the JSON file and the PNG plot.

Public API: the names in ``__all__`` below (the submodules are implementation details).
"""

from __future__ import annotations

from . import specs as _specs  # noqa: F401  (registers every op in OPS)
from .memory import PeakMemory
from .providers import Provider
from .registry import MODES, OPS, OpSpec, label, parse_dtype, parse_shape, register
from .report import format_table, plot
from .runner import SCHEMA, Calls, make_calls, max_abs_err, result_of_call, run
from .timing import measure_copy, n_copies

__all__ = [
    "MODES",
    "OPS",
    "SCHEMA",
    "Calls",
    "OpSpec",
    "PeakMemory",
    "Provider",
    "format_table",
    "label",
    "make_calls",
    "max_abs_err",
    "measure_copy",
    "n_copies",
    "parse_dtype",
    "parse_shape",
    "plot",
    "register",
    "result_of_call",
    "run",
]

"""pytest-benchmark suite for the partition functions (logsumexp, with and without a broadcast
padding mask, and thermo_stats): ``pytest bench/ --benchmark-only``.

Parametrised by (op, provider) x shape x dtype x mode from the registry in ``thermokern.bench``
(the engine behind ``thermokern bench``; conftest.row_op_cases); shapes are small so that the
CPU run takes a couple of minutes. Each benchmark stores in ``benchmark.extra_info`` (the
``op_benchmark`` fixture of conftest.py): the effective bandwidth (minimal bytes / median
time), the copy bandwidth of the same byte count and the percentage of it, the max abs error
against float64, and the compile time for ``compile``. Compare runs with
``--benchmark-autosave`` / ``--benchmark-compare``.
"""

from __future__ import annotations

from conftest import row_op_cases


@row_op_cases("logsumexp", "logsumexp_masked", "thermo_stats")
def test_partition_family(op_benchmark, case, shape, dtype, mode):
    op_benchmark(*case, shape, dtype, mode)

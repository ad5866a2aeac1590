"""pytest-benchmark suite for the partition functions (logsumexp, with and without a broadcast
padding mask, and thermo_stats):
``pytest bench/ --benchmark-only``.

Same engine and ``extra_info`` as bench_entropy.py (GB/s, copy GB/s and its percentage, max abs
error against float64, compile time), driven by the registry in ``thermokern.benchmark``.
"""

from __future__ import annotations

import pytest
from bench_entropy import DEVICE, DTYPES, SHAPES, _id, run_case

from thermokern import benchmark as tb

FAMILY = ("logsumexp", "logsumexp_masked", "thermo_stats")
CASES = [(tb.OPS[op], p) for op in FAMILY for p in tb.OPS[op].providers(DEVICE)[0]]


@pytest.mark.parametrize("mode", tb.MODES)
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
@pytest.mark.parametrize("shape", SHAPES, ids=_id)
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_partition_family(benchmark, bench_device, bench_rounds, copy_gbps, case, shape, dtype, mode):
    run_case(benchmark, bench_device, bench_rounds, copy_gbps, case, shape, dtype, mode)

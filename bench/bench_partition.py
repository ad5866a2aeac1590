"""pytest-benchmark suite for the partition functions: logsumexp (with and without a padding
mask) and thermo_stats. Cases, shapes and ``extra_info``: conftest.py."""

from __future__ import annotations

from conftest import row_op_cases


@row_op_cases("logsumexp", "logsumexp_masked", "thermo_stats")
def test_partition_family(op_benchmark, case, shape, dtype, mode):
    op_benchmark(*case, shape, dtype, mode)

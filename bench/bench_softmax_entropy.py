"""pytest-benchmark suite for softmax_entropy. Cases, shapes and ``extra_info``: conftest.py."""

from __future__ import annotations

from conftest import row_op_cases


@row_op_cases("softmax_entropy")
def test_softmax_entropy(op_benchmark, case, shape, dtype, mode):
    op_benchmark(*case, shape, dtype, mode)

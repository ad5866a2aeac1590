"""pytest-benchmark suite for entropy_regularized_cross_entropy. Cases, shapes and
``extra_info``: conftest.py."""

from __future__ import annotations

from conftest import row_op_cases


@row_op_cases("entropy_regularized_cross_entropy")
def test_cross_entropy(op_benchmark, case, shape, dtype, mode):
    op_benchmark(*case, shape, dtype, mode)

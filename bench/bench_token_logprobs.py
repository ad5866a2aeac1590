"""pytest-benchmark suite for token_logprobs. Cases, shapes and ``extra_info``: conftest.py."""

from __future__ import annotations

from conftest import row_op_cases


@row_op_cases("token_logprobs")
def test_token_logprobs(op_benchmark, case, shape, dtype, mode):
    op_benchmark(*case, shape, dtype, mode)

"""pytest-benchmark suite for the language-model heads from hidden states:
linear_cross_entropy (beta = 0, with the peers that compute it), its entropy-regularised form
and linear_token_logprobs. Cases, shapes and ``extra_info``: conftest.py."""

from __future__ import annotations

from conftest import linear_op_cases


@linear_op_cases("linear_cross_entropy", "linear_entropy_regularized_cross_entropy", "linear_token_logprobs")
def test_linear_heads(op_benchmark, case, shape, dtype, mode):
    op_benchmark(*case, shape, dtype, mode)

"""pytest-benchmark suite for the partition functions (logsumexp, with and without a broadcast
padding mask, and thermo_stats):
``pytest bench/ --benchmark-only``.

Same ``extra_info`` as bench_softmax_entropy.py (GB/s, copy GB/s and its percentage, max abs
error against float64, compile time), driven by the registry in ``thermokern.bench``.
"""

from __future__ import annotations

import os

import pytest
import torch

from thermokern import bench

FAMILY = ("logsumexp", "logsumexp_masked", "thermo_stats")
DEVICE = os.environ.get("THERMOKERN_BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
CASES = [(bench.OPS[op], p) for op in FAMILY for p in bench.OPS[op].providers(DEVICE)[0]]
if DEVICE.startswith("cuda"):
    SHAPES = [(4096, 32000), (1024, 131072)]
else:
    SHAPES = [(256, 4096), (32, 32000)]
DTYPES = [torch.float32, torch.bfloat16]


@pytest.mark.parametrize("mode", bench.MODES)
@pytest.mark.parametrize("dtype", DTYPES, ids=bench.label)
@pytest.mark.parametrize("shape", SHAPES, ids=bench.label)
@pytest.mark.parametrize("case", CASES, ids=bench.label)
def test_partition_family(op_benchmark, case, shape, dtype, mode):
    op_benchmark(*case, shape, dtype, mode)

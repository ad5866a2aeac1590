"""pytest-benchmark suite for entropy_regularized_cross_entropy: ``pytest bench/ --benchmark-only``.

Parametrised by provider x shape x dtype x mode from the registry in ``thermokern.bench`` (the
engine behind ``thermokern bench``); shapes are small so that the CPU run takes a couple of
minutes. Each benchmark stores in ``benchmark.extra_info`` (the ``op_benchmark`` fixture of
conftest.py): the effective bandwidth (minimal bytes / median time), the copy bandwidth of the
same byte count and the percentage of it, the max abs error against float64, and the compile
time for ``compile``. Compare runs with ``--benchmark-autosave`` / ``--benchmark-compare``.
"""

from __future__ import annotations

import os

import pytest
import torch

from thermokern import bench

SPEC = bench.OPS["entropy_regularized_cross_entropy"]
DEVICE = os.environ.get("THERMOKERN_BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
PROVIDERS = SPEC.providers(DEVICE)[0]
if DEVICE.startswith("cuda"):
    SHAPES = [(4096, 32000), (1024, 131072)]
else:
    SHAPES = [(256, 4096), (32, 32000)]
DTYPES = [torch.float32, torch.bfloat16]


@pytest.mark.parametrize("mode", bench.MODES)
@pytest.mark.parametrize("dtype", DTYPES, ids=bench.label)
@pytest.mark.parametrize("shape", SHAPES, ids=bench.label)
@pytest.mark.parametrize("provider", PROVIDERS, ids=bench.label)
def test_cross_entropy(op_benchmark, provider, shape, dtype, mode):
    op_benchmark(SPEC, provider, shape, dtype, mode)

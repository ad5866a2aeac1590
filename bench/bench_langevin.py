"""pytest-benchmark suite for langevin_step: ``pytest bench/bench_langevin.py --benchmark-only``.

Parametrised by provider x shape x dtype from the registry in ``thermokern.bench`` (the
engine behind ``thermokern bench``): thermokern's backends out of place (``cpu``) and in place
(``cpu_``), the eager three-op update ``x.add_(-eta * g); x.add_(sigma * randn_like(x));
x.clamp_(-1, 1)`` and its ``torch.compile``. In-place providers get a fresh copy of x before
every round (untimed). ``benchmark.extra_info`` holds the effective bandwidth (reading x and
grad, writing the result), the copy bandwidth of the same byte count, the max abs error
against float64 (thermokern providers; the baselines draw different noise) and the compile
time for ``compile``.
"""

from __future__ import annotations

import os

import pytest
import torch

from thermokern import bench

SPEC = bench.OPS["langevin_step"]
DEVICE = os.environ.get("THERMOKERN_BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
PROVIDERS = SPEC.providers(DEVICE)[0]
if DEVICE.startswith("cuda"):
    SHAPES = [(16384, 4096), (256, 3, 32, 32)]  # 64M elements; a CIFAR-sized EBM batch
    DTYPES = [torch.float32, torch.bfloat16]
else:
    SHAPES = [(1024, 1024), (64, 3, 32, 32)]
    DTYPES = [torch.float32]


@pytest.mark.parametrize("dtype", DTYPES, ids=bench.label)
@pytest.mark.parametrize("shape", SHAPES, ids=bench.label)
@pytest.mark.parametrize("provider", PROVIDERS, ids=bench.label)
def test_langevin_step(op_benchmark, provider, shape, dtype):
    op_benchmark(SPEC, provider, shape, dtype, "fwd", max_err=1e-2)

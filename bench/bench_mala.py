"""pytest-benchmark suite for mala_accept: ``pytest bench/bench_mala.py --benchmark-only``.

The fused accept/reject of a MALA step against the same step in PyTorch ops (``eager``) and
its ``torch.compile``, at the shapes of ``thermokern bench`` (the spec in
``thermokern.bench.specs.mala_accept``). ``benchmark.extra_info``: conftest.py.
"""

from __future__ import annotations

import os

import pytest
import torch

from thermokern import bench

SPEC = bench.OPS["mala_accept"]
DEVICE = os.environ.get("THERMOKERN_BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("shape", SPEC.default_shapes(DEVICE, False), ids=bench.label)
@pytest.mark.parametrize("provider", SPEC.providers(DEVICE)[0], ids=bench.label)
def test_mala_accept(op_benchmark, provider, shape):
    op_benchmark(SPEC, provider, shape, torch.float32, "fwd", max_err=1e-5)

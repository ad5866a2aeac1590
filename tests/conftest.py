"""Test setup: Triton's interpreter on (before triton is imported), seeds, poisoned outputs."""

from __future__ import annotations

import os

import torch  # does not import triton

# Triton kernels run on CPU tensors only through the interpreter, which must be chosen
# before triton is imported anywhere. Without a GPU it is the only way to test them, so it is
# on by default there; with a GPU the real kernels run (TRITON_INTERPRET=1 still forces it).
if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

import hashlib

import pytest
from hypothesis import settings

import thermokern
from thermokern import _C

HAS_GPU = torch.cuda.is_available()

# CI explores the same hypothesis examples every run (a red CI then means a real change);
# local runs explore new ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


def pytest_configure(config):
    # Every op output starts as NaN, so an element that a kernel forgets to write fails.
    _C._set_poison_outputs(True)


@pytest.fixture(autouse=True)
def _gpu_launch_sizes():
    """THERMOKERN_TEST_GPU_SIZES=1: every test runs the Triton kernels at the launch sizes of a
    GPU (through the interpreter, _util.gpu_launch_sizes), e.g. ``pytest tests -k triton``
    (about 3.5 minutes here); CI runs the contract and fuzz tests at those sizes only."""
    if os.environ.get("THERMOKERN_TEST_GPU_SIZES", "0") in ("", "0"):
        yield
        return
    from _util import gpu_launch_sizes

    with gpu_launch_sizes():
        yield


@pytest.fixture(autouse=True)
def _seed(request):
    """A fresh but reproducible seed per test (derived from its id)."""
    seed = int(hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:8], 16)
    torch.manual_seed(seed)
    yield


def cpu_backends() -> list[str]:
    """Backends that can run on CPU tensors here (triton through the interpreter)."""
    info = thermokern.available_backends()
    return [b for b in ("cpu", "triton", "reference") if info[b].available and "cpu" in info[b].devices]


def gpu_backends() -> list[str]:
    info = thermokern.available_backends()
    return [b for b in ("cuda", "triton") if info[b].available and "cuda" in info[b].devices]


def cpu_isas() -> list[str]:
    """Every CPU kernel ISA this machine can run, narrowest first."""
    order = ["default", "avx2", "avx512"]
    return order[: order.index(_C.cpu_best_isa()) + 1]


@pytest.fixture(params=cpu_isas())
def cpu_isa(request):
    """Run a test once per CPU kernel variant (default, avx2, avx512 as supported)."""
    _C._set_cpu_isa(request.param)
    yield request.param
    _C._set_cpu_isa("")

"""pytest-benchmark setup for ``pytest bench/ --benchmark-only``.

Unlike tests/conftest.py this does NOT switch the Triton interpreter on: benchmarks measure
the real paths (and ``thermokern.benchmark`` skips Triton on CPU anyway).

Options:
  --bench-device cpu|cuda   default: cuda when a GPU is visible, else cpu
                            (or the THERMOKERN_BENCH_DEVICE environment variable)
  --bench-rounds N          timed rounds per benchmark (default: 10 on CPU, 50 on CUDA)
  --bench-threads N         torch.set_num_threads(N) (default: torch's own choice); on a busy
                            machine 1 thread avoids waiting for a descheduled worker thread
"""

from __future__ import annotations

import os

import pytest
import torch


def _default_device() -> str:
    return os.environ.get("THERMOKERN_BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")


def pytest_addoption(parser):
    group = parser.getgroup("thermokern-bench")
    group.addoption("--bench-device", default=None, help="cpu or cuda (default: cuda if available)")
    group.addoption("--bench-rounds", type=int, default=None, help="timed rounds per benchmark")
    group.addoption("--bench-threads", type=int, default=None, help="torch.set_num_threads for the run")


def pytest_configure(config):
    # bench_entropy.py builds its parameters at import (collection) time from the device.
    device = config.getoption("--bench-device", default=None)
    if device:
        os.environ["THERMOKERN_BENCH_DEVICE"] = device
    threads = config.getoption("--bench-threads", default=None)
    if threads:
        torch.set_num_threads(threads)


def pytest_collect_file(file_path, parent):
    """Collect bench_*.py (pytest's default pattern is test_*.py); explicit paths are
    collected by pytest itself."""
    if (
        file_path.suffix == ".py"
        and file_path.name.startswith("bench_")
        and not parent.session.isinitpath(file_path)
    ):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_report_header(config):
    import thermokern
    from thermokern import benchmark

    device = _default_device()
    provs, notes = benchmark.OPS["softmax_entropy"].providers(device)
    lines = [
        (
            f"thermokern {thermokern.__version__} bench: device={device}, torch {torch.__version__}, "
            f"threads={torch.get_num_threads()}, TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '')!r}"
        ),
        "providers: " + ", ".join(p.name for p in provs),
    ]
    lines += [f"note: {n}" for n in notes]
    return lines


@pytest.fixture(scope="session")
def bench_device() -> str:
    device = _default_device()
    if device.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("--bench-device cuda but no GPU is visible")
    return device


@pytest.fixture(scope="session")
def bench_rounds(request, bench_device) -> int:
    rounds = request.config.getoption("--bench-rounds")
    return rounds if rounds else (50 if bench_device.startswith("cuda") else 10)


@pytest.fixture(scope="session")
def copy_gbps(bench_device):
    """``copy_gbps(nbytes) -> GB/s`` of ``dst.copy_(src)`` (2 * nbytes / median time), cached;
    buffers rotate as in ``thermokern.benchmark`` so that small sizes are not timed in cache."""
    from thermokern import benchmark

    cache: dict[int, float] = {}

    def measure(nbytes: int) -> float:
        if nbytes not in cache:
            cache[nbytes] = benchmark.measure_copy(nbytes, bench_device, quick=True)["gbps"]
        return cache[nbytes]

    return measure

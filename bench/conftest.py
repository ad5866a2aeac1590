"""pytest-benchmark setup for ``pytest bench/ --benchmark-only``.

Unlike tests/conftest.py this does NOT switch the Triton interpreter on: benchmarks measure
the real paths (and ``thermokern.bench`` skips Triton on CPU anyway).

Options:
  --bench-device cpu|cuda   default: cuda when a GPU is visible, else cpu
                            (or the THERMOKERN_BENCH_DEVICE environment variable)
  --bench-rounds N          timed rounds per benchmark (default: 10 on CPU, 50 on CUDA)
  --bench-threads N         torch.set_num_threads(N) (default: torch's own choice); on a busy
                            machine 1 thread avoids waiting for a descheduled worker thread

Fixtures: ``bench_device``, ``bench_rounds``, ``copy_gbps`` and ``op_benchmark``, which times
one (op, provider, shape, dtype, mode) case of the ``thermokern.bench`` registry and stores in
``benchmark.extra_info`` the effective bandwidth (minimal bytes / median time), the copy
bandwidth of the same byte count and the percentage of it, the max abs error against float64,
and the compile time for ``compile``. The row-reduction suites (bench_softmax_entropy.py,
bench_cross_entropy.py, bench_token_logprobs.py, bench_partition.py) take their parameters from :func:`row_op_cases`,
the language-model heads (bench_linear.py) from :func:`linear_op_cases`: (op, provider) x
shape x dtype x mode, shapes small enough for a CPU run of a few minutes.
Compare runs with ``--benchmark-autosave`` / ``--benchmark-compare``.
"""

from __future__ import annotations

import os
import time

import pytest
import torch

from thermokern import bench


def _default_device() -> str:
    return os.environ.get("THERMOKERN_BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")


ROW_SHAPES = {"cuda": [(4096, 32000), (1024, 131072)], "cpu": [(256, 4096), (32, 32000)]}
ROW_DTYPES = [torch.float32, torch.bfloat16]
# (tokens, hidden, vocab): a Llama-3 8B head and a smaller one on a GPU; a small head on a CPU
LINEAR_SHAPES = {"cuda": [(8192, 4096, 128256), (4096, 2048, 32000)], "cpu": [(256, 512, 32000)]}


def row_op_cases(*ops: str):
    """The parametrisation of a row-reduction suite: (op spec, provider) cases of ``ops`` on
    the benchmark device x its shapes x dtypes x modes (read at collection time, after
    pytest_configure has set the device)."""
    return op_cases(ops, ROW_SHAPES, ROW_DTYPES)


def linear_op_cases(*ops: str):
    """:func:`row_op_cases` for the language-model heads: (tokens, hidden, vocab) shapes."""
    return op_cases(ops, LINEAR_SHAPES, ROW_DTYPES)


def op_cases(ops, shapes: dict, dtypes: list):
    """(op spec, provider) cases of ``ops`` on the benchmark device x ``shapes[device type]`` x
    ``dtypes`` x modes (those of each op's spec)."""
    device = _default_device()
    cases = [(bench.OPS[op], p) for op in ops for p in bench.OPS[op].providers(device)[0]]
    marks = (
        pytest.mark.parametrize("mode", bench.MODES),
        pytest.mark.parametrize("dtype", dtypes, ids=bench.label),
        pytest.mark.parametrize(
            "shape", shapes["cuda" if device.startswith("cuda") else "cpu"], ids=bench.label
        ),
        pytest.mark.parametrize("case", cases, ids=bench.label),
    )

    def parametrize(fn):
        for mark in marks:
            fn = mark(fn)
        return fn

    return parametrize


def pytest_addoption(parser):
    group = parser.getgroup("thermokern-bench")
    group.addoption("--bench-device", default=None, help="cpu or cuda (default: cuda if available)")
    group.addoption("--bench-rounds", type=int, default=None, help="timed rounds per benchmark")
    group.addoption("--bench-threads", type=int, default=None, help="torch.set_num_threads for the run")


def pytest_configure(config):
    # the bench_*.py suites build their parameters at import (collection) time from the device.
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

    device = _default_device()
    provs, notes = bench.OPS["softmax_entropy"].providers(device)
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
    buffers rotate as in ``thermokern bench`` so that small sizes are not timed in cache."""
    cache: dict[int, float] = {}

    def measure(nbytes: int) -> float:
        if nbytes not in cache:
            cache[nbytes] = bench.measure_copy(nbytes, bench_device, quick=True)["gbps"]
        return cache[nbytes]

    return measure


@pytest.fixture
def op_benchmark(benchmark, bench_device, bench_rounds, copy_gbps):
    """``op_benchmark(spec, provider, shape, dtype, mode, max_err=None) -> extra_info``.

    Times one case with pytest-benchmark and fills ``benchmark.extra_info``: the case, the
    number of rotated input copies, ``compile_s`` (first call of a compiled provider, outside
    the timed rounds), ``max_abs_err`` against float64 (exact providers of ops with a
    reference), and the effective bandwidth (minimal bytes / median time) next to the copy
    bandwidth of the same byte count. A NaN error, or one above ``max_err``, fails the test
    before timing. In-place providers get a fresh copy of the input before every round
    (untimed); the op's other differentiable tensors (``spec.leaves``, a weight) have their
    gradients cleared with the input's.
    """

    def run_case(spec, provider, shape, dtype, mode, max_err=None):
        gen = torch.Generator(device=bench_device).manual_seed(0)
        # several input copies for small shapes, rotated so that rounds do not run from cache
        k = bench.n_copies(spec.input_bytes(shape, dtype), bench_device)
        xs = [spec.make_input(shape, dtype, bench_device, gen) for _ in range(k)]
        x = xs[0]
        grad = spec.make_grad(x, gen)
        leaves = spec.leaves(x) if spec.leaves is not None else ()
        calls = bench.make_calls(provider, mode, xs, grad, leaves)
        prepare, call = calls.prepare, calls.call
        cuda = x.is_cuda

        def sync():
            if cuda:
                torch.cuda.synchronize()

        extra = benchmark.extra_info
        extra.update(
            op=spec.name,
            provider=provider.name,
            shape=bench.label(shape),
            dtype=bench.label(dtype),
            mode=mode,
            device=bench_device,
            copies=k,
        )
        if provider.compiled:  # compile outside the timed rounds
            prepare(0)
            t0 = time.perf_counter()
            call(0)
            sync()
            extra["compile_s"] = round(time.perf_counter() - t0, 3)

        if provider.exact and spec.has_reference:
            prepare(0)
            value = bench.result_of_call(mode, calls, leaves)
            err = bench.max_abs_err(value, spec.reference(x, grad, mode))
            extra["max_abs_err"] = err
            del value
            assert err == err, f"{provider.name} gave NaN on finite inputs"  # noqa: PLR0124
            if max_err is not None:
                assert err < max_err, f"{provider.name}: max abs error {err} against float64"

        counter = iter(range(1 << 62))
        rounds: list[int] = []

        def setup():
            i = next(counter)
            rounds.append(i)
            prepare(i)

        def target():
            call(rounds[-1])
            sync()

        benchmark.pedantic(target, setup=setup, rounds=bench_rounds, warmup_rounds=1, iterations=1)
        prepare(0)

        stats = getattr(benchmark, "stats", None)
        median = getattr(getattr(stats, "stats", None), "median", None)
        if median:
            gbps = spec.min_bytes(shape, dtype, mode) / median / 1e9
            copy = copy_gbps(spec.input_bytes(shape, dtype))
            extra.update(gbps=round(gbps, 2), copy_gbps=round(copy, 2), pct_copy=round(100 * gbps / copy, 1))
        return extra

    return run_case

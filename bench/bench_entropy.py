"""pytest-benchmark suite for the entropy family (softmax_entropy and
entropy_regularized_cross_entropy): ``pytest bench/ --benchmark-only``.

Parametrised by provider x shape x dtype x mode from the registry in
``thermokern.benchmark`` (the engine behind ``thermokern bench``); shapes are small so that the
CPU run takes a couple of minutes. Each benchmark stores in ``benchmark.extra_info``: the
effective bandwidth (minimal bytes / median time), the copy bandwidth of the same byte count
and the percentage of it, the max abs error against float64, and the compile time for
``compile``. Compare runs with ``--benchmark-autosave`` / ``--benchmark-compare``.
"""

from __future__ import annotations

import os
import time

import pytest
import torch

from thermokern import benchmark as tb

FAMILY = ("softmax_entropy", "entropy_regularized_cross_entropy")
DEVICE = os.environ.get("THERMOKERN_BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
CASES = [(tb.OPS[op], p) for op in FAMILY for p in tb.OPS[op].providers(DEVICE)[0]]
if DEVICE.startswith("cuda"):
    SHAPES = [(4096, 32000), (1024, 131072)]
else:
    SHAPES = [(256, 4096), (32, 32000)]
DTYPES = [torch.float32, torch.bfloat16]


def _id(value) -> str:
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], tb.Provider):
        return f"{value[0].name}-{value[1].name}"
    if isinstance(value, tuple):
        return "x".join(map(str, value))
    return str(value)


@pytest.mark.parametrize("mode", tb.MODES)
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
@pytest.mark.parametrize("shape", SHAPES, ids=_id)
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_entropy_family(benchmark, bench_device, bench_rounds, copy_gbps, case, shape, dtype, mode):
    run_case(benchmark, bench_device, bench_rounds, copy_gbps, case, shape, dtype, mode)


def run_case(benchmark, bench_device, bench_rounds, copy_gbps, case, shape, dtype, mode) -> None:
    """Time one (op, provider) case and fill ``benchmark.extra_info`` (shared by bench_*.py)."""
    spec, provider = case
    gen = torch.Generator(device=bench_device).manual_seed(0)
    # several input copies for small shapes, rotated so that rounds do not run from cache
    k = tb.n_copies(spec.input_bytes(shape, dtype), bench_device)
    xs = [spec.make_input(shape, dtype, bench_device, gen) for _ in range(k)]
    x = xs[0]
    grad = spec.make_grad(x, gen)
    prepare, call, inputs = tb.make_calls(provider, mode, xs, grad)
    cuda = x.is_cuda

    def sync():
        if cuda:
            torch.cuda.synchronize()

    extra = benchmark.extra_info
    extra.update(
        op=spec.name,
        provider=provider.name,
        shape=_id(shape),
        dtype=_id(dtype),
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

    prepare(0)
    value = tb.result_of_call(mode, call, inputs)
    err = tb.max_abs_err(value, spec.reference(x, grad, mode))
    extra["max_abs_err"] = err
    del value
    assert err == err, f"{provider.name} gave NaN on finite logits"  # noqa: PLR0124

    counter = iter(range(1 << 62))

    def target():
        call(next(counter))
        sync()

    benchmark.pedantic(target, setup=lambda: prepare(0), rounds=bench_rounds, warmup_rounds=1, iterations=1)
    prepare(0)

    stats = getattr(benchmark, "stats", None)
    median = getattr(getattr(stats, "stats", None), "median", None)
    if median:
        min_bytes = spec.min_bytes(shape, dtype, mode)
        gbps = min_bytes / median / 1e9
        copy = copy_gbps(spec.input_bytes(shape, dtype))
        extra.update(gbps=round(gbps, 2), copy_gbps=round(copy, 2), pct_copy=round(100 * gbps / copy, 1))

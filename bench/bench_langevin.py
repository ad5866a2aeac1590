"""pytest-benchmark suite for langevin_step: ``pytest bench/bench_langevin.py --benchmark-only``.

Parametrised by provider x shape x dtype from the registry in ``thermokern.benchmark`` (the
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
import time

import pytest
import torch

from thermokern import benchmark as tb

SPEC = tb.OPS["langevin_step"]
DEVICE = os.environ.get("THERMOKERN_BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
PROVIDERS = SPEC.providers(DEVICE)[0]
if DEVICE.startswith("cuda"):
    SHAPES = [(16384, 4096), (256, 3, 32, 32)]  # 64M elements; a CIFAR-sized EBM batch
    DTYPES = [torch.float32, torch.bfloat16]
else:
    SHAPES = [(1024, 1024), (64, 3, 32, 32)]
    DTYPES = [torch.float32]


def _id(value) -> str:
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    if isinstance(value, tb.Provider):
        return value.name
    if isinstance(value, tuple):
        return "x".join(map(str, value))
    return str(value)


@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
@pytest.mark.parametrize("shape", SHAPES, ids=_id)
@pytest.mark.parametrize("provider", PROVIDERS, ids=_id)
def test_langevin_step(benchmark, bench_device, bench_rounds, copy_gbps, provider, shape, dtype):
    gen = torch.Generator(device=bench_device).manual_seed(0)
    k = tb.n_copies(SPEC.input_bytes(shape, dtype), bench_device)
    xs = [SPEC.make_input(shape, dtype, bench_device, gen) for _ in range(k)]
    x = xs[0]
    prepare, call, inputs = tb.make_calls(provider, "fwd", xs, None)
    cuda = x.is_cuda

    def sync():
        if cuda:
            torch.cuda.synchronize()

    extra = benchmark.extra_info
    extra.update(
        op=SPEC.name,
        provider=provider.name,
        shape=_id(shape),
        dtype=_id(dtype),
        mode="fwd",
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
    value = tb.result_of_call("fwd", call, inputs)
    if provider.exact:
        err = tb.max_abs_err(value, SPEC.reference(x, None, "fwd"))
        extra["max_abs_err"] = err
        assert err < 1e-2, f"{provider.name}: max abs error {err} against float64"
    del value

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

    stats = getattr(benchmark, "stats", None)
    median = getattr(getattr(stats, "stats", None), "median", None)
    if median:
        gbps = SPEC.min_bytes(shape, dtype, "fwd") / median / 1e9
        copy = copy_gbps(SPEC.input_bytes(shape, dtype))
        extra.update(gbps=round(gbps, 2), copy_gbps=round(copy, 2), pct_copy=round(100 * gbps / copy, 1))

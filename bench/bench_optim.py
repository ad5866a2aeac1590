"""pytest-benchmark suite for thermokern.optim.SGLD: ``pytest bench/bench_optim.py --benchmark-only``.

One SGLD step over the 50 parameter tensors of a 25-layer MLP (25 x (weight, bias)), gradients
already in ``.grad``, against PyTorch baselines doing the same update
``p <- p - lr g + sqrt(2 lr T) xi``:

  * ``sgld``      thermokern.optim.SGLD.step(): one fused launch for all 50 tensors;
  * ``loop``      the naive per-parameter loop ``p.add_(-lr * g); p.add_(sigma * randn_like(p))``;
  * ``foreach``   ``torch._foreach_add_`` for the gradient and for a list of ``randn_like``
                  noise tensors (PyTorch's multi-tensor path; the noise still goes to memory);
  * ``compile``   the naive loop under ``torch.compile`` (compiled before the timed rounds).

``benchmark.extra_info`` holds the effective bandwidth from the minimal bytes (read p and g,
write p: 3 x numel x itemsize) and, for the baselines, nothing else; the ratio to ``sgld`` is
printed by ``python bench/bench_optim.py``, which times every provider in one process.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time

import pytest
import torch

import thermokern

DEVICE = os.environ.get("THERMOKERN_BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
LAYERS = 25  # 50 tensors
WIDTHS = [256, 1024]  # 1.6M and 26M parameters
DTYPES = [torch.float32, torch.bfloat16]
PROVIDERS = ["sgld", "loop", "foreach", "compile"]
LR, TEMPERATURE = 1e-4, 1.0


def make_params(width: int, dtype: torch.dtype, device: str) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(0)
    params = []
    for _ in range(LAYERS):
        w = torch.randn(width, width, generator=gen) / math.sqrt(width)
        b = torch.randn(width, generator=gen) * 0.1
        for t in (w, b):
            p = torch.nn.Parameter(t.to(device=device, dtype=dtype))
            p.grad = torch.randn(t.shape, generator=gen).to(device=device, dtype=dtype)
            params.append(p)
    return params


def _naive_step(params: list[torch.Tensor], lr: float, sigma: float) -> None:
    for p in params:
        p.add_(-lr * p.grad)
        p.add_(sigma * torch.randn_like(p))


def make_step(provider: str, params: list[torch.nn.Parameter]):
    """A no-argument callable doing one step of ``provider`` on ``params``."""
    sigma = math.sqrt(2.0 * LR * TEMPERATURE)
    if provider == "sgld":
        opt = thermokern.optim.SGLD(params, lr=LR, temperature=TEMPERATURE, seed=0)
        return opt.step
    if provider == "loop":
        return torch.no_grad()(lambda: _naive_step(params, LR, sigma))
    if provider == "foreach":
        grads = [p.grad for p in params]

        @torch.no_grad()
        def foreach():
            torch._foreach_add_(params, grads, alpha=-LR)
            torch._foreach_add_(params, [torch.randn_like(p) for p in params], alpha=sigma)

        return foreach
    if provider == "compile":
        compiled = torch.compile(_naive_step)
        return torch.no_grad()(lambda: compiled(params, LR, sigma))
    raise ValueError(provider)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def min_bytes(params) -> int:
    return sum(3 * p.numel() * p.element_size() for p in params)


def _id(v) -> str:
    return str(v).removeprefix("torch.") if isinstance(v, torch.dtype) else str(v)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
@pytest.mark.parametrize("width", WIDTHS, ids=lambda w: f"mlp{LAYERS}x{w}")
def test_sgld_step(benchmark, bench_rounds, provider, dtype, width):
    params = make_params(width, dtype, DEVICE)
    step = make_step(provider, params)
    t0 = time.perf_counter()
    step()  # warm-up (compiles for ``compile``)
    _sync(DEVICE)
    benchmark.extra_info.update(
        provider=provider,
        width=width,
        tensors=len(params),
        numel=sum(p.numel() for p in params),
        dtype=_id(dtype),
        device=DEVICE,
        first_call_s=round(time.perf_counter() - t0, 3),
    )

    def target():
        step()
        _sync(DEVICE)

    benchmark.pedantic(target, rounds=bench_rounds, warmup_rounds=1, iterations=1)
    median = getattr(getattr(getattr(benchmark, "stats", None), "stats", None), "median", None)
    if median:
        benchmark.extra_info["gbps"] = round(min_bytes(params) / median / 1e9, 2)


def main(rounds: int = 15) -> None:
    """Time every provider in this process and print medians and ratios to ``sgld``.

    The providers take turns round by round, so that load from other processes on a shared
    machine falls on all of them alike.
    """
    print(f"device={DEVICE} torch {torch.__version__} threads={torch.get_num_threads()}")
    for width in WIDTHS:
        for dtype in DTYPES:
            steps, nbytes = {}, 0
            for provider in PROVIDERS:
                params = make_params(width, dtype, DEVICE)
                steps[provider] = make_step(provider, params)
                steps[provider]()  # warm-up (compiles for ``compile``)
                nbytes = min_bytes(params)
            _sync(DEVICE)
            times: dict[str, list[float]] = {p: [] for p in PROVIDERS}
            for _ in range(rounds):
                for provider, step in steps.items():
                    t0 = time.perf_counter()
                    step()
                    _sync(DEVICE)
                    times[provider].append(time.perf_counter() - t0)
            medians = {p: statistics.median(t) for p, t in times.items()}
            line = ", ".join(f"{p} {1e3 * t:.2f} ms ({t / medians['sgld']:.1f}x)" for p, t in medians.items())
            gbps = nbytes / medians["sgld"] / 1e9
            print(f"mlp{LAYERS}x{width} {_id(dtype)}: {line}; sgld {gbps:.1f} GB/s", flush=True)


if __name__ == "__main__":
    # python bench/bench_optim.py [rounds] [threads]
    if len(sys.argv) > 2:
        torch.set_num_threads(int(sys.argv[2]))
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 15)

"""The language-model head from hidden states: fwd+bwd time and peak extra memory of
``thermokern.linear_cross_entropy`` against the materialised eager path and
``F.linear_cross_entropy``, in one run.

    python bench/linear_heads.py                       # CPU, float32, 2048 x 1024 x 32000
    python bench/linear_heads.py --device cuda --dtype bfloat16 --shape 8192x4096x128256

Providers (each computes the loss CE - 0.1 H over tokens x vocabulary and its gradients
w.r.t. hidden and weight):
  thermokern      linear_cross_entropy(hidden, weight, target, entropy_weight=0.1)
  eager           logits = hidden @ weight.T; F.cross_entropy - 0.1 * (-(p * log p).sum(-1)).mean()
  eager_ce        the same without the entropy term (F.cross_entropy of F.linear)
  torch_linear_ce F.linear_cross_entropy (no entropy term), when this torch has it
  matmuls         the three bare matmuls of a forward + backward (logits, grad hidden, grad weight)
Peak memory: beyond the inputs and the gradients (thermokern.bench.PeakMemory: the CUDA
allocator, or the CPU resident set). Medians of --reps runs after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

import thermokern
from thermokern.bench import PeakMemory, parse_dtype

BETA = 0.1


def _eager(h, w, t, entropy=True):
    logits = h @ w.t()
    loss = F.cross_entropy(logits.float(), t)
    if entropy:
        logp = torch.log_softmax(logits.float(), -1)
        loss = loss - BETA * (-(logp.exp() * logp).sum(-1)).mean()
    return loss


def _matmuls(h, w, t):
    logits = h @ w.t()
    gh = logits @ w
    gw = logits.t() @ h
    return gh, gw


PROVIDERS = {
    "thermokern": lambda h, w, t: thermokern.linear_cross_entropy(h, w, t, entropy_weight=BETA),
    "eager": _eager,
    "eager_ce": lambda h, w, t: _eager(h, w, t, entropy=False),
    "matmuls": None,
}
if hasattr(F, "linear_cross_entropy"):
    PROVIDERS["torch_linear_ce"] = lambda h, w, t: F.linear_cross_entropy(h, w, t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--shape", default="2048x1024x32000", help="tokens x hidden x vocabulary")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    n, d, v = (int(s) for s in args.shape.split("x"))
    dtype = parse_dtype(args.dtype)
    gen = torch.Generator().manual_seed(0)
    h = (torch.randn(n, d, generator=gen)).to(dtype).to(args.device).requires_grad_(True)
    w = (torch.randn(v, d, generator=gen) / d**0.5 * 2).to(dtype).to(args.device).requires_grad_(True)
    t = torch.randint(0, v, (n,), generator=gen).to(args.device)
    logits_mib = n * v * 4 / 2**20
    rows = []
    for name, fn in PROVIDERS.items():

        def step(fn=fn):
            if fn is None:
                with torch.no_grad():
                    _matmuls(h, w, t)
                return
            h.grad = w.grad = None
            fn(h, w, t).backward()

        step()  # warm-up (and the gradients exist before the memory probe)
        probe = PeakMemory(args.device)
        times = []
        peak = None
        for i in range(args.reps):
            if i == 0:
                probe.start()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            step()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            if i == 0:
                peak = probe.stop()
        rows.append({"provider": name, "median_s": statistics.median(times), "peak_extra_mib": peak})
    base = {r["provider"]: r["median_s"] for r in rows}
    print(
        f"{args.device} {args.dtype} tokens {n} hidden {d} vocab {v}; (N, V) fp32 logits = {logits_mib:.0f} MiB"
    )
    print(f"{'provider':16s} {'fwd+bwd s':>10s} {'vs thermokern':>14s} {'peak extra MiB':>15s}")
    for r in rows:
        ratio = r["median_s"] / base["thermokern"]
        peak = "n/a" if r["peak_extra_mib"] is None else f"{r['peak_extra_mib']:.0f}"
        print(f"{r['provider']:16s} {r['median_s']:10.3f} {ratio:13.2f}x {peak:>15s}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "device": args.device,
                    "dtype": args.dtype,
                    "shape": [n, d, v],
                    "rows": rows,
                    "logits_fp32_mib": logits_mib,
                    "torch": torch.__version__,
                    "memory_method": PeakMemory(args.device).method,
                },
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()

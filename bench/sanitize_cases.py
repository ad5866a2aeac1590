"""Small softmax_entropy and entropy_regularized_cross_entropy forward+backward cases (and
mala_accept cases) on the GPU, for compute-sanitizer.

    compute-sanitizer --tool memcheck  --error-exitcode 1 python bench/sanitize_cases.py
    compute-sanitizer --tool racecheck --error-exitcode 1 python bench/sanitize_cases.py \
        --dtypes float32,bfloat16

Covers class counts around the kernels' vector widths and block sizes (C = 1, 7, 33, 1000, 4096
and one long odd row), every float dtype, and three layouts: contiguous rows, rows whose start
is offset by one element (unaligned for vector loads), and rows with padding between them.
Results are checked against the float64 reference on the CPU (so that few extra GPU kernels
run under the sanitizer); exit status 1 on a mismatch, 2 when the backend cannot run here.
Set PYTORCH_NO_CUDA_MEMORY_CACHING=1 so that each tensor is its own allocation and memcheck
sees out-of-bounds accesses that would otherwise land inside the caching allocator's blocks.
"""

from __future__ import annotations

import argparse
import sys

import torch

import thermokern
from thermokern import reference

TOL = {  # (atol, rtol) of the output and the gradient against float64
    torch.float64: (1e-10, 1e-10),
    torch.float32: (2e-5, 2e-5),
    torch.float16: (2e-2, 1e-2),
    torch.bfloat16: (1e-1, 2e-2),
}
DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}


def _close(value: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> tuple[bool, float]:
    atol, rtol = TOL[dtype]
    v = value.detach().cpu().to(torch.float64)
    err = (v - ref).abs()
    ok = bool(torch.isfinite(v).all()) and bool((err <= atol + rtol * ref.abs()).all())
    return ok, float(err.max()) if err.numel() else 0.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="cuda", help="cuda (default) or triton")
    ap.add_argument("--dtypes", default="float32,float16,bfloat16,float64")
    ap.add_argument("--widths", default="1,7,33,1000,4096,65537", help="class counts C")
    ap.add_argument("--rows", type=int, default=5)
    ap.add_argument("--temperature", type=float, default=0.7)
    args = ap.parse_args(argv)

    if not torch.cuda.is_available():
        print("sanitize_cases: no GPU visible", file=sys.stderr)
        return 2
    info = thermokern.available_backends()[args.backend]
    if not info.available or "cuda" not in info.devices:
        print(
            f"sanitize_cases: backend {args.backend!r} cannot run on the GPU here: {info.reason}",
            file=sys.stderr,
        )
        return 2
    dtypes = [DTYPES[d.strip()] for d in args.dtypes.split(",") if d.strip()]
    widths = [int(w) for w in args.widths.split(",") if w.strip()]
    gen = torch.Generator(device="cpu").manual_seed(0)
    n, failures, cases = args.rows, 0, 0
    for dtype in dtypes:
        for c in widths:
            for layout in ("contiguous", "offset1", "padded-rows"):
                base_cpu = (torch.randn(n, c + 3, generator=gen) * 3).to(dtype)
                base_cpu[0, 2] = -float(
                    "inf"
                )  # one masked logit (never a whole row: C=1 rows use col 0 or 1)
                base = base_cpu.cuda()
                if layout == "contiguous":
                    x = base[:, :c].contiguous()
                elif layout == "offset1":
                    x = base[:, 1 : c + 1]  # rows start one element in: unaligned vector loads
                else:
                    x = base[:, :c]  # row stride c + 3
                x = x.detach().requires_grad_(True)
                g = torch.randn(n, generator=gen).to(dtype)
                # Targets: one ignored row, the rest spread over the classes (including C - 1).
                target = torch.arange(n) * 7 % c
                target[-1] = c - 1
                target[1 % n] = -100
                # Per-row temperatures for the cross-entropy (the entropy uses a scalar).
                temps = torch.rand(n, generator=gen) + args.temperature
                kw = {
                    "entropy_weight": 0.3,
                    "label_smoothing": 0.1,
                    "z_loss_weight": 1e-3,
                    "reduction": "none",
                }
                for op in ("softmax_entropy", "entropy_ce"):
                    x.grad = None
                    if op == "softmax_entropy":
                        out = thermokern.softmax_entropy(
                            x, -1, temperature=args.temperature, backend=args.backend
                        )
                    else:
                        out = thermokern.entropy_regularized_cross_entropy(
                            x, target.cuda(), temperature=temps.cuda(), backend=args.backend, **kw
                        )
                    out.backward(g.cuda().to(out.dtype))
                    torch.cuda.synchronize()

                    x64 = x.detach().cpu().to(torch.float64).requires_grad_(True)
                    if op == "softmax_entropy":
                        o64 = reference.softmax_entropy(x64, -1, temperature=args.temperature)
                    else:
                        o64 = reference.entropy_regularized_cross_entropy(
                            x64, target, temperature=temps.double(), **kw
                        )
                    o64.backward(g.to(torch.float64))
                    ok_o, err_o = _close(out, o64.detach(), dtype)
                    ok_g, err_g = _close(x.grad, x64.grad, dtype)
                    cases += 1
                    if not (ok_o and ok_g):
                        failures += 1
                        print(
                            f"MISMATCH {op} {args.backend} {str(dtype)[6:]} C={c} {layout}: "
                            f"max err output {err_o:.3g}, grad {err_g:.3g}",
                            file=sys.stderr,
                        )
    mala_cases, mala_failures = _mala_cases(args.backend, dtypes)
    cases, failures = cases + mala_cases, failures + mala_failures
    print(f"sanitize_cases: {cases} cases on backend {args.backend}, {failures} mismatches")
    return 1 if failures else 0


# ---- mala_accept (sampling branch) ------------------------------------------------------
def _mala_cases(backend: str, dtypes: list[torch.dtype]) -> tuple[int, int]:
    """mala_accept on chains of 1, 3, 33, 300 and 5000 elements (one to several strides of a
    CUDA block, shared-memory block reduction) against the float64 reference: the decisions
    and x_new must match exactly."""
    from thermokern.ops import mala

    gen = torch.Generator(device="cpu").manual_seed(1)
    cases = failures = 0
    for dtype in dtypes:
        for chains, d in ((7, 1), (5, 3), (9, 33), (6, 300), (3, 5000)):
            x, xp, g, gp = ((torch.randn(chains, d, generator=gen) * 0.3).to(dtype) for _ in range(4))
            e, ep = (torch.randn(chains, generator=gen).to(reference.acc_dtype(dtype)) for _ in range(2))
            kw = {"step_size": 0.05, "temperature": 0.9, "seed": 5, "offset": 11}
            cpu = (x, xp, g, gp, e, ep)
            got = mala.mala_accept(*(t.cuda() for t in cpu), backend=backend, **kw)
            torch.cuda.synchronize()
            want = mala.mala_accept(*cpu, backend="reference", **kw)
            cases += 1
            if not (torch.equal(got[1].cpu(), want[1]) and torch.equal(got[0].cpu(), want[0])):
                failures += 1
                print(f"MISMATCH mala_accept {backend} {str(dtype)[6:]} {chains}x{d}", file=sys.stderr)
    return cases, failures


if __name__ == "__main__":
    sys.exit(main())

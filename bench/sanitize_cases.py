"""Small forward+backward cases of every CUDA/Triton kernel on the GPU, for compute-sanitizer:
softmax_entropy, entropy_regularized_cross_entropy, the partition kernels (logsumexp with
weights and masks, thermo_stats) over rows and over a middle dimension, langevin_step and
mala_accept.

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
``--device cpu`` runs the same cases on CPU tensors (``--backend cpu``, or ``triton`` under
TRITON_INTERPRET=1): a rehearsal of the script itself on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import itertools
import math
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
    """Within the dtype's tolerance of the float64 reference, as tests/_util.assert_close
    compares: an infinite reference value must be matched exactly, and NaN matches only a NaN
    of the reference at the same place (a NaN anywhere else never passes)."""
    atol, rtol = TOL[dtype]
    v = value.detach().cpu().to(torch.float64)
    ref = ref.detach().cpu().to(torch.float64)
    finite = torch.isfinite(ref)
    err = (v - ref).abs()
    close = finite & (err <= atol + rtol * ref.abs())  # False where v is NaN
    same_inf = torch.isinf(ref) & (v == ref)
    both_nan = torch.isnan(ref) & torch.isnan(v)
    good = close | same_inf | both_nan
    # The report: the largest error among finite references, inf for a non-finite mismatch.
    worst = torch.where(finite, err, torch.zeros_like(err)).nan_to_num(nan=math.inf)
    worst = float(worst.max()) if worst.numel() else 0.0
    if not bool((good | finite).all()):  # a non-finite reference value not matched
        worst = math.inf
    return bool(good.all()), worst


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _partition_cases(args, dtypes, widths, gen) -> tuple[int, int]:
    """logsumexp (weighted, masked) and thermo_stats, forward and backward, rows and tiles;
    weight and mask full-size (the vectorised paths) or broadcast over dim 0 (stride 0: the
    strided paths)."""
    cases = failures = 0
    for dtype in dtypes:
        shapes = [((args.rows, c), 1) for c in widths] + [((3, 37, 5), 1), ((2, 9, 40), 1), ((1, 3000, 3), 1)]
        for (shape, dim), bcast in itertools.product(shapes, (False, True)):
            x_cpu = (torch.randn(shape, generator=gen) * 3).to(dtype)
            wm_shape = (1, *shape[1:]) if bcast else shape
            w_cpu = (torch.rand(wm_shape, generator=gen) * 2 - 0.5).to(dtype)
            m_cpu = torch.rand(wm_shape, generator=gen) > 0.2
            m_cpu.select(dim, 0).fill_(True)  # no fully masked output (-inf is checked in tests)
            x = x_cpu.to(args.device, copy=True).requires_grad_(True)  # never x_cpu itself
            w = w_cpu.to(args.device, copy=True).requires_grad_(True)
            out, _ = thermokern.logsumexp(
                x, dim, weight=w, mask=m_cpu.to(args.device), return_sign=True, backend=args.backend
            )
            st = thermokern.thermo_stats(x, dim, temperature=args.temperature, backend=args.backend)
            g = torch.randn(out.shape, generator=gen)
            total = (out * g.to(args.device).to(out.dtype)).sum() + sum(v.sum() for v in st)
            total.backward()
            _sync(args.device)
            x64 = x_cpu.to(torch.float64, copy=True).requires_grad_(True)
            w64 = w_cpu.to(torch.float64, copy=True).requires_grad_(True)
            o64, _ = reference.logsumexp(x64, dim, weight=w64, mask=m_cpu, return_sign=True)
            s64 = reference.thermo_stats(x64, dim, temperature=args.temperature)
            ((o64 * g.double()).sum() + sum(v.sum() for v in s64)).backward()
            checks = [(out, o64), (x.grad, x64.grad), (w.grad, w64.grad)]
            checks += list(zip(st, s64))
            ok = True
            worst = 0.0
            for got, want in checks:
                good, err = _close(got, want.detach(), dtype)
                ok, worst = ok and good, max(worst, err)
            cases += 1
            if not ok:
                failures += 1
                print(
                    f"MISMATCH partition {args.backend} {str(dtype)[6:]} shape={shape} "
                    f"broadcast={bcast}: max err {worst:.3g}",
                    file=sys.stderr,
                )
    return cases, failures


def _langevin_cases(backend: str, dtypes, gen, device: str = "cuda") -> tuple[int, int]:
    """langevin_step forward + backward and langevin_step_ on sizes around the counter (4
    elements) and vector widths, in three layouts: contiguous, starting one element in
    (unaligned vector loads) and strided (the op's contiguous copy)."""
    cases = failures = 0
    kw = {"step_size": 0.1, "grad_clip": 2.0, "clamp": (-1.5, 1.2), "seed": 5, "offset": 2**32 - 3}
    for dtype in dtypes:
        for n in (1, 3, 4, 5, 1001, 4099):
            views = {
                "contiguous": lambda t, n=n: t[:n],
                "offset1": lambda t, n=n: t[1 : n + 1],
                "strided": lambda t, n=n: t[: 2 * n : 2],
            }
            for layout, view in views.items():
                xb = torch.randn(2 * n + 1, generator=gen).to(dtype)
                gb = (torch.randn(2 * n + 1, generator=gen) * 3).to(dtype)
                up = torch.randn(n, generator=gen).to(dtype)
                x = view(xb.to(device)).detach().requires_grad_(True)
                g = view(gb.to(device)).detach().requires_grad_(True)
                out = thermokern.langevin_step(x, g, backend=backend, **kw)
                out.backward(up.to(device))
                y = x.detach().clone()
                thermokern.langevin_step_(y, g.detach(), backend=backend, **kw)
                _sync(device)

                x64 = view(xb).to(torch.float64).requires_grad_(True)
                g64 = view(gb).to(torch.float64).requires_grad_(True)
                ref = reference.langevin_step(x64, g64, **kw)
                ref.backward(up.double())
                checks = [
                    _close(out, ref.detach(), dtype),
                    _close(y, ref.detach(), dtype),
                    _close(x.grad, x64.grad, dtype),
                    _close(g.grad, g64.grad, dtype),
                ]
                cases += 1
                if not all(ok for ok, _ in checks):
                    failures += 1
                    print(
                        f"MISMATCH langevin_step {backend} {str(dtype)[6:]} n={n} {layout}: max errors "
                        + ", ".join(f"{e:.3g}" for _, e in checks),
                        file=sys.stderr,
                    )
    return cases, failures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="cuda", help="cuda (default) or triton")
    ap.add_argument("--dtypes", default="float32,float16,bfloat16,float64")
    ap.add_argument("--widths", default="1,7,33,1000,4096,65537", help="class counts C")
    ap.add_argument("--rows", type=int, default=5)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument(
        "--device",
        default="cuda",
        choices=("cuda", "cpu"),
        help="cuda (default); cpu rehearses the script itself with --backend cpu or triton "
        "(the interpreter: TRITON_INTERPRET=1)",
    )
    args = ap.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():
        print("sanitize_cases: no GPU visible", file=sys.stderr)
        return 2
    info = thermokern.available_backends()[args.backend]
    if not info.available or args.device not in info.devices:
        print(
            f"sanitize_cases: backend {args.backend!r} cannot run on {args.device} here: {info.reason}",
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
                base = base_cpu.to(args.device)
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
                for op in ("softmax_entropy", "cross_entropy"):
                    x.grad = None
                    if op == "softmax_entropy":
                        out = thermokern.softmax_entropy(
                            x, -1, temperature=args.temperature, backend=args.backend
                        )
                    else:
                        out = thermokern.entropy_regularized_cross_entropy(
                            x,
                            target.to(args.device),
                            temperature=temps.to(args.device),
                            backend=args.backend,
                            **kw,
                        )
                    out.backward(g.to(args.device).to(out.dtype))
                    _sync(args.device)

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
    c2, f2 = _partition_cases(args, dtypes, widths, gen)
    cases, failures = cases + c2, failures + f2
    lc, lf = _langevin_cases(args.backend, dtypes, gen, args.device)
    cases += lc
    failures += lf
    mala_cases, mala_failures = _mala_cases(args.backend, dtypes, args.device)
    cases, failures = cases + mala_cases, failures + mala_failures
    print(f"sanitize_cases: {cases} cases on backend {args.backend} ({args.device}), {failures} mismatches")
    return 1 if failures else 0


# ---- mala_accept (sampling branch) ------------------------------------------------------
def _mala_cases(backend: str, dtypes: list[torch.dtype], device: str = "cuda") -> tuple[int, int]:
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
            got = mala.mala_accept(*(t.to(device) for t in cpu), backend=backend, **kw)
            _sync(device)
            want = mala.mala_accept(*cpu, backend="reference", **kw)
            cases += 1
            if not (torch.equal(got[1].cpu(), want[1]) and torch.equal(got[0].cpu(), want[0])):
                failures += 1
                print(f"MISMATCH mala_accept {backend} {str(dtype)[6:]} {chains}x{d}", file=sys.stderr)
    return cases, failures


if __name__ == "__main__":
    sys.exit(main())

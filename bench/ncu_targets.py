"""Where the time goes in the ops with GPU targets: one launch of each (op, provider) under
Nsight Compute, against a device-to-device copy of the input's size in the same profile.

Run by ``bench/gpu_check.sh``'s ``ncu`` step, on the ops of its TARGET_OPS::

    ncu --clock-control none --profile-from-start off --metrics <METRICS> -o build/ncu/targets \
        python bench/ncu_targets.py --op softmax_entropy --op logsumexp ... --order $OUT/ncu-order.json
    ncu --import build/ncu/targets.ncu-rep --csv --page raw --print-units base > $OUT/ncu.csv
    python bench/ncu_targets.py --summarize $OUT/ncu.csv --order $OUT/ncu-order.json

Each (op, provider) is the benchmark's own call (``thermokern.bench``: the spec's input, its
parameters, the provider's function), run once untimed first (Triton compiles then), then once
between ``torch.cuda.profiler.start()`` and ``stop()`` after a marker kernel
(``torch.cuda._sleep``, ``spin_kernel`` in the profile): the summary splits the profiled
kernels at the markers and names each group from the ``--order`` file, which lists the groups
in launch order. ``copy`` is ``dst.copy_(src)`` of the op's input, the bandwidth the GPU
targets (issue 12) are stated against.

The summary table gives, per group: its kernels, their summed duration, the DRAM bytes moved
(also as a multiple of the input's bytes: a row op that reads its input once moves 1x, the copy
2x, langevin_step 3x; more means re-reads), GB/s and that against the copy's, and for its
longest kernel the DRAM and SM throughput (% of peak), achieved occupancy, registers per thread
and launch shape: enough to say whether a shortfall is extra bytes, too little in flight (DRAM
% and occupancy low) or compute (SM % high).

``--device cpu`` runs the same calls on CPU tensors without the profiler (a rehearsal of the
script on a machine without a GPU; it still writes ``--order``).
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import sys
from collections.abc import Iterable, Sequence

import torch

from thermokern import bench

MARKER = "spin_kernel"  # torch.cuda._sleep's kernel
# What the summary reads, in ncu's names; gpu_check.sh passes the same list to --metrics.
METRICS = {
    "time_ns": "gpu__time_duration.sum",
    "dram_read": "dram__bytes_read.sum",
    "dram_write": "dram__bytes_write.sum",
    "dram_pct": "dram__throughput.avg.pct_of_peak_sustained_elapsed",
    "sm_pct": "sm__throughput.avg.pct_of_peak_sustained_elapsed",
    "occupancy_pct": "sm__warps_active.avg.pct_of_peak_sustained_active",
    "regs": "launch__registers_per_thread",
    "grid": "launch__grid_size",
    "block": "launch__block_size",
}


def default_providers(provs: Sequence[bench.Provider]) -> list[bench.Provider]:
    """thermokern's backends (each in-place twin too) and peers (Liger, quack); not eager (many
    small kernels), torch.compile (its compile would take most of the step; name it in
    ``--providers`` to see its kernels) nor thermokern inside a compiled model."""
    return [p for p in provs if p.kind in ("thermokern", "external") and not p.compiled]


def _profiled(on_cuda: bool, run) -> None:
    """``run()`` inside the profiler's range after a marker kernel (on CUDA); just ``run()``
    elsewhere."""
    if not on_cuda:
        run()
        return
    torch.cuda.synchronize()
    torch.cuda.profiler.start()
    torch.cuda._sleep(1000)
    run()
    torch.cuda.synchronize()
    torch.cuda.profiler.stop()


def profile(ops: Iterable[str], shape, dtype, device: str, names: Sequence[str] | None) -> list[dict]:
    """Run and profile every (op, provider); the groups in launch order."""
    gen = torch.Generator(device=device).manual_seed(0)
    on_cuda = torch.device(device).type == "cuda"
    groups: list[dict] = []
    for op in ops:
        spec = bench.OPS[op]
        x = spec.make_input(shape, dtype, device, gen)
        leaves = spec.leaves(x) if spec.leaves is not None else ()
        provs, _ = spec.providers(device)
        chosen = default_providers(provs) if names is None else [p for p in provs if p.name in names]
        input_bytes = spec.input_bytes(shape, dtype)
        dst = torch.empty_like(x)
        _profiled(on_cuda, functools.partial(dst.copy_, x.detach()))
        groups.append({"op": op, "provider": "copy", "input_bytes": input_bytes})
        del dst
        for prov in chosen:
            calls = bench.make_calls(prov, "fwd", [x], None, leaves)
            calls.prepare(0)
            calls.call(0)  # compiles and autotunes outside the profile
            calls.prepare(0)  # restores an in-place provider's input, outside the profile
            _profiled(on_cuda, functools.partial(calls.call, 0))
            if calls.restore is not None:
                calls.restore()
            groups.append({"op": op, "provider": prov.name, "input_bytes": input_bytes})
            print(f"ncu_targets: {op} {prov.name} done", flush=True)
        del x, leaves
        if on_cuda:
            torch.cuda.empty_cache()
    return groups


# ----------------------------------------------------------------------------- the summary
def _number(text: str) -> float:
    """An ncu CSV value ("1,234,567", "87.5", "n/a") as a float (NaN when not a number)."""
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return float("nan")


def read_kernels(lines: Iterable[str]) -> list[dict]:
    """The kernels of ``ncu --import ... --csv --page raw --print-units base``, in launch order:
    ``{"name": ..., <METRICS keys>: float}`` (NaN for a metric the report lacks). Lines before
    the header (``==PROF==`` messages) and the units row are skipped."""
    rows = list(csv.reader(line for line in lines if not line.startswith("==")))
    start = next((i for i, r in enumerate(rows) if "Kernel Name" in r and "ID" in r), None)
    if start is None:
        raise ValueError("ncu CSV: no header row with 'ID' and 'Kernel Name'")
    header = rows[start]
    col = {name: i for i, name in enumerate(header)}
    kernels = []
    for r in rows[start + 1 :]:
        if len(r) != len(header) or not r[col["ID"]].strip().isdigit():
            continue  # the units row, a blank or truncated line
        k = {"name": r[col["Kernel Name"]]}
        for key, metric in METRICS.items():
            k[key] = _number(r[col[metric]]) if metric in col else float("nan")
        kernels.append(k)
    return kernels


def split_groups(kernels: Sequence[dict], groups: Sequence[dict]) -> list[list[dict]]:
    """The kernels after each marker, one list per group (the marker itself left out)."""
    out: list[list[dict]] = []
    for k in kernels:
        if MARKER in k["name"]:
            out.append([])
        elif out:
            out[-1].append(k)
    if len(out) != len(groups):
        raise ValueError(f"ncu CSV: {len(out)} marker kernels for {len(groups)} profiled groups")
    return out


def summarize(kernels: Sequence[dict], groups: Sequence[dict]) -> list[dict]:
    """One row per group: kernels, time, DRAM bytes and GB/s, % of the copy of its op, and the
    longest kernel's throughput, occupancy and launch."""
    rows, copy_gbs = [], {}
    for g, ks in zip(groups, split_groups(kernels, groups), strict=True):
        t = sum(k["time_ns"] for k in ks)
        moved = sum(k["dram_read"] + k["dram_write"] for k in ks)
        gbs = moved / t if t > 0 else float("nan")  # bytes per ns = GB/s
        if g["provider"] == "copy":
            copy_gbs[g["op"]] = gbs
        main = max(ks, key=lambda k: k["time_ns"], default=None)
        rows.append(
            {
                **g,
                "kernels": len(ks),
                "time_us": t / 1e3,
                "dram_gb": moved / 1e9,
                "of_input": moved / g["input_bytes"],
                "gbs": gbs,
                "pct_of_copy": 100.0 * gbs / copy_gbs[g["op"]] if g["op"] in copy_gbs else float("nan"),
                "main": None if main is None else {**main, "name": main["name"].split("(")[0][:48]},
            }
        )
    return rows


def format_summary(rows: Sequence[dict]) -> str:
    head = (
        "| op | provider | kernels | time us | DRAM GB | x input | GB/s | % of copy | longest kernel | DRAM % peak "
        "| SM % peak | occupancy % | regs | grid x block |"
    )
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        m = r["main"] or {k: float("nan") for k in METRICS} | {"name": "-"}
        lines.append(
            f"| {r['op']} | {r['provider']} | {r['kernels']} | {r['time_us']:.1f} | {r['dram_gb']:.3f} "
            f"| {r['of_input']:.2f} | {r['gbs']:.0f} | {r['pct_of_copy']:.0f} | {m['name']} | {m['dram_pct']:.0f} | {m['sm_pct']:.0f} "
            f"| {m['occupancy_pct']:.0f} | {m['regs']:.0f} | {m['grid']:.0f} x {m['block']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--op", action="append", help="an op to profile (repeat)")
    p.add_argument("--shape", default="16384x131072", help="input shape (default 16384x131072)")
    p.add_argument("--dtype", default="bfloat16", help="input dtype (default bfloat16)")
    p.add_argument(
        "--device", default="cuda", help="cuda (default), or cpu for a rehearsal without the profiler"
    )
    p.add_argument("--providers", help="comma-separated provider names (default: thermokern's and peers')")
    p.add_argument(
        "--order", help="JSON file of the profiled groups in launch order (written, or read by --summarize)"
    )
    p.add_argument("--summarize", metavar="CSV", help="print the table of an ncu --csv --page raw export")
    p.add_argument("--metrics", action="store_true", help="print the metric list for ncu --metrics and exit")
    args = p.parse_args(argv)
    if args.metrics:
        print(",".join(METRICS.values()))
        return 0
    if not args.order:
        p.error("--order: required to profile or to summarize")
    if args.summarize:
        with open(args.order) as f:
            groups = json.load(f)
        with open(args.summarize, newline="") as f:
            print(format_summary(summarize(read_kernels(f), groups)))
        return 0
    unknown = [op for op in args.op or () if op not in bench.OPS]
    if not args.op or unknown:
        p.error(f"--op: expected one or more of {', '.join(bench.OPS)}, got {args.op}")
    names = args.providers.split(",") if args.providers else None
    groups = profile(
        args.op, bench.parse_shape(args.shape), bench.parse_dtype(args.dtype), args.device, names
    )
    with open(args.order, "w") as f:
        json.dump(groups, f, indent=1)
    print(f"ncu_targets: {len(groups)} groups profiled; order in {args.order}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The result's outputs: the Markdown table (:func:`format_table`), the JSON file
(:func:`write_json`) and the PNG bandwidth plot (:func:`plot`)."""

from __future__ import annotations

import json
import math
import os
from typing import Any

_COLUMNS = (
    # header, key, formatter, right-aligned
    ("op", "op", str, False),
    ("mode", "mode", str, False),
    ("shape", "shape", str, False),
    ("dtype", "dtype", str, False),
    ("provider", "provider", str, False),
    ("median ms", "median_ms", "ms", True),
    ("p20 ms", "p20_ms", "ms", True),
    ("p80 ms", "p80_ms", "ms", True),
    ("GB/s", "gbps", "{:.1f}", True),
    ("% copy", "pct_copy", "{:.0f}%", True),
    ("vs eager", "speedup_vs_eager", "{:.2f}x", True),
    ("vs compile", "speedup_vs_compile", "{:.2f}x", True),
    ("max abs err", "max_abs_err", "{:.1e}", True),
    ("peak MiB", "peak_mem_mib", "{:.0f}", True),
)


def _fmt(value, how) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value) and how != "{:.1e}"):
        return "-"
    if how is str:
        return str(value)
    if how == "ms":
        v = float(value)
        return f"{v:.4f}" if v < 0.1 else f"{v:.3f}" if v < 10 else f"{v:.2f}" if v < 1000 else f"{v:.0f}"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return how.format(value)


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes} B"


def format_table(result: dict[str, Any], details: bool = True) -> str:
    """The rows as a Markdown pipe table, aligned for a terminal.

    With ``details``, a title line (device, versions) comes first, and the copy bandwidths,
    compile times, failures and notes follow as Markdown bullet lists.
    """
    header = [c[0] for c in _COLUMNS]
    body = []
    for r in result.get("rows", []):
        if "error" in r:
            cells = [_fmt(r.get(key), how) for _, key, how, _ in _COLUMNS[:5]]
            cells += ["failed"] + ["-"] * (len(_COLUMNS) - 6)
        else:
            cells = [_fmt(r.get(key), how) for _, key, how, _ in _COLUMNS]
        body.append(cells)
    widths = [max([len(h)] + [len(row[i]) for row in body]) for i, h in enumerate(header)]

    def line(cells):
        out = []
        for i, c in enumerate(cells):
            out.append(c.rjust(widths[i]) if _COLUMNS[i][3] else c.ljust(widths[i]))
        return "| " + " | ".join(out) + " |"

    sep = (
        "|"
        + "|".join(("-" * (w + 1) + ":") if c[3] else ("-" * (w + 2)) for w, c in zip(widths, _COLUMNS))
        + "|"
    )
    lines = []
    if details:
        env, ver = result.get("environment", {}), result.get("versions", {})
        st = result.get("settings", {})
        title = (
            f"thermokern {ver.get('thermokern')} bench on {env.get('device_name')} "
            f"({st.get('device')}, {env.get('threads')} threads, ISA {env.get('cpu_isa')}); "
            f"torch {ver.get('torch')}, triton {ver.get('triton')}; {result.get('date')}"
            + (" [quick]" if st.get("quick") else "")
        )
        lines += [title, ""]
    lines += [line(header), sep] + [line(b) for b in body]
    if details:
        copies = result.get("copy_bandwidth", [])
        if copies:
            lines += ["", "Copy bandwidth (dst.copy_(src), same bytes as the input):"]
            lines += [
                f"- {c['shape']} {c['dtype']}: {c['gbps']:.1f} GB/s "
                f"({_fmt(c['median_ms'], 'ms')} ms for {_size(c['bytes'])})"
                for c in copies
            ]
        compiles = [r for r in result.get("rows", []) if r.get("compile_s") is not None]
        if compiles:
            lines += ["", "torch.compile warm-up (first call, compile included, not in the timings):"]
            lines += [f"- {r['mode']} {r['shape']} {r['dtype']}: {r['compile_s']:.1f} s" for r in compiles]
        notes = result.get("notes", [])
        if notes:
            lines += ["", "Notes:"] + [f"- {n}" for n in notes]
        if result.get("elapsed_s") is not None:
            lines += ["", f"Total time: {result['elapsed_s']:.1f} s"]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: str) -> str | None:
    """Bar chart (PNG) of GB/s per provider, one panel per (op, mode, shape, dtype), with the
    copy bandwidth as a dashed line. Returns ``None``, or a note saying why nothing was written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "plot: matplotlib is not installed (pip install matplotlib); no plot written"
    groups: dict[tuple, list[dict]] = {}
    for r in result.get("rows", []):
        groups.setdefault((r["op"], r["mode"], r["shape"], r["dtype"]), []).append(r)
    if not groups:
        return "plot: no rows to plot"
    copy_bw = {(c["op"], c["shape"], c["dtype"]): c["gbps"] for c in result.get("copy_bandwidth", [])}
    n = len(groups)
    ncols = min(4, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False)
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = sorted(
        {r["provider"] for r in result["rows"]},
        key=lambda p: [r["provider"] for r in result["rows"]].index(p),
    )
    colour = {p: palette[i % len(palette)] for i, p in enumerate(names)}
    for ax, ((op, mode, shape, dtype), rows) in zip(axes.flat, groups.items()):
        labels = [r["provider"] for r in rows]
        values = [r.get("gbps") or 0.0 for r in rows]
        bars = ax.bar(labels, values, color=[colour[p] for p in labels])
        for b, r in zip(bars, rows):
            text = "failed" if "error" in r else f"{r['gbps']:.0f}"
            ax.annotate(
                text, (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=7
            )
        bw = copy_bw.get((op, shape, dtype))
        ax.set_ylim(0, 1.25 * max(values + [bw or 0.0, 1e-9]))
        if bw:
            ax.axhline(bw, color="black", linestyle="--", linewidth=1, label=f"copy {bw:.0f} GB/s")
            ax.legend(fontsize=7, loc="upper right")
        ax.set_title(f"{op} {mode}\n{shape} {dtype}", fontsize=9)
        ax.set_ylabel("GB/s (minimal bytes)", fontsize=8)
        ax.tick_params(axis="x", labelsize=8, rotation=30)
        ax.tick_params(axis="y", labelsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    env = result.get("environment", {})
    fig.suptitle(f"thermokern bench: {env.get('device_name')} ({result.get('date', '')[:10]})", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def write_json(path: str, result: dict) -> None:
    """Write ``result`` as JSON (NaN and infinities as null), atomically (a temporary file, renamed)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(_json_safe(result), f, indent=2)
        f.write("\n")
    os.replace(tmp, path)

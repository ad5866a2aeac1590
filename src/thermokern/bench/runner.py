"""The run behind ``thermokern bench``: for every op, shape, dtype and mode, time each
provider, measure its error against float64 and its peak extra memory, and put the numbers
next to a ``dst.copy_(src)`` of the input's size measured in the same run.

``fwd+bwd`` clears the gradients (untimed) before each call (the input's and those of the op's
other differentiable tensors, :attr:`OpSpec.leaves`); in-place providers get their input
restored (untimed) before each call. ``compile`` is warmed up (compiled) before timing;
the first call's time, compilation included, is reported separately as ``compile_s``.
"""

from __future__ import annotations

import datetime as _dt
import gc
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, TextIO

import torch

from .env import environment, loadavg, versions
from .memory import PeakMemory, free_bytes
from .providers import Provider
from .registry import MODES, OPS, OpSpec, format_dtype, format_shape, parse_dtype, parse_shape
from .report import format_table, plot, write_json
from .timing import (
    TimingSettings,
    cache_bytes,
    copies_for_cache,
    resolve_device,
    summary,
    time_calls,
    time_copy,
    timing_settings,
)

SCHEMA = "thermokern-bench/1"


class _Progress:
    """Progress on stderr: a tqdm bar on a terminal, else one line per measurement."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.n, self.enabled = total, 0, enabled
        self._bar = None
        if enabled and sys.stderr.isatty():  # a log file gets plain lines, not bar redraws
            try:
                from tqdm.auto import tqdm

                self._bar = tqdm(total=total, unit="meas", file=sys.stderr, dynamic_ncols=True)
            except ImportError:
                self._bar = None

    def status(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.set_description_str(text, refresh=True)
        else:
            print(f"[{self.n + 1}/{self.total}] {text} ...", file=sys.stderr, flush=True)

    def done(self, text: str) -> None:
        self.n += 1
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)
            self._bar.update(1)
        else:
            print(f"[{self.n}/{self.total}]   {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def joined(value: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """A tuple of gradients (the input's, then the leaves', as :func:`result_of_call` returns
    them for an op with :attr:`OpSpec.leaves`) as one flat float64 tensor; a tensor as it is."""
    if isinstance(value, torch.Tensor):
        return value
    return torch.cat([v.detach().reshape(-1).to(torch.float64) for v in value])


def max_abs_err(value: torch.Tensor | Sequence[torch.Tensor], ref: torch.Tensor) -> float:
    """Largest ``|value - ref|`` in float64 (0 for empty tensors, NaN if any difference is NaN);
    a tuple of gradients is compared as :func:`joined` flattens it."""
    diff = (joined(value).detach().to(torch.float64) - ref).abs()
    if diff.numel() == 0:
        return 0.0
    if torch.isnan(diff).any():
        return float("nan")
    return float(diff.max())


class _Reference:
    """The float64 reference of one case: computed once and kept when it is small next to the
    free memory, else recomputed chunk by chunk for every comparison (bounded memory)."""

    def __init__(self, spec: OpSpec, x: torch.Tensor, grad: torch.Tensor | None, mode: str):
        self.spec, self.x, self.grad, self.mode = spec, x, grad, mode
        numel = spec.compared_numel(x, mode)
        self.full: torch.Tensor | None = None
        if numel * 8 <= 0.1 * free_bytes(x.device):
            self.full = spec.reference(x, grad, mode)

    def max_abs_err(self, value: torch.Tensor | Sequence[torch.Tensor]) -> float:
        if self.full is not None:
            return max_abs_err(value, self.full)
        value = joined(value).detach()
        flat = self.mode == "fwd" or self.spec.leaves is not None
        rows = value.reshape(-1) if flat else value.reshape(-1, value.shape[-1])
        worst = 0.0
        for sl, chunk in self.spec.reference_chunks(self.x, self.grad, self.mode):
            err = max_abs_err(rows[sl], chunk)
            if math.isnan(err):
                return err
            worst = max(worst, err)
        return worst


class Calls(NamedTuple):
    """One provider's calls on one case (:func:`make_calls`)."""

    prepare: Callable[[int], None]
    call: Callable[[int], Any]
    inputs: list[torch.Tensor]
    restore: Callable[[], None] | None


def make_calls(
    prov: Provider,
    mode: str,
    xs: Sequence[torch.Tensor],
    grad: torch.Tensor | None,
    leaves: Sequence[torch.Tensor] = (),
) -> Calls:
    """Build ``(prepare, call, inputs, restore)`` for one provider and mode.

    ``call(i)`` runs the op on input copy ``i % len(xs)`` (``fwd``: returns the output;
    ``fwd+bwd``: forward then ``.backward(grad)``, the gradient lands in ``inputs[i].grad``);
    ``prepare(i)`` is the untimed part before each call (clears the gradients; restores the
    input of an in-place provider). ``leaves`` (the op's other differentiable tensors,
    :attr:`OpSpec.leaves`, shared by the input copies) require grad in ``fwd+bwd`` only, and
    ``prepare`` clears their gradients too.

    An in-place provider updates ``xs`` themselves (a spec finds what it drew with an input
    from the input's storage, :class:`PerInput`); ``restore()`` puts every copy back as it was,
    for what reads ``xs`` after the provider (the reference, the next provider). ``restore`` is
    None for the other providers.
    """
    fn = prov.make()
    for t in leaves:
        t.requires_grad_(mode == "fwd+bwd")
    restore = None
    if mode == "fwd" and prov.inplace:
        inputs = [x.detach() for x in xs]
        originals = [x.clone() for x in inputs]

        def prepare(i: int) -> None:  # every call starts from the original input
            inputs[i % len(inputs)].copy_(originals[i % len(inputs)])

        def call(i: int):
            return fn(inputs[i % len(inputs)])

        def restore() -> None:
            for x, original in zip(inputs, originals, strict=True):
                x.copy_(original)

    elif mode == "fwd":
        inputs = [x.detach() for x in xs]

        def prepare(i: int) -> None:
            pass

        def call(i: int):
            return fn(inputs[i % len(inputs)])

    elif mode == "fwd+bwd":
        if prov.inplace:
            raise ValueError(f"provider {prov.name!r} updates its input in place: fwd only")
        inputs = [x.detach().requires_grad_(True) for x in xs]

        def prepare(i: int) -> None:
            for t in (*inputs, *leaves):
                t.grad = None

        def call(i: int):
            fn(inputs[i % len(inputs)]).backward(grad)

    else:
        raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
    return Calls(prepare, call, inputs, restore)


def result_of_call(
    mode: str, calls: Calls, leaves: Sequence[torch.Tensor] = ()
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """Run ``calls.call(0)`` once and return what the error is measured on: the output, or the
    input gradient (with ``leaves``: the tuple of the input's and the leaves' gradients,
    nothing allocated; :func:`max_abs_err` joins them). An in-place provider's output (its
    input copy, updated) comes back as a copy, and its inputs restored."""
    out = calls.call(0)
    if mode == "fwd":
        if calls.restore is not None:
            out = out.clone()
            calls.restore()
        return out
    inputs = calls.inputs
    return (inputs[0].grad, *(t.grad for t in leaves)) if leaves else inputs[0].grad


def _measure_provider(
    spec: OpSpec,
    prov: Provider,
    mode: str,
    xs: list[torch.Tensor],
    grad: torch.Tensor,
    ref: _Reference | None,
    device: str,
    st: TimingSettings,
    mem: PeakMemory,
) -> dict[str, Any]:
    """Time one provider on one case; returns the row's measured fields."""
    row: dict[str, Any] = {}
    leaves = spec.leaves(xs[0]) if spec.leaves is not None else ()
    calls = make_calls(prov, mode, xs, grad, leaves)
    prepare, call = calls.prepare, calls.call

    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    warmup = st.warmup
    if prov.compiled:  # first call compiles: timed on its own, then warm up as usual
        prepare(0)
        t0 = time.perf_counter()
        call(0)
        sync()
        row["compile_s"] = time.perf_counter() - t0
    for i in range(warmup):
        prepare(i)
        call(i)
    sync()
    # one untimed call for the error and the peak extra memory
    prepare(0)
    mem.start()
    value = result_of_call(mode, calls, leaves)
    row["peak_mem_mib"] = mem.stop()
    row["max_abs_err"] = ref.max_abs_err(value) if (ref is not None and prov.exact) else None
    del value
    prepare(0)
    times = time_calls(call, prepare, device, st)
    prepare(0)
    if calls.restore is not None:
        calls.restore()  # the next provider starts from the same inputs
    row.update(summary(times))
    return row


def run(
    ops: Iterable[str] | None = None,
    device: str = "cpu",
    dtypes: Iterable[str | torch.dtype] | None = None,
    shapes: Iterable[str | Sequence[int]] | None = None,
    quick: bool = False,
    progress: bool = True,
    json_path: str | None = None,
    plot_path: str | None = None,
    out: TextIO | None = sys.stdout,
    *,
    providers: Iterable[str] | None = None,
    modes: Iterable[str] | None = None,
    seed: int = 0,
    threads: int | None = None,
) -> dict[str, Any]:
    """Benchmark the registered ops; print the table to ``out``; optionally write JSON and a plot.

    Args:
        ops: op names from :data:`OPS` (default: all).
        device: ``"cpu"`` or ``"cuda"`` (``"cuda:N"`` works too).
        dtypes: dtype names or ``torch.dtype`` (default: per op and device; CPU float32, CUDA
            bfloat16 and float32).
        shapes: ``"4096x32000"`` strings or tuples (default: per op, device and ``quick``).
        quick: fewer shapes and repetitions (a smoke run).
        progress: show progress on stderr (tqdm when installed, else one line per measurement).
        json_path: write the result dict here as JSON (rewritten after every case, so an
            interrupted run leaves its partial results with ``"complete": false``).
        plot_path: write a PNG bar chart (needs matplotlib; else a note is added and it is skipped).
        out: where to print the final table (``None``: print nothing).
        providers: restrict to these provider names (e.g. ``["cpu", "eager"]``).
        modes: restrict to these modes (``"fwd"``, ``"fwd+bwd"``).
        seed: random seed of the inputs.
        threads: ``torch.set_num_threads`` for the run (restored afterwards); default: as is.

    Returns:
        The result dict (what the JSON holds): ``environment``, ``versions``, ``settings``,
        ``copy_bandwidth`` (one entry per shape and dtype), ``rows`` (one per op, mode, shape,
        dtype, provider), ``notes``, ``complete``.

    Raises:
        ValueError: unknown op, mode, provider, dtype or a malformed shape.
        RuntimeError: ``device="cuda"`` without a GPU.
    """
    if threads is not None:
        if int(threads) < 1:
            raise ValueError(f"threads: expected a positive count, got {threads!r}")
        saved = torch.get_num_threads()
        torch.set_num_threads(int(threads))
        try:
            return run(
                ops,
                device,
                dtypes,
                shapes,
                quick,
                progress,
                json_path,
                plot_path,
                out,
                providers=providers,
                modes=modes,
                seed=seed,
            )
        finally:
            torch.set_num_threads(saved)
    t_run = time.perf_counter()
    device = resolve_device(device)
    dev_type = torch.device(device).type
    op_names = list(ops) if ops is not None else list(OPS)
    for name in op_names:
        if name not in OPS:
            raise ValueError(f"ops: unknown op {name!r}; known: {', '.join(OPS)}")
    mode_list = list(modes) if modes is not None else list(MODES)
    for m in mode_list:
        if m not in MODES:
            raise ValueError(f"modes: expected some of {', '.join(MODES)}, got {m!r}")
    want = set(providers) if providers is not None else None
    st = timing_settings(device, quick)
    mem = PeakMemory(device)
    cache = cache_bytes(device)

    notes: list[str] = []
    plan = []  # (spec, providers, shapes, dtypes, modes)
    for name in op_names:
        spec = OPS[name]
        provs, op_notes = spec.providers(device)
        notes += [f"{name}: {n}" for n in op_notes]
        if want is not None:
            known = {p.name for p in provs}
            missing = want - known
            if missing:
                notes.append(f"{name}: requested providers not available here: {', '.join(sorted(missing))}")
            provs = [p for p in provs if p.name in want]
        shp = [parse_shape(s) for s in shapes] if shapes is not None else spec.default_shapes(device, quick)
        skipped = [s for s in shp if not spec.accepts_shape(s)]
        if skipped:
            notes.append(
                f"{name}: shape {', '.join(format_shape(s) for s in skipped)} skipped: its shapes are "
                + " x ".join(spec.shape_dims or ())
            )
            shp = [s for s in shp if spec.accepts_shape(s)]
        dts = [parse_dtype(d) for d in dtypes] if dtypes is not None else spec.default_dtypes(device, quick)
        op_modes = [m for m in mode_list if m in spec.modes]
        if len(op_modes) < len(mode_list):
            notes.append(f"{name}: benchmarked in {', '.join(spec.modes)} only")
        plan.append((spec, provs, shp, dts, op_modes))

    if any(p.compiled for _, provs, _, _, _ in plan for p in provs):
        notes.append(
            "compile (and <backend>+compile): torch.compile(eager (or thermokern's op), dynamic=False), "
            "compiled afresh for every case after torch._dynamo.reset() (inductor's on-disk caches stay "
            "as they are); compile_s is its first call (compile + one run), excluded from the timings"
        )
    notes.append(
        "GB/s = minimal bytes / median time; fwd: read N*C inputs + write N outputs; "
        "fwd+bwd: read N*C twice + write the N*C gradient (row vectors ignored)"
    )
    notes.append("copy GB/s = 2 * input bytes / median time of dst.copy_(src); '% copy' = GB/s / copy GB/s")
    notes.append(f"peak memory: {mem.method}")
    notes.append(
        "max abs err: against float64 (reference on the same input); "
        "the output for fwd, the gradient for fwd+bwd"
    )

    result: dict[str, Any] = {
        "schema": SCHEMA,
        "date": _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds"),
        "environment": environment(device),
        "versions": versions(),
        "settings": {
            "device": device,
            "quick": bool(quick),
            "ops": op_names,
            "modes": mode_list,
            "seed": seed,
            "timing": "cuda events" if dev_type == "cuda" else "time.perf_counter wall clock",
            "warmup": st.warmup,
            "min_reps": st.min_reps,
            "max_reps": st.max_reps,
            "budget_s": st.budget_s,
            "cache_bytes": cache,
            "plan": [
                {
                    "op": spec.name,
                    "providers": [p.name for p in provs],
                    "shapes": [format_shape(s) for s in shp],
                    "dtypes": [format_dtype(d) for d in dts],
                    "params": spec.params,
                    "modes": op_modes,
                }
                for spec, provs, shp, dts, op_modes in plan
            ],
        },
        "copy_bandwidth": [],
        "rows": [],
        "notes": notes,
        "complete": False,
    }

    total = sum(len(shp) * len(dts) * (1 + len(provs) * len(ms)) for _, provs, shp, dts, ms in plan)
    bar = _Progress(total, progress)
    gen = torch.Generator(device=device)
    try:
        for spec, provs, shp, dts, op_modes in plan:
            for shape in shp:
                for dtype in dts:
                    _run_case(
                        spec, provs, op_modes, shape, dtype, device, st, mem, cache, gen, seed, result, bar
                    )
                    if json_path:
                        write_json(json_path, result)
    finally:
        bar.close()
    result["complete"] = True
    result["elapsed_s"] = round(time.perf_counter() - t_run, 1)
    load = result["environment"]["loadavg_start"]
    result["environment"]["loadavg_end"] = loadavg()
    if dev_type == "cpu" and load is not None and load > 0.5 * (os.cpu_count() or 1):
        result["notes"].append(
            f"the machine was busy (1-min load average {load} at start on {os.cpu_count()} CPUs): "
            "CPU timings include interference from other processes"
        )
    if plot_path:
        err = plot(result, plot_path)
        if err:
            result["notes"].append(err)
        else:
            result["plot"] = plot_path
    if json_path:
        write_json(json_path, result)
    if out is not None:
        print(format_table(result), file=out)
        out.flush()
    return result


def _run_case(spec, provs, mode_list, shape, dtype, device, st, mem, cache, gen, seed, result, bar) -> None:
    shape_s, dtype_s = format_shape(shape), format_dtype(dtype)
    label = f"{spec.name} {shape_s} {dtype_s}"
    nbytes = spec.input_bytes(shape, dtype)
    k = copies_for_cache(nbytes, cache)
    gen.manual_seed(seed)

    # copy bandwidth of the input's size, in this run
    bar.status(f"{label} copy")
    src = [spec.make_input(shape, dtype, device, gen) for _ in range(k)]
    dst = [torch.empty_like(s) for s in src]
    copy = {"op": spec.name, "shape": shape_s, "dtype": dtype_s, "bytes": nbytes}
    copy.update(time_copy(src, dst, device, st))
    result["copy_bandwidth"].append(copy)
    bar.done(f"copy {copy['gbps']:.1f} GB/s")
    xs = src  # reuse the random copies as the op's inputs
    del dst
    grad = spec.make_grad(xs[0], gen)

    for mode in [m for m in mode_list if m in spec.modes]:
        bar.status(f"{label} {mode} float64 reference")
        ref = _Reference(spec, xs[0], grad, mode) if spec.has_reference else None
        rows = []
        for prov in provs:
            bar.status(f"{label} {mode} {prov.name}" + (" (compiling)" if prov.compiled else ""))
            row: dict[str, Any] = {
                "op": spec.name,
                "mode": mode,
                "shape": shape_s,
                "dtype": dtype_s,
                "provider": prov.name,
                "kind": prov.kind,
                "copies": k,
            }
            try:
                row.update(_measure_provider(spec, prov, mode, xs, grad, ref, device, st, mem))
            # one failing provider (OOM, no C++ compiler for inductor) must not end the run
            except Exception as exc:  # noqa: BLE001
                msg = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
                row["error"] = msg[:300]
                result["notes"].append(
                    f"{spec.name} {mode} {shape_s} {dtype_s} {prov.name}: failed: {row['error']}"
                )
                if torch.device(device).type == "cuda":
                    torch.cuda.empty_cache()
            gc.collect()
            if "median_ms" in row:
                row["gbps"] = spec.min_bytes(shape, dtype, mode) / (row["median_ms"] * 1e-3) / 1e9
                row["pct_copy"] = 100.0 * row["gbps"] / copy["gbps"]
                bar.done(f"{prov.name} {mode} {row['median_ms']:.3f} ms, {row['gbps']:.1f} GB/s")
            else:
                bar.done(f"{prov.name} {mode} failed")
            rows.append(row)
        base = {r["provider"]: r.get("median_ms") for r in rows}
        for r in rows:
            t = r.get("median_ms")
            for key, name in (("speedup_vs_eager", "eager"), ("speedup_vs_compile", "compile")):
                b = base.get(name)
                r[key] = b / t if (t and b) else None
        result["rows"].extend(rows)
        del ref
    del xs, src, grad
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()

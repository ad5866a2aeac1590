"""Timers: repeated single calls, their median and 20/80 % quantiles, the last-level cache
size that decides how many input copies to rotate among, and the ``dst.copy_(src)`` bandwidth
every measurement is compared with.

* CPU: wall clock (``time.perf_counter``) of single calls, repeated until both a minimum
  number of repetitions and a time budget are reached.
* CUDA: CUDA events around each call, ``torch.cuda.synchronize()`` before reading them.
* Both: the input is rotated among several copies when one copy is smaller than about twice
  the last-level cache (L2 on GPUs, L3 on CPUs), so repeated calls do not read from cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch


@dataclasses.dataclass(frozen=True)
class TimingSettings:
    """How long to time one measurement."""

    warmup: int  # untimed calls before timing (compiled providers: at least 1, the compile)
    min_reps: int
    max_reps: int
    budget_s: float  # keep timing until min_reps and budget_s are both reached (or max_reps)


_SETTINGS = {
    ("cpu", False): TimingSettings(warmup=1, min_reps=5, max_reps=100, budget_s=2.0),
    ("cpu", True): TimingSettings(warmup=0, min_reps=3, max_reps=20, budget_s=0.5),
    ("cuda", False): TimingSettings(warmup=5, min_reps=20, max_reps=2000, budget_s=1.0),
    ("cuda", True): TimingSettings(warmup=3, min_reps=10, max_reps=500, budget_s=0.25),
}


def timing_settings(device: str, quick: bool) -> TimingSettings:
    """The repetition settings for ``device`` (``"cpu"``/``"cuda[:N]"``), full or ``quick``."""
    return _SETTINGS[(torch.device(device).type, bool(quick))]


def resolve_device(device: str) -> str:
    """``"cpu"``, or the CUDA device as a string; raises when CUDA is asked for but missing.

    Raises:
        RuntimeError: a CUDA device without a GPU.
        ValueError: a device type other than cpu and cuda.
    """
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device: 'cuda' requested but torch.cuda.is_available() is False")
        return str(dev)
    if dev.type != "cpu":
        raise ValueError(f"device: expected 'cpu' or 'cuda', got {device!r}")
    return "cpu"


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (as numpy's default) of a non-empty sequence."""
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summary(times_s: list[float]) -> dict[str, float]:
    """``{"median_ms", "p20_ms", "p80_ms", "reps"}`` of per-call times in seconds."""
    return {
        "median_ms": statistics.median(times_s) * 1e3,
        "p20_ms": quantile(times_s, 0.2) * 1e3,
        "p80_ms": quantile(times_s, 0.8) * 1e3,
        "reps": len(times_s),
    }


def time_calls(
    call: Callable[[int], Any], prepare: Callable[[int], None], device: str, st: TimingSettings
) -> list[float]:
    """Seconds per ``call(i)``; ``prepare(i)`` runs untimed before each call."""
    is_cuda = torch.device(device).type == "cuda"
    times: list[float] = []
    t_begin = time.perf_counter()
    i = 0
    if not is_cuda:
        while i < st.max_reps and (i < st.min_reps or time.perf_counter() - t_begin < st.budget_s):
            prepare(i)
            t0 = time.perf_counter()
            call(i)
            times.append(time.perf_counter() - t0)
            i += 1
        return times
    # CUDA: events around each call; batches so that host-side timing of the budget is cheap.
    while i < st.max_reps and (i < st.min_reps or time.perf_counter() - t_begin < st.budget_s):
        batch = max(1, min(st.max_reps - i, st.min_reps if i == 0 else max(1, i)))
        events = []
        for _ in range(batch):
            prepare(i)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            call(i)
            end.record()
            events.append((start, end))
            i += 1
        torch.cuda.synchronize()
        times.extend(s.elapsed_time(e) * 1e-3 for s, e in events)
    return times


def cache_bytes(device: str) -> int:
    """Last-level cache size: L2 on a GPU, L3 (else the largest) on a CPU; a guess if unknown."""
    dev = torch.device(device)
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        return int(getattr(props, "L2_cache_size", 0) or 64 << 20)
    best = 0
    base = "/sys/devices/system/cpu/cpu0/cache"
    with contextlib.suppress(OSError):
        for entry in os.listdir(base):
            with contextlib.suppress(OSError, ValueError):
                with open(os.path.join(base, entry, "size")) as f:
                    text = f.read().strip().upper()
                mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
                best = max(best, int(text.rstrip("KMG")) * mult)
    return best or 32 << 20


def copies_for_cache(nbytes: int, cache: int) -> int:
    """How many input copies to rotate among so that consecutive calls miss a ``cache``-byte cache."""
    return max(1, min(8, math.ceil(2 * cache / max(nbytes, 1))))


def n_copies(nbytes: int, device: str) -> int:
    """Input copies to rotate among on ``device`` for an input of ``nbytes`` (1 for large inputs)."""
    return copies_for_cache(nbytes, cache_bytes(device))


def time_copy(
    src: Sequence[torch.Tensor], dst: Sequence[torch.Tensor], device: str, st: TimingSettings
) -> dict[str, float]:
    """Time ``dst[i].copy_(src[i])`` rotating over the buffers: ``{"median_ms", "gbps", "reps",
    "copies"}`` with ``gbps = 2 * bytes / median``."""
    k = len(src)
    for i in range(k + 1):  # touch every destination page before timing
        dst[i % k].copy_(src[i % k])
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    times = time_calls(lambda i: dst[i % k].copy_(src[i % k]), lambda i: None, device, st)
    med = statistics.median(times)
    nbytes = src[0].numel() * src[0].element_size()
    return {"median_ms": med * 1e3, "gbps": 2 * nbytes / med / 1e9, "reps": len(times), "copies": k}


def measure_copy(nbytes: int, device: str, quick: bool = True) -> dict[str, float]:
    """Time ``dst.copy_(src)`` of ``nbytes`` bytes (rotating buffers as the op timings do).

    Returns ``{"median_ms", "gbps", "reps", "copies"}`` with ``gbps = 2 * nbytes / median``.
    """
    device = resolve_device(device)
    st = timing_settings(device, quick)
    k = n_copies(nbytes, device)
    src = [torch.empty(nbytes, dtype=torch.uint8, device=device).random_() for _ in range(k)]
    dst = [torch.empty_like(t) for t in src]
    return time_copy(src, dst, device, st)

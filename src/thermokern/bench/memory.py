"""Memory probes: the peak extra memory of one call (CUDA allocator statistics, or the
process's resident set from /proc on Linux) and the free memory of a device."""

from __future__ import annotations

import contextlib
import gc
import sys

import torch


class PeakMemory:
    """Peak extra memory of one call: :meth:`start` before it, :meth:`stop` after it.

    CUDA: ``torch.cuda.max_memory_allocated()`` minus the allocation before the call (exact
    for tensors from torch's allocator). CPU: the process's resident-set high-water mark
    (VmHWM, reset through ``/proc/self/clear_refs``) minus the resident set before the call;
    an approximation (torch's CPU allocator returns large blocks to the OS, small ones may be
    served from malloc's cached heap and not show), ``None`` where /proc does not allow it.
    ``method`` describes the probe in words (``"n/a"`` when there is none).
    """

    def __init__(self, device: str):
        self.device = torch.device(device)
        self.method = "n/a"
        if self.device.type == "cuda":
            self.method = "torch.cuda.max_memory_allocated() - memory_allocated() before the call"
        elif self._rss_supported():
            self.method = (
                "CPU: resident-set high-water mark (VmHWM after /proc/self/clear_refs) minus the "
                "resident set before the call, after malloc_trim(0); approximate (page granularity, "
                "memory that malloc reuses without new pages does not show)"
            )
        self._base = 0
        self._malloc_trim = None
        if self.device.type == "cpu" and self.available:
            with contextlib.suppress(OSError, AttributeError):
                import ctypes

                self._malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim

    @staticmethod
    def _status(key: str) -> int | None:
        """A ``kB`` field of /proc/self/status, in bytes."""
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith(key):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            return None
        return None

    @classmethod
    def _rss_supported(cls) -> bool:
        if not sys.platform.startswith("linux"):
            return False
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            return False
        return cls._status("VmHWM:") is not None and cls._status("VmRSS:") is not None

    @property
    def available(self) -> bool:
        return self.method != "n/a"

    def start(self) -> None:
        gc.collect()
        if self._malloc_trim is not None:
            # hand memory that malloc keeps after frees back to the OS, so that the call's
            # allocations show up as new resident pages instead of reusing retained ones
            self._malloc_trim(0)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.available:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self._base = self._status("VmRSS:") or 0

    def stop(self) -> float | None:
        """Peak extra MiB since :meth:`start`."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        if not self.available:
            return None
        hwm = self._status("VmHWM:")
        return None if hwm is None else max(0, hwm - self._base) / 2**20


def free_bytes(device: torch.device) -> int:
    """Free memory of ``device``: the GPU's free memory, or MemAvailable (4 GiB if unknown)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 4 << 30

"""Environment capture for the result's ``environment`` and ``versions`` sections: CPU and
GPU, threads, load average, package versions and the git commit of the checkout."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import subprocess
from typing import Any

import torch

import thermokern
from thermokern import _backend

from .timing import cache_bytes


def cpu_name() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def loadavg() -> float | None:
    """The 1-minute load average, or ``None`` where the platform has none."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> subprocess.CompletedProcess:
    """``git <args>`` in the folder of this file (output captured as text, 5 s at most)."""
    here = os.path.dirname(os.path.abspath(__file__))
    return subprocess.run(["git", "-C", here, *args], capture_output=True, text=True, timeout=5, check=False)


def _git_commit() -> str | None:
    """Short commit of the checkout this file is in (``-dirty`` with tracked changes), if any."""
    try:
        out = _git("rev-parse", "--short", "HEAD")
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return out.stdout.strip() + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def environment(device: str) -> dict[str, Any]:
    """The machine: CPU (name, ISA, threads, load), the GPU on CUDA, the last-level cache."""
    dev = torch.device(device)
    env: dict[str, Any] = {
        "device_type": dev.type,
        "cpu": cpu_name(),
        "cpu_isa": _backend._C.cpu_isa() if _backend._C is not None else None,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "loadavg_start": loadavg(),
    }
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        env.update(
            gpu=torch.cuda.get_device_name(dev),
            gpu_capability=".".join(map(str, torch.cuda.get_device_capability(dev))),
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            gpu_sms=props.multi_processor_count,
            gpu_l2_mib=round(cache_bytes(device) / 2**20, 1),
        )
        env["device_name"] = env["gpu"]
    else:
        env["device_name"] = env["cpu"]
        env["l3_mib"] = round(cache_bytes(device) / 2**20, 1)
    return env


def versions() -> dict[str, Any]:
    """Python, torch, triton, thermokern (and its git commit, CUDA archs) and the peers."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": _version("triton"),
        "thermokern": thermokern.__version__,
        "thermokern_git": _git_commit(),
        "thermokern_cuda_archs": list(_backend._C.cuda_archs()) if _backend.cuda_compiled() else None,
        "liger_kernel": _version("liger-kernel") or _version("liger_kernel"),
        "quack": _version("quack-kernels") or _version("quack"),
    }

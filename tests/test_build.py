"""What a machine without a GPU can check of the built CUDA kernels: their resource usage in
the extension's fatbinary (cuobjdump, no GPU needed)."""

from __future__ import annotations

import re
import subprocess

import pytest
from _util import triton_nvidia_tool

from thermokern import _backend

_C = _backend._C
STACK_LIMIT = 64  # bytes: a few values spilled around the loops, never an array


def resource_usage(arch: str) -> dict[str, dict[str, int]]:
    """{kernel (mangled): {"REG": .., "STACK": .., "SHARED": .., "LOCAL": ..}} of thermokern._C's
    kernels for ``arch`` (e.g. "sm_90")."""
    out = subprocess.run(
        [triton_nvidia_tool("cuobjdump"), "-res-usage", _C.__file__],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    usage: dict[str, dict[str, int]] = {}
    current_arch = function = None
    for line in out.splitlines():
        if m := re.match(r"arch = (sm_\d+)", line):
            current_arch = m.group(1)
        elif m := re.match(r"\s*Function (\S+):", line):
            function = m.group(1)
        elif function and current_arch == arch and "REG:" in line:
            usage[function] = {k: int(v) for k, v in re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", line)}
            function = None
    return usage


@pytest.mark.skipif(not _backend.cuda_compiled(), reason="the CUDA kernels were not compiled")
@pytest.mark.skipif(triton_nvidia_tool("cuobjdump") is None, reason="no cuobjdump (Triton's) here")
def test_cuda_kernels_keep_their_data_in_registers():
    """Every kernel, for every compiled arch: no local-memory array and a stack frame of at
    most STACK_LIMIT bytes (a kernel whose loop spills pays local-memory traffic on every
    element). Today 4 of the 163 sm_90 kernels have a frame (8-40 bytes, the partition row
    kernels' set-up and epilogue under their 64-register launch bound)."""
    archs = [f"sm_{a}" for a in _C.cuda_archs()]
    for arch in archs:
        usage = resource_usage(arch)
        assert usage, f"no {arch} kernels found in {_C.__file__}"
        bad = {f: u for f, u in usage.items() if u["LOCAL"] or u["STACK"] > STACK_LIMIT}
        assert not bad, f"{arch}: kernels with local memory or a large stack frame: {bad}"

"""Tolerances and helpers shared by the tests."""

from __future__ import annotations

import contextlib
import functools

import torch
from torch.utils._python_dispatch import TorchDispatchMode

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]

# (atol, rtol) of an op's output against the float64 reference evaluated on the same
# (already rounded) input. 16-bit outputs are rounded to their dtype: a few ulps of it.
TOLERANCES = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (3e-5, 3e-5),  # exp_u20 on CPU (~20 ulp) and __expf on CUDA
    torch.float16: (2e-3, 2e-3),  # 2 ulp of float16 around 1..10
    torch.bfloat16: (1.6e-2, 1.6e-2),  # 2 ulp of bfloat16
}

# Gradients: atol is relative to the largest reference gradient magnitude.
GRAD_TOLERANCES = {
    torch.float64: (1e-9, 1e-9),
    torch.float32: (5e-5, 5e-5),
    torch.float16: (4e-3, 4e-3),
    torch.bfloat16: (2e-2, 2e-2),
}


def assert_close(
    actual: torch.Tensor,
    expected: torch.Tensor,
    dtype: torch.dtype,
    grad: bool = False,
    native: torch.Tensor | None = None,
    grad_scale: float = 1.0,
) -> None:
    """Compare with per-dtype tolerances; NaN never matches anything but NaN at the same place.

    ``native``: the same quantity computed by PyTorch itself at the input's precision. When
    given, each element may also be off by up to 4x PyTorch's own error there (the round-off
    that any implementation at this precision pays, e.g. float16 subnormal gradients).
    ``grad_scale``: the natural size of the gradient entries (1/T times the upstream gradient
    for the entropy); gradients get an absolute floor of 32 ulp of the accumulation dtype at
    that size, the round-off of log p + H even in exact-input float64.
    """
    atol, rtol = (GRAD_TOLERANCES if grad else TOLERANCES)[dtype]
    expected = expected.double()
    actual = actual.double()
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if grad and expected.numel():
        finite = expected[torch.isfinite(expected)]
        atol = atol * max(finite.abs().max().item() if finite.numel() else 0.0, 1e-30)
        acc_eps = torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).eps
        atol = max(atol, 32 * acc_eps * grad_scale)
    allowed = atol + rtol * expected.abs()
    if native is not None:
        native_err = (native.double() - expected).abs()
        allowed = allowed + 4 * torch.nan_to_num(native_err, nan=0.0, posinf=0.0)
    both_nan = torch.isnan(actual) & torch.isnan(expected)
    same_inf = torch.isinf(expected) & (actual == expected)
    # An infinite expected value must be matched exactly (rtol * inf would admit anything).
    close = torch.isfinite(expected) & ((actual - expected).abs() <= allowed)
    ok = both_nan | same_inf | close
    if not bool(ok.all()):
        bad = (~ok).nonzero()[:5].tolist()
        err = (actual - expected).abs()
        raise AssertionError(
            f"{int((~ok).sum())}/{ok.numel()} elements differ beyond tolerance for {dtype} "
            f"(atol={atol:.3g}, rtol={rtol:.3g}); first at {bad}: actual "
            f"{[actual[tuple(i)].item() for i in bad]} expected {[expected[tuple(i)].item() for i in bad]}; "
            f"max err {torch.nan_to_num(err, nan=float('inf')).max().item():.3g}"
        )


@contextlib.contextmanager
def gpu_launch_sizes():
    """Within: the Triton launchers pick the block sizes, tiles and program counts they use on a
    GPU instead of the interpreter's few large programs (every ``_interpreting`` of
    thermokern.kernels answers False), while the kernels still run through the interpreter, so
    that the GPU's multi-block loops, partial tiles and the backward's split of R run here."""
    import importlib
    import pkgutil

    import pytest

    from thermokern import kernels

    with pytest.MonkeyPatch.context() as mp:
        for info in pkgutil.iter_modules(kernels.__path__):
            module = importlib.import_module(f"thermokern.kernels.{info.name}")
            if hasattr(module, "_interpreting"):
                mp.setattr(module, "_interpreting", lambda: False)
        yield


def run_offline_triton_compile(script: str) -> None:
    """Run ``script`` (which compiles Triton kernels for a GPU target, without a GPU, and
    prints "ok") in a subprocess with the interpreter off; skip when this machine has no Triton
    CUDA toolchain."""
    import os
    import subprocess
    import sys

    import pytest

    # The script may import this module (compile_sm90, sm90_dtypes).
    path = [os.path.dirname(os.path.abspath(__file__)), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, TRITON_INTERPRET="0", PYTHONPATH=os.pathsep.join(p for p in path if p))
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    if proc.returncode != 0 and (
        "ptxas" in proc.stderr or "No module named 'triton.backends.nvidia'" in proc.stderr
    ):
        pytest.skip(f"no Triton CUDA toolchain here: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


def sm90_dtypes() -> tuple:
    """(element pointer type, accumulator pointer type, ACC) of the Triton kernels for float32,
    bfloat16 and float64 inputs."""
    import triton.language as tl

    return (("*fp32", "*fp32", tl.float32), ("*bf16", "*fp32", tl.float32), ("*fp64", "*fp64", tl.float64))


def compile_sm90(
    kernel,
    consts: dict,
    types: dict | None = None,
    *,
    ptr: str = "*i64",
    scalar: str = "i64",
    aligned: bool = False,
    **options,
):
    """Compile a Triton kernel for sm_90 without a GPU (in a run_offline_triton_compile script):
    ``consts`` are its constexpr arguments and ``types`` the types of named parameters; any
    other parameter is ``ptr`` if its name ends in ``_ptr``, else ``scalar``. ``aligned``: every
    pointer 16-byte aligned and every integer a multiple of 16, the specialisation Triton gives
    a GPU launch with such arguments (the vector loads of large aligned tensors). ``options`` go
    to triton.compile (e.g. num_warps). Returns the compiled kernel."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    def type_of(name):
        if name in consts:
            return "constexpr"
        return (types or {}).get(name, ptr if name.endswith("_ptr") else scalar)

    sig = {p.name: type_of(p.name) for p in kernel.params}
    attrs = None
    if aligned:
        divisible = [i for i, t in enumerate(sig.values()) if t.startswith("*") or t in ("i32", "i64")]
        attrs = {(i,): [["tt.divisibility", 16]] for i in divisible}
    return triton.compile(
        ASTSource(kernel, sig, consts, attrs), target=GPUTarget("cuda", 90, 32), options=options or None
    )


def vector_accesses(compiled) -> tuple[int, int]:
    """(vector loads, vector stores) in a compiled kernel's PTX: ``ld/st.global...v2/v4``, the
    wide accesses a bandwidth-bound kernel needs (compile with ``aligned=True`` to get them)."""
    import re

    ptx = compiled.asm["ptx"]
    return tuple(
        len(re.findall(rf"{op}\.global(?:\.[A-Za-z0-9_:]+)*\.v[24]\.b(?:16|32|64)", ptx))
        for op in ("ld", "st")
    )


def triton_nvidia_tool(name: str) -> str | None:
    """The path of a CUDA tool Triton ships (``ptxas``, ``cuobjdump``; the CUDA toolkit's may be
    absent), or None without Triton or the tool."""
    import os

    try:
        import triton
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
    return path if os.path.exists(path) else None


def spill_bytes(compiled) -> int:
    """Bytes of register spill stores of a kernel from :func:`compile_sm90`, by Triton's own
    ptxas (a Triton without one raises, which run_offline_triton_compile reports as a skip)."""
    import os
    import re
    import subprocess
    import tempfile

    ptxas = triton_nvidia_tool("ptxas")
    if ptxas is None:
        raise FileNotFoundError("no ptxas in Triton's backends/nvidia/bin")
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        with open(src, "w") as f:
            f.write(compiled.asm["ptx"])
        r = subprocess.run(
            [ptxas, "-arch=sm_90a", "-v", src, "-o", os.path.join(d, "k.cubin")],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    return int(re.search(r"(\d+) bytes spill stores", r.stdout + r.stderr).group(1))


def counters(t: torch.Tensor) -> int:
    """Philox counters a tensor takes (4 elements each)."""
    return (t.numel() + 3) // 4


def counter_starts(params) -> tuple[list[int], int]:
    """The first Philox counter of each tensor when they take consecutive counters (as SGLD's
    tensors do), and the number of counters they take in all."""
    starts, s = [], 0
    for p in params:
        starts.append(s)
        s += counters(p)
    return starts, s


def triton_randint4x(seed: int, offset: int, n: int) -> torch.Tensor:
    """Triton's own ``tl.randint4x(seed, offset + i)`` for i < n (a Python int seed, as users
    call it), run through a kernel on CPU tensors: an (n, 4) int64 tensor of the uint32 words."""
    import triton

    block = triton.next_power_of_2(n)
    out = torch.empty(block * 4, dtype=torch.int32)
    _randint4x_kernel()[(1,)](out, seed, offset, N=block)
    return out.to(torch.int64).reshape(block, 4)[:n] & 0xFFFFFFFF


@functools.cache
def _randint4x_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def randint4x(out_ptr, seed, offset, N: tl.constexpr):
        i = tl.arange(0, N)
        r0, r1, r2, r3 = tl.randint4x(seed, offset + i.to(tl.int64))
        tl.store(out_ptr + i * 4 + 0, r0)
        tl.store(out_ptr + i * 4 + 1, r1)
        tl.store(out_ptr + i * 4 + 2, r2)
        tl.store(out_ptr + i * 4 + 3, r3)

    return randint4x


class LargestTensor(TorchDispatchMode):
    """The largest storage (in elements) any op creates while the mode is active: memory, not
    views (an expand is free). Used to show that an op never holds an (N, V) buffer. Also
    keeps the shape of every tensor an op returned in new memory (``shapes``: no views of its
    arguments, no expanded views)."""

    def __init__(self):
        super().__init__()
        self.largest = 0
        self.shapes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {
            a.untyped_storage().data_ptr()
            for a in torch.utils._pytree.tree_leaves((args, kwargs))
            if isinstance(a, torch.Tensor)
        }
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                self.largest = max(self.largest, storage.nbytes() // t.element_size())
                if storage.data_ptr() not in inputs and storage.nbytes() >= t.numel() * t.element_size():
                    self.shapes.append(tuple(t.shape))
        return out

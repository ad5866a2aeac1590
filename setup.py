"""Build script for thermokern.

Builds the pybind11 extension ``thermokern._C``, which registers ``TORCH_LIBRARY(thermokern)``:
the C++ CPU kernels always, the CUDA kernels when nvcc and a CUDA build of torch are present.

Environment variables:
  THERMOKERN_CUDA=0|1        force the CUDA kernels off / on (default: auto-detect; a GPU is
                             not needed to compile them).
  THERMOKERN_CUDA_ARCHS      semicolon list of SM versions (default "80;90"); "90" also embeds
                             compute_90 PTX so newer GPUs can JIT it.
  CUDA_HOME                  CUDA toolkit; defaults to /usr/local/cuda when that has nvcc.
  MAX_JOBS                   parallel compile jobs (default: cores, capped by memory).
"""

from __future__ import annotations

import glob
import os
import platform
import shutil
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))

# torch guesses CUDA_HOME from `which nvcc`, which a wrapper script can mislead; prefer the
# standard toolkit location before torch.utils.cpp_extension reads the environment.
if not os.environ.get("CUDA_HOME") and os.path.exists("/usr/local/cuda/bin/nvcc"):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"

try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError:  # pragma: no cover - a clear message beats a traceback
    sys.exit(
        "thermokern needs PyTorch at build time: `pip install torch` first, then "
        "`pip install --no-build-isolation .` (`make test` and `make bench` do both)."
    )


def _env_flag(name: str) -> bool | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    return value.strip().lower() not in ("0", "false", "no", "off")


def _want_cuda() -> bool:
    forced = _env_flag("THERMOKERN_CUDA")
    available = bool(torch.version.cuda) and CUDA_HOME is not None
    if forced is True and not available:
        sys.exit(
            "THERMOKERN_CUDA=1 but no CUDA toolkit (CUDA_HOME) or CPU-only torch "
            f"(torch.version.cuda={torch.version.cuda}, CUDA_HOME={CUDA_HOME})"
        )
    return available if forced is None else forced


def _max_jobs() -> None:
    if "MAX_JOBS" in os.environ:
        return
    jobs = os.cpu_count() or 1
    try:  # nvcc on a .cu with ATen headers peaks near 1.5 GB; leave room for the rest.
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        jobs = max(1, min(jobs, int(mem_gb // 2)))
    except (ValueError, OSError):
        pass
    os.environ["MAX_JOBS"] = str(jobs)


def _extension():
    with_cuda = _want_cuda()
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    include_dirs = [os.path.join(ROOT, "csrc"), os.path.join(ROOT, "csrc", "include")]
    cxx = ["-O3", "-std=c++20", "-fvisibility=hidden", "-Wall", "-Wno-unused-function"]
    define_macros = [("TORCH_EXTENSION_NAME", "_C")]
    if sys.platform == "linux":
        cxx.append("-fopenmp")  # at::parallel_for uses torch's OpenMP thread pool
    if not with_cuda:
        ext = CppExtension(
            "thermokern._C",
            sources,
            include_dirs=include_dirs,
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx},
            extra_link_args=["-fopenmp"] if sys.platform == "linux" else [],
        )
        ext.isa_sources = ISA_SOURCES
        return ext
    archs = [a.strip() for a in os.environ.get("THERMOKERN_CUDA_ARCHS", "80;90").split(";") if a.strip()]
    nvcc = ["-O3", "-std=c++20", "--use_fast_math", "-lineinfo", "--expt-relaxed-constexpr"]
    for arch in archs:
        nvcc.append(f"-gencode=arch=compute_{arch},code=sm_{arch}")
    nvcc.append(f"-gencode=arch=compute_{archs[-1]},code=compute_{archs[-1]}")
    define_macros += [("THERMOKERN_WITH_CUDA", None), ("THERMOKERN_CUDA_ARCHS", f'"{";".join(archs)}"')]
    sources += sorted(glob.glob("csrc/cuda/*.cu"))
    ext = CUDAExtension(
        "thermokern._C",
        sources,
        include_dirs=include_dirs,
        define_macros=define_macros,
        extra_compile_args={"cxx": cxx, "nvcc": nvcc},
        extra_link_args=["-fopenmp"] if sys.platform == "linux" else [],
    )
    ext.isa_sources = ISA_SOURCES
    return ext


# Per-ISA builds of the CPU kernels (csrc/cpu/isa.h picks one at run time). Each file is
# compiled on its own with its ISA's flags so that nothing else in the extension is.
_X86 = platform.machine().lower() in ("x86_64", "amd64")
ISA_SOURCES = {
    "default": (["csrc/cpu/isa/kernels_default.cpp"], []),
}
if _X86:
    ISA_SOURCES["avx2"] = (["csrc/cpu/isa/kernels_avx2.cpp"], ["-mavx2", "-mfma", "-mf16c"])
    ISA_SOURCES["avx512"] = (
        ["csrc/cpu/isa/kernels_avx512.cpp"],
        ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma", "-mf16c"],
    )


class BuildExt(BuildExtension):
    """BuildExtension that first compiles the per-ISA kernel files with their own flags."""

    def build_extension(self, ext):
        isa_sources = getattr(ext, "isa_sources", None) or {}
        objects = []
        cxx = ext.extra_compile_args["cxx"] if isinstance(ext.extra_compile_args, dict) else ext.extra_compile_args
        for name, (srcs, flags) in isa_sources.items():
            objects += self.compiler.compile(
                srcs,
                output_dir=os.path.join(self.build_temp, "isa-" + name),
                macros=ext.define_macros,
                include_dirs=ext.include_dirs,
                debug=self.debug,
                extra_postargs={"cxx": list(cxx) + flags, "nvcc": []},
                depends=ext.depends,
            )
        ext.extra_objects = list(ext.extra_objects or []) + objects
        super().build_extension(ext)


_max_jobs()
if shutil.which("ninja") is None:
    print("thermokern: ninja not found, falling back to a slow serial build", file=sys.stderr)

setup(
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExt.with_options(use_ninja=shutil.which("ninja") is not None)},
)

"""Build script for thermokern.

Builds the pybind11 extension ``thermokern._C``, which registers ``TORCH_LIBRARY(thermokern)``:
the C++ CPU kernels always, the CUDA kernels when nvcc and a CUDA build of torch are present.

Environment variables:
  THERMOKERN_CUDA=0|1        force the CUDA kernels off / on (default: auto-detect; a GPU is
                             not needed to compile them).
  THERMOKERN_CUDA_ARCHS      semicolon list of SM versions (default "80;90", csrc/build.json);
                             "90" also embeds compute_90 PTX so newer GPUs can JIT it.
  CUDA_HOME                  CUDA toolkit; defaults to /usr/local/cuda when that has nvcc.
  MAX_JOBS                   parallel compile jobs (default: cores, capped by memory).

Sources and flags come from csrc/build.json, which CMakeLists.txt reads too: change them there.
With ninja, every source (the per-ISA CPU files with their own flags included) compiles in one
ninja run, MAX_JOBS at a time (BuildExt).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import platform
import re
import shutil
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
# The one list of sources and flags (CMakeLists.txt reads it too).
with open(os.path.join(ROOT, "csrc", "build.json"), encoding="utf-8") as f:
    BUILD = json.load(f)

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


def _sources(patterns: list[str]) -> list[str]:
    return sorted(path for pattern in patterns for path in glob.glob(pattern))


def _isa_flags() -> dict[str, list[str]]:
    """The per-ISA CPU kernel files of this machine and their extra flags (csrc/cpu/isa.h)."""
    machine = platform.machine().lower()
    return {
        isa["source"]: isa["flags"]
        for isa in BUILD["isa"]
        if not isa["machines"] or machine in [m.lower() for m in isa["machines"]]
    }


def _extension():
    with_cuda = _want_cuda()
    sources = sorted(_sources(BUILD["cxx_sources"]) + [BUILD["bindings_source"]])
    include_dirs = [os.path.join(ROOT, d) for d in BUILD["include_dirs"]]
    cxx = list(BUILD["cxx_flags"])
    define_macros = [tuple(d.split("=", 1)) if "=" in d else (d, None) for d in BUILD["defines"]]
    link = []
    if sys.platform == "linux":
        cxx += BUILD["linux_flags"]  # -fopenmp: at::parallel_for uses torch's OpenMP thread pool
        link += BUILD["linux_flags"]
    kwargs = {"include_dirs": include_dirs, "define_macros": define_macros, "extra_link_args": link}
    if not with_cuda:
        ext = CppExtension("thermokern._C", sources, extra_compile_args={"cxx": cxx}, **kwargs)
    else:
        archs = os.environ.get("THERMOKERN_CUDA_ARCHS") or BUILD["cuda_archs"]
        archs = [a.strip() for a in archs.split(";") if a.strip()]
        nvcc = list(BUILD["nvcc_flags"])
        for arch in archs:
            nvcc.append(f"-gencode=arch=compute_{arch},code=sm_{arch}")
        nvcc.append(f"-gencode=arch=compute_{archs[-1]},code=compute_{archs[-1]}")
        define_macros += [("THERMOKERN_WITH_CUDA", None), ("THERMOKERN_CUDA_ARCHS", f'"{";".join(archs)}"')]
        sources += _sources(BUILD["cuda_sources"])
        ext = CUDAExtension("thermokern._C", sources, extra_compile_args={"cxx": cxx, "nvcc": nvcc}, **kwargs)
    ext.isa_flags = _isa_flags()
    return ext


@contextlib.contextmanager
def _ninja_edits(flags: dict[str, list[str]]):
    """Edits the ninja files torch.utils.cpp_extension writes meanwhile: appends flags[source] to
    the C++ flags of that source's build statement (a per-statement `post_cflags` binding), and
    puts the longest compiles first.

    torch compiles every source of an extension with the same flags; this wraps its (private)
    ninja-file writer so that the per-ISA files can join the one ninja run of the extension.
    """
    from torch.utils import cpp_extension

    wanted = {os.path.abspath(src): extra for src, extra in flags.items()}
    write = cpp_extension._write_ninja_file
    statement = re.compile(r"^build (.+): (compile|cuda_compile) (.+)$")

    def source(line: str) -> str:
        return os.path.abspath(statement.match(line).group(3).replace("$ ", " ").replace("$:", ":"))

    def order(block: list[str]) -> int:
        # Ninja starts the ready statements in file order (torch writes them sorted by path) when
        # it has no timings of an earlier build, as in pip's fresh build directory: the .cu files
        # first, then the per-ISA kernels (the longest C++ ones, kernels_avx512.cpp ~20-30 s on
        # the 2-core CI machine), so that the short ones fill the cores at the end.
        if statement.match(block[0]).group(2) == "cuda_compile":
            return 0
        return 1 if source(block[0]) in wanted else 2

    def write_edited(*args, **kwargs):
        write(*args, **kwargs)
        path = kwargs["path"] if "path" in kwargs else args[0]
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        # The build statements of the sources: consecutive, each with its indented bindings.
        first = next((i for i, line in enumerate(lines) if statement.match(line)), len(lines))
        end, blocks = first, []
        while end < len(lines) and statement.match(lines[end]):
            blocks.append([lines[end]])
            end += 1
            while end < len(lines) and lines[end].startswith("  "):
                blocks[-1].append(lines[end])
                end += 1
        found = set()
        for block in blocks:
            src = source(block[0])
            if src in wanted:
                if wanted[src]:
                    block.append("  post_cflags = $post_cflags " + " ".join(wanted[src]))
                found.add(src)
        if found != set(wanted):
            raise RuntimeError(
                f"thermokern: no build statement for {sorted(set(wanted) - found)} in {path}; "
                "torch's ninja file format changed (setup.py, _ninja_edits)"
            )
        blocks.sort(key=order)  # stable
        lines[first:end] = [line for block in blocks for line in block]
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")

    cpp_extension._write_ninja_file = write_edited
    try:
        yield
    finally:
        cpp_extension._write_ninja_file = write


class BuildExt(BuildExtension):
    """BuildExtension that also compiles the per-ISA CPU kernel files, each with its ISA's flags.

    With ninja they join the extension's sources in its one ninja run (their flags attached to
    their own build statements), so that all sources compile in parallel, MAX_JOBS at a time.
    Without ninja they compile one after the other before the rest (the slow fallback).
    """

    def build_extension(self, ext):
        isa_flags = getattr(ext, "isa_flags", None) or {}
        if self.use_ninja:
            ext.sources = list(ext.sources) + [src for src in isa_flags if src not in ext.sources]
            with _ninja_edits(isa_flags):
                return super().build_extension(ext)
        cxx = ext.extra_compile_args["cxx"]
        objects = []
        for src, flags in isa_flags.items():
            objects += self.compiler.compile(
                [src],
                output_dir=self.build_temp,
                macros=ext.define_macros,
                include_dirs=ext.include_dirs,
                debug=self.debug,
                extra_postargs={"cxx": list(cxx) + flags, "nvcc": []},
                depends=ext.depends,
            )
        ext.extra_objects = list(ext.extra_objects or []) + objects
        return super().build_extension(ext)


_max_jobs()
if shutil.which("ninja") is None:
    print("thermokern: ninja not found, falling back to a slow serial build", file=sys.stderr)

setup(
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExt.with_options(use_ninja=shutil.which("ninja") is not None)},
)

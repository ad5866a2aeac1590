"""Backend names, availability and the ``backend="auto"`` choice.

Backends:
  ``cpu``       C++ kernels (at::vec, at::parallel_for) in ``thermokern._C``, CPU tensors.
  ``cuda``      CUDA C++ kernels in ``thermokern._C`` (compiled when the build found nvcc).
  ``triton``    Triton kernels in ``thermokern.kernels``: CUDA tensors, or CPU tensors when the
                Triton interpreter is on (``TRITON_INTERPRET=1`` set before triton is imported).
  ``reference`` pure PyTorch (``thermokern.reference``), any device, the ground truth in tests.

``backend="auto"`` takes ``THERMOKERN_BACKEND`` when it is set, else ``cpu`` for CPU tensors and
``cuda`` (``triton`` when the CUDA kernels were not built) for CUDA tensors.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import NamedTuple

import torch

BACKENDS = ("cpu", "cuda", "triton", "reference")

try:  # the extension registers torch.ops.thermokern.* when imported
    from thermokern import _C  # type: ignore[attr-defined]

    _C_ERROR: str | None = None
except ImportError as exc:  # pragma: no cover - only without a build
    _C = None
    _C_ERROR = f"thermokern._C failed to import ({exc}); rebuild with `pip install --no-build-isolation -e .`"


class BackendInfo(NamedTuple):
    """Whether a backend can run here, on which devices, and why not otherwise."""

    available: bool
    devices: tuple[str, ...]
    reason: str


def triton_interpret() -> bool:
    """Whether the Triton interpreter (CPU execution of Triton kernels) is switched on."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _triton_findable() -> bool:
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):  # sys.modules["triton"] is None, or a broken entry
        return False


# Fixed for the life of the process; read at import so that backend resolution inside a
# torch.compile'd function is plain Python on constants (dynamo cannot trace into _C).
_TRITON_FINDABLE = _triton_findable()
_CUDA_COMPILED = _C is not None and bool(_C.cuda_compiled())


@functools.lru_cache(maxsize=1)
def _triton_import_error() -> str | None:
    if not _TRITON_FINDABLE:
        return "triton is not installed (pip install triton)"
    try:
        import triton
        import triton.language  # noqa: F401
    except ImportError as exc:
        if getattr(exc, "name", None) == "triton":
            return "triton is not installed (pip install triton)"
        return f"triton failed to import: {exc}"
    except Exception as exc:  # noqa: BLE001 - a broken triton install must not break import
        return f"triton failed to import: {exc}"
    return None


def poison_outputs_enabled() -> bool:
    """Whether ops fill new outputs with NaN before their kernels run (a test aid)."""
    return _C is not None and bool(_C._poison_outputs())


def cuda_compiled() -> bool:
    return _CUDA_COMPILED


def _can_run(name: str, kind: str) -> bool:
    """Fast availability check used on every call (traceable by torch.compile)."""
    if name == "reference":
        return True
    if name == "cpu":
        return _C is not None and kind == "cpu"
    if name == "cuda":
        return _CUDA_COMPILED and kind == "cuda" and torch.cuda.is_available()
    if name == "triton":
        if not _TRITON_FINDABLE:
            return False
        if kind == "cuda":
            return torch.cuda.is_available()
        return kind == "cpu" and triton_interpret()
    return False


def available_backends() -> dict[str, BackendInfo]:
    """Report every backend: available or not, the devices it serves here, and why not.

    Returns:
        A dict from backend name to :class:`BackendInfo`.
    """
    gpu = torch.cuda.is_available()
    out: dict[str, BackendInfo] = {}
    if _C is None:
        out["cpu"] = BackendInfo(False, (), _C_ERROR or "thermokern._C is missing")
    else:
        out["cpu"] = BackendInfo(True, ("cpu",), f"C++ kernels, ISA {_C.cpu_isa()}")
    if _C is None:
        out["cuda"] = BackendInfo(False, (), _C_ERROR or "thermokern._C is missing")
    elif not _C.cuda_compiled():
        out["cuda"] = BackendInfo(
            False, (), "the CUDA kernels were not compiled (no nvcc or CPU-only torch at build time)"
        )
    elif not gpu:
        out["cuda"] = BackendInfo(
            False, (), "compiled (sm_" + ",sm_".join(_C.cuda_archs()) + ") but no GPU here"
        )
    else:
        out["cuda"] = BackendInfo(True, ("cuda",), "CUDA kernels for sm_" + ",sm_".join(_C.cuda_archs()))
    err = _triton_import_error()
    if err is not None:
        out["triton"] = BackendInfo(False, (), err)
    else:
        devices = (("cuda",) if gpu else ()) + (("cpu",) if triton_interpret() else ())
        if devices:
            how = "interpreter on CPU tensors" if devices == ("cpu",) else "Triton kernels"
            out["triton"] = BackendInfo(True, devices, how)
        else:
            out["triton"] = BackendInfo(
                False, (), "no GPU, and TRITON_INTERPRET=1 was not set for CPU execution"
            )
    out["reference"] = BackendInfo(True, ("cpu", "cuda"), "pure PyTorch")
    return out


def _device_kind(t: torch.Tensor) -> str:
    return "cuda" if t.device.type == "cuda" else t.device.type


def resolve_backend(backend: str, tensor: torch.Tensor) -> str:
    """Turn the user's ``backend`` argument into a backend that can run on ``tensor``.

    Raises:
        ValueError: unknown backend name.
        RuntimeError: the backend exists but cannot run on this tensor's device here.
    """
    if not isinstance(backend, str):
        raise TypeError(f"backend: expected a string, got {type(backend).__name__}")
    name = backend
    if name == "auto":
        name = os.environ.get("THERMOKERN_BACKEND", "") or "auto"
        if name not in BACKENDS and name != "auto":
            raise ValueError(f"THERMOKERN_BACKEND: expected one of {', '.join(BACKENDS)}, got {name!r}")
    if name not in BACKENDS and name != "auto":
        raise ValueError(f"backend: expected 'auto' or one of {', '.join(BACKENDS)}, got {backend!r}")
    kind = _device_kind(tensor)
    if name == "auto":
        if kind == "cpu":
            return "cpu" if _C is not None else "reference"
        if kind == "cuda":
            # No GPU measurement exists yet (bench/results/ holds CPU results only), so the
            # CUDA C++ kernels are the default for every op. Once bench/gpu_check.sh has run,
            # a per-op table chosen from bench/results/<gpu>-<date>.json belongs here.
            if cuda_compiled():
                return "cuda"
            if _TRITON_FINDABLE:
                return "triton"
        return "reference"
    if _can_run(name, kind):
        return name
    info = available_backends()[name]
    if not info.available:
        raise RuntimeError(f"backend: {name!r} is not available here: {info.reason}")
    if kind not in info.devices:
        raise RuntimeError(
            f"backend: {name!r} cannot run on {tensor.device.type} tensors here "
            f"(it serves: {', '.join(info.devices) or 'nothing'}; {info.reason})"
        )
    return name

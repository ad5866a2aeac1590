"""Providers: the implementations an op is timed with. thermokern's own backends (those
that run on the device), the eager PyTorch baseline and its ``torch.compile``, and adapters
for peer kernel libraries (Liger-Kernel, quack) where they have a comparable kernel."""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable

import torch

import thermokern

Fn = Callable[[torch.Tensor], torch.Tensor]


@dataclasses.dataclass
class Provider:
    """One implementation of an op.

    ``make()`` is called once per (shape, dtype, mode) case and returns ``fn(x) -> output``;
    ``compiled`` providers get their first call timed separately (compilation); ``inplace``
    ones write into ``x`` (the benchmark restores it before every call, untimed); ``exact=False``
    marks outputs that cannot match the reference (no error column).
    """

    name: str
    make: Callable[[], Fn]
    kind: str = "baseline"  # "thermokern" | "baseline" | "compiled" | "external"
    compiled: bool = False
    # fn updates its input in place: each call gets a fresh copy of the input (copied untimed)
    inplace: bool = False
    # False: the output is not comparable with the reference (e.g. noise from torch's own
    # generator), so no error is reported
    exact: bool = True


# ============================================================================ thermokern
def backends(device: str) -> tuple[list[str], list[str]]:
    """thermokern's backends to time on ``device``, and notes on the ones left out (why)."""
    kind = torch.device(device).type
    names: list[str] = []
    notes: list[str] = []
    for name, info in thermokern.available_backends().items():
        if name == "reference":
            continue  # the float64 ground truth, not a performance path
        if name == "triton" and kind == "cpu":
            notes.append(
                "triton: skipped on CPU; the Triton interpreter (TRITON_INTERPRET=1) runs kernels as "
                "numpy calls, a correctness tool rather than a performance path"
            )
            continue
        if info.available and kind in info.devices:
            names.append(name)
        elif kind == "cpu" and name == "cuda":
            continue  # a GPU backend on a CPU run needs no explanation
        else:
            notes.append(f"{name}: not run on {kind}: {info.reason}")
    return names, notes


def thermokern_provider(
    backend: str,
    fn: Callable[[torch.Tensor, str], torch.Tensor],
    *,
    name: str | None = None,
    inplace: bool = False,
) -> Provider:
    """thermokern's ``backend``: times ``fn(x, backend)``; named after the backend by default."""

    def make() -> Fn:
        return lambda x: fn(x, backend)

    return Provider(name or backend, make, kind="thermokern", inplace=inplace)


def thermokern_compile_provider(backend: str, fn: Callable[[torch.Tensor, str], torch.Tensor]) -> Provider:
    """``<backend>+compile``: :func:`compile_provider` of ``fn(x, backend)``, thermokern inside a
    compiled model."""
    return compile_provider(lambda x: fn(x, backend), name=f"{backend}+compile", kind="thermokern")


# ============================================================================ PyTorch baselines
def eager_provider(fn: Fn, *, inplace: bool = False, exact: bool = True) -> Provider:
    """``eager``: ``fn`` as written, the way one would do it in plain PyTorch."""
    return Provider("eager", lambda: fn, kind="baseline", inplace=inplace, exact=exact)


def compile_provider(
    fn: Callable[..., torch.Tensor],
    *,
    inplace: bool = False,
    exact: bool = True,
    name: str = "compile",
    kind: str = "compiled",
    args: Callable[[torch.Tensor], tuple] | None = None,
) -> Provider:
    """``compile`` (or ``name``): ``torch.compile(fn, dynamic=False)``, compiled afresh for
    every case; called as ``fn(x)``, or with ``args``, as ``fn(*args(x))`` with ``args`` run
    outside the compiled code (a spec's lookup of the tensors it drew with ``x``, which
    dynamo would guard on and recompile for every input copy)."""

    def make() -> Fn:
        torch._dynamo.reset()  # a fresh compile per case: honest compile times, no recompile limit
        compiled = torch.compile(fn, dynamic=False)
        return compiled if args is None else lambda x: compiled(*args(x))

    return Provider(name, make, kind=kind, compiled=True, inplace=inplace, exact=exact)


def standard_providers(
    device: str, thermokern_fn: Callable[[torch.Tensor, str], torch.Tensor], eager_fn: Fn
) -> tuple[list[Provider], list[str]]:
    """thermokern's backends running ``thermokern_fn(x, backend)``, ``eager_fn`` and its
    ``torch.compile``; with the notes of :func:`backends`."""
    names, notes = backends(device)
    providers = [thermokern_provider(b, thermokern_fn) for b in names]
    providers += [eager_provider(eager_fn), compile_provider(eager_fn)]
    return providers, notes


# ============================================================================ peer libraries
def liger_softmax() -> Fn:
    """Liger-Kernel's Triton softmax over the last dimension."""
    from liger_kernel.ops.softmax import LigerSoftmaxFunction

    return LigerSoftmaxFunction.apply


def quack_softmax() -> Fn:
    """quack's CuTe-DSL softmax over the last dimension."""
    from quack import softmax

    return softmax


# (provider name, module to look for, loader of its softmax)
SOFTMAX_PEERS: tuple[tuple[str, str, Callable[[], Fn]], ...] = (
    ("liger", "liger_kernel", liger_softmax),
    ("quack", "quack", quack_softmax),
)


def peer_softmax_providers(
    device: str, fn: Callable[[Fn, torch.Tensor], torch.Tensor], note: str
) -> tuple[list[Provider], list[str]]:
    """Peer libraries' softmax kernels (GPU only) used as ``fn(softmax, x)``.

    Returns their providers (named ``liger``, ``quack``) and notes: not installed, skipped
    off the GPU, or ``note`` (how the op is built from the peer's softmax) when run.
    """
    kind = torch.device(device).type
    providers: list[Provider] = []
    notes: list[str] = []
    for name, module, load in SOFTMAX_PEERS:
        if importlib.util.find_spec(module) is None:
            notes.append(f"{name}: not installed")
        elif kind != "cuda":
            notes.append(f"{name}: installed but GPU-only, skipped on {kind}")
        else:

            def make(load: Callable[[], Fn] = load) -> Fn:
                softmax = load()  # imported when the case runs, not at registration
                return lambda x: fn(softmax, x)

            providers.append(Provider(name, make, kind="external"))
            notes.append(f"{name}: {note}")
    return providers, notes

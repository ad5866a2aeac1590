"""Benchmark engine behind ``thermokern bench``: thermokern's backends against PyTorch baselines.

For every op in :data:`OPS` (a registry; each :class:`OpSpec` names its providers, how to make
inputs, the minimal bytes a kernel must move, and a float64 reference), every shape and dtype,
and both modes (``fwd`` and ``fwd+bwd``), :func:`run` times each provider, measures the error
against float64 and the peak extra memory, and puts the numbers next to a ``dst.copy_(src)``
of the input's size measured in the same run (the practical bandwidth ceiling).

Public API: :func:`run`, :func:`format_table`, :func:`parse_shape`, :func:`parse_dtype`, :data:`OPS`.

Timing:
  * CPU: wall clock (``time.perf_counter``) of single calls, repeated until both a minimum
    number of repetitions and a time budget are reached; median and 20/80 % quantiles.
  * CUDA: CUDA events around each call, ``torch.cuda.synchronize()`` before reading them.
  * Both: the input is rotated among several copies when one copy is smaller than about twice
    the last-level cache (L2 on GPUs, L3 on CPUs), so repeated calls do not read from cache.
    ``fwd+bwd`` clears the gradients (untimed) before each call.
  * ``compile`` is warmed up (compiled) before timing; the first call's time, compilation
    included, is reported separately as ``compile_s``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import gc
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TextIO

import torch

import thermokern
from thermokern import _backend, reference

__all__ = [
    "MODES",
    "OPS",
    "OpSpec",
    "Provider",
    "format_table",
    "make_calls",
    "max_abs_err",
    "measure_copy",
    "n_copies",
    "parse_dtype",
    "parse_shape",
    "result_of_call",
    "run",
]

MODES = ("fwd", "fwd+bwd")
SCHEMA = "thermokern-bench/1"

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "f32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "f16": torch.float16,
    "half": torch.float16,
    "float64": torch.float64,
    "fp64": torch.float64,
    "f64": torch.float64,
    "double": torch.float64,
}


# ============================================================================ parsing helpers
def parse_shape(text: str | Sequence[int]) -> tuple[int, ...]:
    """``"4096x32000"`` -> ``(4096, 32000)``; also accepts ``*`` or ``,`` as separator, or a tuple.

    Raises:
        ValueError: an empty, non-integer or non-positive dimension.
    """
    if not isinstance(text, str):
        dims = tuple(int(d) for d in text)
    else:
        parts = re.split(r"\s*[xX*,]\s*", text.strip())
        try:
            dims = tuple(int(p) for p in parts)  # an empty part ("4096x") fails here too
        except ValueError:
            raise ValueError(f"shape: expected something like 4096x32000, got {text!r}") from None
    if not dims or any(d <= 0 for d in dims):
        raise ValueError(f"shape: expected positive dimensions like 4096x32000, got {text!r}")
    return dims


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    """``"bf16"``/``"bfloat16"``/``torch.bfloat16`` -> ``torch.bfloat16`` (same for fp32, fp16, fp64)."""
    if isinstance(name, torch.dtype):
        return name
    key = str(name).strip().lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise ValueError(
            f"dtype: expected one of float32, bfloat16, float16, float64 (or fp32, bf16, ...), got {name!r}"
        )
    return _DTYPES[key]


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _shape_str(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


# ============================================================================ op registry
@dataclasses.dataclass
class Provider:
    """One implementation of an op.

    ``make()`` is called once per (shape, dtype, mode) case and returns ``fn(x) -> output``;
    ``compiled`` providers get their first call timed separately (compilation); ``inplace``
    ones write into ``x`` (the benchmark restores it before every call, untimed); ``exact=False``
    marks outputs that cannot match the reference (no error column).
    """

    name: str
    make: Callable[[], Callable[[torch.Tensor], torch.Tensor]]
    kind: str = "baseline"  # "thermokern" | "baseline" | "compiled" | "external"
    compiled: bool = False
    # fn updates its input in place: each call gets a fresh copy of the input (copied untimed)
    inplace: bool = False
    # False: the output is not comparable with the reference (e.g. noise from torch's own
    # generator), so no error is reported
    exact: bool = True


@dataclasses.dataclass
class OpSpec:
    """What the benchmark needs to know about one op.

    Attributes:
        name: the op's name (``thermokern.<name>``).
        providers: ``providers(device) -> (list[Provider], notes)``.
        make_input: ``make_input(shape, dtype, device, generator) -> tensor`` (the op's input).
        make_grad: ``make_grad(x, generator) -> tensor`` (upstream gradient of the output).
        min_bytes: ``min_bytes(shape, dtype, mode) -> int``, bytes a perfect kernel must move.
        input_bytes: ``input_bytes(shape, dtype) -> int`` (the copy-bandwidth baseline's size).
        reference_chunks: ``reference_chunks(x, grad, mode)`` yields ``(rows, float64 chunk)``
            over slices of the flattened rows: for ``fwd`` the output (``(r,)`` chunks), for
            ``fwd+bwd`` the input gradient (``(r, C)`` chunks); :meth:`reference` joins them.
        default_shapes: ``default_shapes(device, quick) -> list[tuple]``.
        default_dtypes: ``default_dtypes(device, quick) -> list[torch.dtype]``.
        params: fixed keyword arguments of the op in this benchmark (recorded in the JSON).
        modes: the modes this op is benchmarked in (a subset of :data:`MODES`).
        elementwise: the output has the input's shape (``fwd`` reference chunks are then flat
            slices of the elements) instead of one value per row.
        has_reference: whether outputs are compared with ``reference_chunks`` (a sampler's
            output depends on its random numbers: no error column).
    """

    name: str
    providers: Callable[[str], tuple[list[Provider], list[str]]]
    make_input: Callable[[tuple[int, ...], torch.dtype, str, torch.Generator], torch.Tensor]
    make_grad: Callable[[torch.Tensor, torch.Generator], torch.Tensor]
    min_bytes: Callable[[tuple[int, ...], torch.dtype, str], int]
    input_bytes: Callable[[tuple[int, ...], torch.dtype], int]
    reference_chunks: Callable[[torch.Tensor, torch.Tensor | None, str], Iterator[tuple[slice, torch.Tensor]]]
    default_shapes: Callable[[str, bool], list[tuple[int, ...]]]
    default_dtypes: Callable[[str, bool], list[torch.dtype]]
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    modes: tuple[str, ...] = MODES
    elementwise: bool = False
    has_reference: bool = True

    def reference(self, x: torch.Tensor, grad: torch.Tensor | None, mode: str) -> torch.Tensor:
        """float64 output (``fwd``, shaped like the op's output) or input gradient (``fwd+bwd``)."""
        out = torch.cat([chunk for _, chunk in self.reference_chunks(x, grad, mode)])
        return out.reshape(x.shape[:-1]) if mode == "fwd" and not self.elementwise else out.reshape(x.shape)


# ----------------------------------------------------------------------------- softmax_entropy
_TEMPERATURE = 1.0
_LOGIT_SCALE = 2.0  # logits ~ N(0, 2^2): peaked enough to resemble LM logits, no underflow issues


def _eager_softmax_entropy(x: torch.Tensor, temperature: float = _TEMPERATURE) -> torch.Tensor:
    """The natural PyTorch way: log_softmax, then -(p * log p).sum."""
    lp = torch.log_softmax(x / temperature, -1)
    return -(lp.exp() * lp).sum(-1)


def _thermokern_provider(backend: str) -> Provider:
    def make():
        def fn(x):
            return thermokern.softmax_entropy(x, -1, temperature=_TEMPERATURE, backend=backend)

        return fn

    return Provider(backend, make, kind="thermokern")


def _compile_provider(fn: Callable) -> Provider:
    def make():
        torch._dynamo.reset()  # a fresh compile per case: honest compile times, no recompile limit
        return torch.compile(fn, dynamic=False)

    return Provider("compile", make, kind="compiled", compiled=True)


def _liger_provider() -> Provider:
    def make():
        from liger_kernel.ops.softmax import LigerSoftmaxFunction

        def fn(x):
            p = LigerSoftmaxFunction.apply(x / _TEMPERATURE)
            return torch.special.entr(p).sum(-1)

        return fn

    return Provider("liger", make, kind="external")


def _quack_provider() -> Provider:
    def make():
        from quack import softmax as quack_softmax

        def fn(x):
            p = quack_softmax(x / _TEMPERATURE)
            return torch.special.entr(p).sum(-1)

        return fn

    return Provider("quack", make, kind="external")


def _softmax_entropy_providers(device: str) -> tuple[list[Provider], list[str]]:
    kind = torch.device(device).type
    providers: list[Provider] = []
    notes: list[str] = []
    for name, info in _backend.available_backends().items():
        if name == "reference":
            continue  # the float64 ground truth, not a performance path
        if name == "triton" and kind == "cpu":
            notes.append(
                "triton: skipped on CPU; the Triton interpreter (TRITON_INTERPRET=1) runs kernels as "
                "numpy calls, a correctness tool rather than a performance path"
            )
            continue
        if info.available and kind in info.devices:
            providers.append(_thermokern_provider(name))
        elif kind == "cpu" and name == "cuda":
            continue  # a GPU backend on a CPU run needs no explanation
        else:
            notes.append(f"{name}: not run on {kind}: {info.reason}")
    providers.append(Provider("eager", lambda: _eager_softmax_entropy, kind="baseline"))
    providers.append(_compile_provider(_eager_softmax_entropy))
    for name, module, maker in (
        ("liger", "liger_kernel", _liger_provider),
        ("quack", "quack", _quack_provider),
    ):
        if importlib.util.find_spec(module) is None:
            notes.append(f"{name}: not installed")
        elif kind != "cuda":
            notes.append(f"{name}: installed but GPU-only, skipped on {kind}")
        else:
            providers.append(maker())
            notes.append(
                f"{name}: has no fused softmax-entropy kernel; timed as its softmax kernel followed by "
                "torch.special.entr(p).sum(-1)"
            )
    return providers, notes


def _softmax_entropy_input(shape, dtype, device, gen) -> torch.Tensor:
    x = torch.randn(shape, generator=gen, device=device, dtype=torch.float32) * _LOGIT_SCALE
    return x.to(dtype)


def _input_bytes(shape, dtype) -> int:
    """Bytes of one input tensor of ``shape`` and ``dtype`` (the copy-bandwidth baseline's size)."""
    return math.prod(shape) * torch.empty((), dtype=dtype).element_size()


def _row_grad(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(x.shape[:-1], generator=gen, device=x.device, dtype=torch.float32).to(x.dtype)


def _softmax_entropy_min_bytes(shape, dtype, mode) -> int:
    elt = torch.empty((), dtype=dtype).element_size()
    n_rows = math.prod(shape[:-1])
    total = math.prod(shape)
    if mode == "fwd":
        return (total + n_rows) * elt  # read the logits once, write one value per row
    # forward reads the logits; backward reads them again and writes the gradient
    # (the per-row entropy, lse and upstream gradient are ignored: C times smaller).
    return 3 * total * elt


def _softmax_entropy_reference_chunks(x: torch.Tensor, grad: torch.Tensor | None, mode: str):
    """float64 entropy (``fwd``) or gradient (``fwd+bwd``) of row chunks, by PyTorch autograd on
    :func:`thermokern.reference.softmax_entropy`; chunks bound the float64 temporaries."""
    rows = x.detach().reshape(-1, x.shape[-1])
    g_rows = grad.reshape(-1) if grad is not None else None
    budget = (1 << 26) if rows.is_cuda else (1 << 23)  # float64 elements per chunk
    step = max(1, budget // rows.shape[1])
    for r0 in range(0, rows.shape[0], step):
        sl = slice(r0, r0 + step)
        chunk = rows[sl].to(torch.float64)
        if mode == "fwd":
            yield sl, reference.softmax_entropy(chunk, -1, temperature=_TEMPERATURE)
        else:
            chunk.requires_grad_(True)
            h = reference.softmax_entropy(chunk, -1, temperature=_TEMPERATURE)
            h.backward(g_rows[sl].to(torch.float64))
            yield sl, chunk.grad


def _softmax_entropy_shapes(device: str, quick: bool) -> list[tuple[int, ...]]:
    if torch.device(device).type == "cuda":
        if quick:
            return [(16384, 32000), (4096, 131072)]
        return [(16384, 32000), (4096, 131072), (16384, 131072)]
    if quick:
        return [(4096, 32000)]
    return [(4096, 32000), (1024, 4096), (256, 131072)]


def _softmax_entropy_dtypes(device: str, quick: bool) -> list[torch.dtype]:
    if torch.device(device).type == "cuda":
        return [torch.bfloat16] if quick else [torch.bfloat16, torch.float32]
    return [torch.float32]


# ----------------------------------------------------------------------------- entropy CE
_CE_BETA = 0.1
_CE_TARGETS: dict[tuple, torch.Tensor] = {}  # (shape, device) -> targets, made with the input


def _ce_target(x: torch.Tensor) -> torch.Tensor:
    return _CE_TARGETS[(tuple(x.shape), str(x.device))]


def _ce_input(shape, dtype, device, gen) -> torch.Tensor:
    x = _softmax_entropy_input(shape, dtype, device, gen)
    n_rows = math.prod(shape[:-1])
    t = torch.randint(0, shape[-1], (n_rows,), generator=gen, device=device).reshape(shape[:-1])
    _CE_TARGETS[(tuple(x.shape), str(x.device))] = t
    return x


def _eager_cross_entropy(x: torch.Tensor) -> torch.Tensor:
    """The natural PyTorch way: F.cross_entropy minus beta times -(p * log p).sum."""
    t = _ce_target(x)
    ce = torch.nn.functional.cross_entropy(x.flatten(0, -2).float(), t.flatten(), reduction="none")
    lp = torch.log_softmax(x.float(), -1)
    h = -(lp.exp() * lp).sum(-1)
    return ce.reshape(t.shape) - _CE_BETA * h


def _thermokern_ce_provider(backend: str) -> Provider:
    def make():
        def fn(x):
            return thermokern.entropy_regularized_cross_entropy(
                x, _ce_target(x), entropy_weight=_CE_BETA, reduction="none", backend=backend
            )

        return fn

    return Provider(backend, make, kind="thermokern")


def _cross_entropy_providers(device: str) -> tuple[list[Provider], list[str]]:
    base, notes = _softmax_entropy_providers(device)
    providers = [_thermokern_ce_provider(p.name) for p in base if p.kind == "thermokern"]
    providers.append(Provider("eager", lambda: _eager_cross_entropy, kind="baseline"))
    providers.append(_compile_provider(_eager_cross_entropy))
    notes = [n for n in notes if not n.startswith(("liger", "quack"))]
    notes.append("liger/quack: no entropy-regularised cross-entropy to compare with")
    return providers, notes


def _cross_entropy_reference_chunks(x: torch.Tensor, grad: torch.Tensor | None, mode: str):
    rows = x.detach().reshape(-1, x.shape[-1])
    t = _ce_target(x).reshape(-1)
    g_rows = grad.reshape(-1) if grad is not None else None
    budget = (1 << 26) if rows.is_cuda else (1 << 23)
    step = max(1, budget // rows.shape[1])
    for r0 in range(0, rows.shape[0], step):
        sl = slice(r0, r0 + step)
        chunk = rows[sl].to(torch.float64)
        kw = {"entropy_weight": _CE_BETA, "reduction": "none"}
        if mode == "fwd":
            yield sl, reference.entropy_regularized_cross_entropy(chunk, t[sl], **kw)
        else:
            chunk.requires_grad_(True)
            reference.entropy_regularized_cross_entropy(chunk, t[sl], **kw).backward(g_rows[sl].double())
            yield sl, chunk.grad


def _cross_entropy_shapes(device: str, quick: bool) -> list[tuple[int, ...]]:
    if torch.device(device).type == "cuda":
        return [(16384, 131072)] if quick else [(16384, 32000), (16384, 131072)]
    return [(8192, 32000)] if not quick else [(2048, 32000)]  # --quick: under 3 minutes in all


def _cross_entropy_dtypes(device: str, quick: bool) -> list[torch.dtype]:
    if torch.device(device).type == "cuda":
        return [torch.bfloat16] if quick else [torch.bfloat16, torch.float32]
    return [torch.float32]


# ----------------------------------------------------------------------------- partition functions
_THERMO_T = 1.0


def _generic_providers(device: str, thermokern_fn, eager_fn) -> tuple[list[Provider], list[str]]:
    """thermokern backends running ``thermokern_fn(x, backend)``, eager ``eager_fn``, its compile."""
    base, notes = _softmax_entropy_providers(device)
    providers = []
    for p in base:
        if p.kind != "thermokern":
            continue

        def make(backend=p.name):
            return lambda x: thermokern_fn(x, backend)

        providers.append(Provider(p.name, make, kind="thermokern"))
    providers.append(Provider("eager", lambda: eager_fn, kind="baseline"))
    providers.append(_compile_provider(eager_fn))
    return providers, [n for n in notes if not n.startswith(("liger", "quack"))]


def _eager_logsumexp(x: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(x, -1)


def _logsumexp_providers(device: str) -> tuple[list[Provider], list[str]]:
    providers, notes = _generic_providers(
        device, lambda x, backend: thermokern.logsumexp(x, -1, backend=backend), _eager_logsumexp
    )
    notes.append("eager: torch.logsumexp; liger/quack: no logsumexp op to compare with")
    return providers, notes


# A padded vocabulary: a (C,) bool mask keeping the first 90 % of the classes, broadcast over
# the rows (thermokern reads it in place; eager PyTorch fills the padding with -inf first).
_PAD_KEEP = 0.9
_PAD_MASKS: dict[tuple[int, str], torch.Tensor] = {}


def _pad_mask(c: int, device: torch.device) -> torch.Tensor:
    key = (c, str(device))
    if key not in _PAD_MASKS:
        _PAD_MASKS[key] = torch.arange(c, device=device) < max(1, int(c * _PAD_KEEP))
    return _PAD_MASKS[key]


def _eager_masked_logsumexp(x: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(x.masked_fill(~_pad_mask(x.shape[-1], x.device), float("-inf")), -1)


def _masked_logsumexp_providers(device: str) -> tuple[list[Provider], list[str]]:
    providers, notes = _generic_providers(
        device,
        lambda x, backend: thermokern.logsumexp(
            x, -1, mask=_pad_mask(x.shape[-1], x.device), backend=backend
        ),
        _eager_masked_logsumexp,
    )
    notes.append(
        f"mask: (C,) bool, the first {_PAD_KEEP:.0%} of the classes kept, broadcast over the rows; "
        "eager: masked_fill(-inf), then torch.logsumexp"
    )
    return providers, notes


def _eager_thermo_stats(e: torch.Tensor, temperature: float = _THERMO_T) -> torch.Tensor:
    """What one writes in PyTorch: log Z, then p, then U, S and C as further reductions."""
    z = -e.float() / temperature
    log_z = torch.logsumexp(z, -1)
    p = torch.softmax(z, -1)
    u = (p * e).sum(-1)
    f = -temperature * log_z
    s = (u - f) / temperature
    c = (p * (e - u.unsqueeze(-1)).square()).sum(-1) / temperature**2
    return (log_z + f + u + s + c).to(e.dtype)


def _thermokern_thermo(x: torch.Tensor, backend: str) -> torch.Tensor:
    st = thermokern.thermo_stats(x, -1, temperature=_THERMO_T, backend=backend)
    return st.log_z + st.free_energy + st.mean_energy + st.entropy + st.heat_capacity


def _thermo_stats_providers(device: str) -> tuple[list[Provider], list[str]]:
    providers, notes = _generic_providers(device, _thermokern_thermo, _eager_thermo_stats)
    notes.append(
        "thermo_stats: every provider computes all five statistics; the timed output (checked "
        "against float64) is their sum log Z + F + U + S + C"
    )
    return providers, notes


def _rows_reference_chunks(fn):
    """reference_chunks for a row op whose float64 reference is ``fn(chunk)`` -> (rows,)."""

    def chunks(x: torch.Tensor, grad: torch.Tensor | None, mode: str):
        rows = x.detach().reshape(-1, x.shape[-1])
        g_rows = grad.reshape(-1) if grad is not None else None
        budget = (1 << 26) if rows.is_cuda else (1 << 23)
        step = max(1, budget // rows.shape[1])
        for r0 in range(0, rows.shape[0], step):
            sl = slice(r0, r0 + step)
            chunk = rows[sl].to(torch.float64)
            if mode == "fwd":
                yield sl, fn(chunk)
            else:
                chunk.requires_grad_(True)
                fn(chunk).backward(g_rows[sl].to(torch.float64))
                yield sl, chunk.grad

    return chunks


def _partition_shapes(device: str, quick: bool) -> list[tuple[int, ...]]:
    """The issue's target shape 4096x32000 in full runs; --quick on a CPU uses a quarter of it
    (the eager thermo_stats baseline alone takes seconds per call there)."""
    if torch.device(device).type != "cuda" and quick:
        return [(1024, 32000)]
    return _softmax_entropy_shapes(device, quick)


def _thermo_reference(chunk: torch.Tensor) -> torch.Tensor:
    return sum(reference.thermo_stats(chunk, -1, temperature=_THERMO_T))


# ----------------------------------------------------------------------------- langevin_step
_LG_STEP = 0.01
_LG_SIGMA = math.sqrt(2.0 * _LG_STEP)  # T = 1
_LG_CLAMP = (-1.0, 1.0)
_LG_SEED, _LG_OFFSET = 0, 0
_LG_GRADS: dict[tuple, torch.Tensor] = {}  # (shape, dtype, device) -> the energy gradient


def _lg_grad(x: torch.Tensor) -> torch.Tensor:
    return _LG_GRADS[(tuple(x.shape), x.dtype, str(x.device))]


def _lg_input(shape, dtype, device, gen) -> torch.Tensor:
    """x ~ U(-1, 1) (an EBM sample in the clamp range); its gradient ~ N(0, 1) is kept aside."""
    x = (torch.rand(shape, generator=gen, device=device, dtype=torch.float32) * 2 - 1).to(dtype)
    key = (tuple(shape), dtype, str(device))
    if key not in _LG_GRADS:
        _LG_GRADS.clear()  # one case at a time
        _LG_GRADS[key] = torch.randn(shape, generator=gen, device=device, dtype=torch.float32).to(dtype)
    return x


def _eager_langevin_(x: torch.Tensor) -> torch.Tensor:
    """The usual PyTorch sampler update, in place: three ops and a noise tensor."""
    g = _lg_grad(x)
    x.add_(-_LG_STEP * g)
    x.add_(_LG_SIGMA * torch.randn_like(x))
    x.clamp_(*_LG_CLAMP)
    return x


def _thermokern_langevin_provider(backend: str, inplace: bool) -> Provider:
    op = thermokern.langevin_step_ if inplace else thermokern.langevin_step

    def make():
        def fn(x):
            return op(
                x,
                _lg_grad(x),
                step_size=_LG_STEP,
                clamp=_LG_CLAMP,
                seed=_LG_SEED,
                offset=_LG_OFFSET,
                backend=backend,
            )

        return fn

    return Provider(backend + ("_" if inplace else ""), make, kind="thermokern", inplace=inplace)


def _langevin_providers(device: str) -> tuple[list[Provider], list[str]]:
    base, notes = _softmax_entropy_providers(device)
    providers = []
    for p in base:
        if p.kind == "thermokern":
            providers += [
                _thermokern_langevin_provider(p.name, False),
                _thermokern_langevin_provider(p.name, True),
            ]
    providers.append(Provider("eager", lambda: _eager_langevin_, kind="baseline", inplace=True, exact=False))
    compiled = _compile_provider(_eager_langevin_)
    providers.append(dataclasses.replace(compiled, inplace=True, exact=False))
    notes = [n for n in notes if not n.startswith(("liger", "quack"))]
    notes += [
        (
            "<backend> is langevin_step (a new output), <backend>_ the in-place langevin_step_; eager is "
            "x.add_(-eta * g); x.add_(sigma * torch.randn_like(x)); x.clamp_(-1, 1) and compile its "
            "torch.compile; all of them update a fresh copy of x per call (copied untimed)"
        ),
        "eager/compile draw their noise from torch's generator: no error column for them",
        "GB/s counts reading x and grad and writing the result (3 N elements)",
    ]
    return providers, notes


def _langevin_reference_chunks(x: torch.Tensor, grad: torch.Tensor | None, mode: str):
    """float64 result of flat element chunks (multiples of 4 elements: whole Philox counters)."""
    flat = x.detach().reshape(-1)
    g = _lg_grad(x).reshape(-1)
    step = 1 << 22  # elements per chunk
    for e0 in range(0, flat.numel(), step):
        sl = slice(e0, e0 + step)
        yield (
            sl,
            reference.langevin_step(
                flat[sl].double(),
                g[sl].double(),
                step_size=_LG_STEP,
                clamp=_LG_CLAMP,
                seed=_LG_SEED,
                offset=_LG_OFFSET + e0 // 4,
            ),
        )


def _langevin_shapes(device: str, quick: bool) -> list[tuple[int, ...]]:
    if torch.device(device).type == "cuda":
        return [(16384, 4096)] if quick else [(16384, 4096), (256, 3, 32, 32)]
    return [(4096, 4096)] if quick else [(4096, 4096), (256, 3, 32, 32)]


def _langevin_dtypes(device: str, quick: bool) -> list[torch.dtype]:
    if torch.device(device).type == "cuda" and not quick:
        return [torch.float32, torch.bfloat16]
    return [torch.float32]


OPS: dict[str, OpSpec] = {
    "softmax_entropy": OpSpec(
        name="softmax_entropy",
        providers=_softmax_entropy_providers,
        make_input=_softmax_entropy_input,
        make_grad=_row_grad,
        min_bytes=_softmax_entropy_min_bytes,
        input_bytes=_input_bytes,
        reference_chunks=_softmax_entropy_reference_chunks,
        default_shapes=_softmax_entropy_shapes,
        default_dtypes=_softmax_entropy_dtypes,
        params={"dim": -1, "temperature": _TEMPERATURE, "logits": f"randn * {_LOGIT_SCALE}"},
    ),
    "entropy_regularized_cross_entropy": OpSpec(
        name="entropy_regularized_cross_entropy",
        providers=_cross_entropy_providers,
        make_input=_ce_input,
        make_grad=lambda x, gen: torch.randn(
            x.shape[:-1], generator=gen, device=x.device, dtype=torch.float32
        ),
        min_bytes=_softmax_entropy_min_bytes,
        input_bytes=_input_bytes,
        reference_chunks=_cross_entropy_reference_chunks,
        default_shapes=_cross_entropy_shapes,
        default_dtypes=_cross_entropy_dtypes,
        params={"entropy_weight": _CE_BETA, "reduction": "none", "target": "uniform random"},
    ),
    "logsumexp": OpSpec(
        name="logsumexp",
        providers=_logsumexp_providers,
        make_input=_softmax_entropy_input,
        make_grad=_row_grad,
        min_bytes=_softmax_entropy_min_bytes,
        input_bytes=_input_bytes,
        reference_chunks=_rows_reference_chunks(lambda c: torch.logsumexp(c, -1)),
        default_shapes=_partition_shapes,
        default_dtypes=_softmax_entropy_dtypes,
        params={"dim": -1, "input": f"randn * {_LOGIT_SCALE}"},
    ),
    "logsumexp_masked": OpSpec(
        name="logsumexp_masked",
        providers=_masked_logsumexp_providers,
        make_input=_softmax_entropy_input,
        make_grad=_row_grad,
        min_bytes=_softmax_entropy_min_bytes,
        input_bytes=_input_bytes,
        reference_chunks=_rows_reference_chunks(_eager_masked_logsumexp),
        default_shapes=_partition_shapes,
        default_dtypes=_softmax_entropy_dtypes,
        params={"dim": -1, "input": f"randn * {_LOGIT_SCALE}", "mask": f"(C,), first {_PAD_KEEP:.0%} kept"},
    ),
    "thermo_stats": OpSpec(
        name="thermo_stats",
        providers=_thermo_stats_providers,
        make_input=_softmax_entropy_input,
        make_grad=_row_grad,
        min_bytes=_softmax_entropy_min_bytes,
        input_bytes=_input_bytes,
        reference_chunks=_rows_reference_chunks(_thermo_reference),
        default_shapes=_partition_shapes,
        default_dtypes=_softmax_entropy_dtypes,
        params={
            "dim": -1,
            "temperature": _THERMO_T,
            "energy": f"randn * {_LOGIT_SCALE}",
            "output": "log_z + free_energy + mean_energy + entropy + heat_capacity",
        },
    ),
    "langevin_step": OpSpec(
        name="langevin_step",
        providers=_langevin_providers,
        make_input=_lg_input,
        make_grad=lambda x, gen: None,
        min_bytes=lambda shape, dtype, mode: (
            3 * math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        ),
        input_bytes=_input_bytes,
        reference_chunks=_langevin_reference_chunks,
        default_shapes=_langevin_shapes,
        default_dtypes=_langevin_dtypes,
        params={
            "step_size": _LG_STEP,
            "noise": f"sqrt(2 * step_size) = {_LG_SIGMA:.4f}",
            "clamp": list(_LG_CLAMP),
            "seed": _LG_SEED,
            "offset": _LG_OFFSET,
            "x": "U(-1, 1)",
            "grad": "randn",
        },
        modes=("fwd",),
        elementwise=True,
    ),
}


# ============================================================================ timing
@dataclasses.dataclass
class _Settings:
    warmup: int  # untimed calls before timing (compiled providers: at least 1, the compile)
    min_reps: int
    max_reps: int
    budget_s: float  # keep timing until min_reps and budget_s are both reached (or max_reps)


_SETTINGS = {
    ("cpu", False): _Settings(warmup=1, min_reps=5, max_reps=100, budget_s=2.0),
    ("cpu", True): _Settings(warmup=0, min_reps=3, max_reps=20, budget_s=0.5),
    ("cuda", False): _Settings(warmup=5, min_reps=20, max_reps=2000, budget_s=1.0),
    ("cuda", True): _Settings(warmup=3, min_reps=10, max_reps=500, budget_s=0.25),
}


def _quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (as numpy's default) of a non-empty sequence."""
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _summary(times_s: list[float]) -> dict[str, float]:
    return {
        "median_ms": statistics.median(times_s) * 1e3,
        "p20_ms": _quantile(times_s, 0.2) * 1e3,
        "p80_ms": _quantile(times_s, 0.8) * 1e3,
        "reps": len(times_s),
    }


def _time_calls(
    call: Callable[[int], Any], prepare: Callable[[int], None], device: str, st: _Settings
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


def _cache_bytes(device: str) -> int:
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


def _n_copies(nbytes: int, cache: int) -> int:
    """How many input copies to rotate among so that consecutive calls miss the cache."""
    return max(1, min(8, math.ceil(2 * cache / max(nbytes, 1))))


def n_copies(nbytes: int, device: str) -> int:
    """Input copies to rotate among on ``device`` for an input of ``nbytes`` (1 for large inputs)."""
    return _n_copies(nbytes, _cache_bytes(device))


def measure_copy(nbytes: int, device: str, quick: bool = True) -> dict[str, float]:
    """Time ``dst.copy_(src)`` of ``nbytes`` bytes (rotating buffers as the op timings do).

    Returns ``{"median_ms", "gbps", "reps", "copies"}`` with ``gbps = 2 * nbytes / median``.
    """
    device = _resolve_device(device)
    st = _SETTINGS[(torch.device(device).type, bool(quick))]
    k = n_copies(nbytes, device)
    src = [torch.empty(nbytes, dtype=torch.uint8, device=device).random_() for _ in range(k)]
    dst = [torch.empty_like(t) for t in src]
    return _time_copy(src, dst, device, st)


def _time_copy(src, dst, device, st) -> dict[str, float]:
    k = len(src)
    for i in range(k + 1):  # touch every destination page before timing
        dst[i % k].copy_(src[i % k])
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    times = _time_calls(lambda i: dst[i % k].copy_(src[i % k]), lambda i: None, device, st)
    med = statistics.median(times)
    nbytes = src[0].numel() * src[0].element_size()
    return {"median_ms": med * 1e3, "gbps": 2 * nbytes / med / 1e9, "reps": len(times), "copies": k}


# ============================================================================ memory
class _PeakMemory:
    """Peak extra memory of one call.

    CUDA: ``torch.cuda.max_memory_allocated()`` minus the allocation before the call (exact
    for tensors from torch's allocator). CPU: the process's resident-set high-water mark
    (VmHWM, reset through ``/proc/self/clear_refs``) minus the resident set before the call;
    an approximation (torch's CPU allocator returns large blocks to the OS, small ones may be
    served from malloc's cached heap and not show), ``None`` where /proc does not allow it.
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


# ============================================================================ progress
class _Progress:
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


# ============================================================================ environment
def _cpu_name() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    import subprocess

    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(
            ["git", "-C", here, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(
        ["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        timeout=5,
        check=False,
    )
    return out.stdout.strip() + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def _environment(device: str) -> dict[str, Any]:
    dev = torch.device(device)
    env: dict[str, Any] = {
        "device_type": dev.type,
        "cpu": _cpu_name(),
        "cpu_isa": _backend._C.cpu_isa() if _backend._C is not None else None,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "loadavg_start": _loadavg(),
    }
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        env.update(
            gpu=torch.cuda.get_device_name(dev),
            gpu_capability=".".join(map(str, torch.cuda.get_device_capability(dev))),
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            gpu_sms=props.multi_processor_count,
            gpu_l2_mib=round(_cache_bytes(device) / 2**20, 1),
        )
        env["device_name"] = env["gpu"]
    else:
        env["device_name"] = env["cpu"]
        env["l3_mib"] = round(_cache_bytes(device) / 2**20, 1)
    return env


def _versions() -> dict[str, Any]:
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


# ============================================================================ the run
def max_abs_err(value: torch.Tensor, ref: torch.Tensor) -> float:
    diff = (value.detach().to(torch.float64) - ref).abs()
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
        numel = x.numel() if mode != "fwd" or spec.elementwise else x.numel() // max(x.shape[-1], 1)
        self.full: torch.Tensor | None = None
        if numel * 8 <= 0.1 * _free_bytes(x.device):
            self.full = spec.reference(x, grad, mode)

    def max_abs_err(self, value: torch.Tensor) -> float:
        if self.full is not None:
            return max_abs_err(value, self.full)
        value = value.detach()
        rows = value.reshape(-1) if self.mode == "fwd" else value.reshape(-1, value.shape[-1])
        worst = 0.0
        for sl, chunk in self.spec.reference_chunks(self.x, self.grad, self.mode):
            err = max_abs_err(rows[sl], chunk)
            if math.isnan(err):
                return err
            worst = max(worst, err)
        return worst


def _free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 4 << 30


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _write_json(path: str, result: dict) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(_json_safe(result), f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def _resolve_device(device: str) -> str:
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device: 'cuda' requested but torch.cuda.is_available() is False")
        return str(dev)
    if dev.type != "cpu":
        raise ValueError(f"device: expected 'cpu' or 'cuda', got {device!r}")
    return "cpu"


def make_calls(
    prov: Provider, mode: str, xs: Sequence[torch.Tensor], grad: torch.Tensor | None
) -> tuple[Callable[[int], None], Callable[[int], Any], list[torch.Tensor]]:
    """Build ``(prepare, call, inputs)`` for one provider and mode.

    ``call(i)`` runs the op on input copy ``i % len(xs)`` (``fwd``: returns the output;
    ``fwd+bwd``: forward then ``.backward(grad)``, the gradient lands in ``inputs[i].grad``);
    ``prepare(i)`` is the untimed part before each call (clears the gradients; restores the
    input of an in-place provider).
    """
    fn = prov.make()
    if mode == "fwd" and prov.inplace:
        originals = [x.detach() for x in xs]
        inputs = [x.clone() for x in originals]

        def prepare(i: int) -> None:  # every call starts from the original input
            inputs[i % len(inputs)].copy_(originals[i % len(inputs)])

        def call(i: int):
            return fn(inputs[i % len(inputs)])

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
            for t in inputs:
                t.grad = None

        def call(i: int):
            fn(inputs[i % len(inputs)]).backward(grad)

    else:
        raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
    return prepare, call, inputs


def result_of_call(mode: str, call: Callable[[int], Any], inputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Run ``call(0)`` once and return what the error is measured on (output or input gradient)."""
    out = call(0)
    return out if mode == "fwd" else inputs[0].grad


def _measure_provider(
    spec: OpSpec,
    prov: Provider,
    mode: str,
    xs: list[torch.Tensor],
    grad: torch.Tensor,
    ref: _Reference,
    device: str,
    st: _Settings,
    mem: _PeakMemory,
) -> dict[str, Any]:
    """Time one provider on one case; returns the row's measured fields."""
    row: dict[str, Any] = {}
    prepare, call, inputs = make_calls(prov, mode, xs, grad)

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
    value = result_of_call(mode, call, inputs)
    row["peak_mem_mib"] = mem.stop()
    row["max_abs_err"] = ref.max_abs_err(value) if (ref is not None and prov.exact) else None
    del value
    prepare(0)
    times = _time_calls(call, prepare, device, st)
    prepare(0)
    row.update(_summary(times))
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
    device = _resolve_device(device)
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
    st = _SETTINGS[(dev_type, bool(quick))]
    mem = _PeakMemory(device)
    cache = _cache_bytes(device)

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
        dts = [parse_dtype(d) for d in dtypes] if dtypes is not None else spec.default_dtypes(device, quick)
        op_modes = [m for m in mode_list if m in spec.modes]
        if len(op_modes) < len(mode_list):
            notes.append(f"{name}: benchmarked in {', '.join(spec.modes)} only")
        plan.append((spec, provs, shp, dts, op_modes))

    if any(p.compiled for _, provs, _, _, _ in plan for p in provs):
        notes.append(
            "compile: torch.compile(eager, dynamic=False), compiled afresh for every case after "
            "torch._dynamo.reset() (inductor's on-disk caches stay as they are); compile_s is its first "
            "call (compile + one run), excluded from the timings"
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
        "environment": _environment(device),
        "versions": _versions(),
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
                    "shapes": [_shape_str(s) for s in shp],
                    "dtypes": [_dtype_name(d) for d in dts],
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
                        _write_json(json_path, result)
    finally:
        bar.close()
    result["complete"] = True
    result["elapsed_s"] = round(time.perf_counter() - t_run, 1)
    load = result["environment"]["loadavg_start"]
    result["environment"]["loadavg_end"] = _loadavg()
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
        _write_json(json_path, result)
    if out is not None:
        print(format_table(result), file=out)
        out.flush()
    return result


def _run_case(spec, provs, mode_list, shape, dtype, device, st, mem, cache, gen, seed, result, bar) -> None:
    shape_s, dtype_s = _shape_str(shape), _dtype_name(dtype)
    label = f"{spec.name} {shape_s} {dtype_s}"
    nbytes = spec.input_bytes(shape, dtype)
    k = _n_copies(nbytes, cache)
    gen.manual_seed(seed)

    # copy bandwidth of the input's size, in this run
    bar.status(f"{label} copy")
    src = [spec.make_input(shape, dtype, device, gen) for _ in range(k)]
    dst = [torch.empty_like(s) for s in src]
    copy = {"op": spec.name, "shape": shape_s, "dtype": dtype_s, "bytes": nbytes}
    copy.update(_time_copy(src, dst, device, st))
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


# ============================================================================ output
_COLUMNS = (
    # header, key, formatter, right-aligned
    ("op", "op", str, False),
    ("mode", "mode", str, False),
    ("shape", "shape", str, False),
    ("dtype", "dtype", str, False),
    ("provider", "provider", str, False),
    ("median ms", "median_ms", "ms", True),
    ("p20 ms", "p20_ms", "ms", True),
    ("p80 ms", "p80_ms", "ms", True),
    ("GB/s", "gbps", "{:.1f}", True),
    ("% copy", "pct_copy", "{:.0f}%", True),
    ("vs eager", "speedup_vs_eager", "{:.2f}x", True),
    ("vs compile", "speedup_vs_compile", "{:.2f}x", True),
    ("max abs err", "max_abs_err", "{:.1e}", True),
    ("peak MiB", "peak_mem_mib", "{:.0f}", True),
)


def _fmt(value, how) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value) and how != "{:.1e}"):
        return "-"
    if how is str:
        return str(value)
    if how == "ms":
        v = float(value)
        return f"{v:.4f}" if v < 0.1 else f"{v:.3f}" if v < 10 else f"{v:.2f}" if v < 1000 else f"{v:.0f}"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return how.format(value)


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes} B"


def format_table(result: dict[str, Any], details: bool = True) -> str:
    """The rows as a Markdown pipe table, aligned for a terminal.

    With ``details``, a title line (device, versions) comes first, and the copy bandwidths,
    compile times, failures and notes follow as Markdown bullet lists.
    """
    header = [c[0] for c in _COLUMNS]
    body = []
    for r in result.get("rows", []):
        if "error" in r:
            cells = [_fmt(r.get(key), how) for _, key, how, _ in _COLUMNS[:5]]
            cells += ["failed"] + ["-"] * (len(_COLUMNS) - 6)
        else:
            cells = [_fmt(r.get(key), how) for _, key, how, _ in _COLUMNS]
        body.append(cells)
    widths = [max([len(h)] + [len(row[i]) for row in body]) for i, h in enumerate(header)]

    def line(cells):
        out = []
        for i, c in enumerate(cells):
            out.append(c.rjust(widths[i]) if _COLUMNS[i][3] else c.ljust(widths[i]))
        return "| " + " | ".join(out) + " |"

    sep = (
        "|"
        + "|".join(("-" * (w + 1) + ":") if c[3] else ("-" * (w + 2)) for w, c in zip(widths, _COLUMNS))
        + "|"
    )
    lines = []
    if details:
        env, ver = result.get("environment", {}), result.get("versions", {})
        st = result.get("settings", {})
        title = (
            f"thermokern {ver.get('thermokern')} bench on {env.get('device_name')} "
            f"({st.get('device')}, {env.get('threads')} threads, ISA {env.get('cpu_isa')}); "
            f"torch {ver.get('torch')}, triton {ver.get('triton')}; {result.get('date')}"
            + (" [quick]" if st.get("quick") else "")
        )
        lines += [title, ""]
    lines += [line(header), sep] + [line(b) for b in body]
    if details:
        copies = result.get("copy_bandwidth", [])
        if copies:
            lines += ["", "Copy bandwidth (dst.copy_(src), same bytes as the input):"]
            lines += [
                f"- {c['shape']} {c['dtype']}: {c['gbps']:.1f} GB/s "
                f"({_fmt(c['median_ms'], 'ms')} ms for {_size(c['bytes'])})"
                for c in copies
            ]
        compiles = [r for r in result.get("rows", []) if r.get("compile_s") is not None]
        if compiles:
            lines += ["", "torch.compile warm-up (first call, compile included, not in the timings):"]
            lines += [f"- {r['mode']} {r['shape']} {r['dtype']}: {r['compile_s']:.1f} s" for r in compiles]
        notes = result.get("notes", [])
        if notes:
            lines += ["", "Notes:"] + [f"- {n}" for n in notes]
        if result.get("elapsed_s") is not None:
            lines += ["", f"Total time: {result['elapsed_s']:.1f} s"]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: str) -> str | None:
    """Bar chart (PNG) of GB/s per provider, one panel per (op, mode, shape, dtype), with the
    copy bandwidth as a dashed line. Returns ``None``, or a note saying why nothing was written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "plot: matplotlib is not installed (pip install matplotlib); no plot written"
    groups: dict[tuple, list[dict]] = {}
    for r in result.get("rows", []):
        groups.setdefault((r["op"], r["mode"], r["shape"], r["dtype"]), []).append(r)
    if not groups:
        return "plot: no rows to plot"
    copy_bw = {(c["op"], c["shape"], c["dtype"]): c["gbps"] for c in result.get("copy_bandwidth", [])}
    n = len(groups)
    ncols = min(4, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False)
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = sorted(
        {r["provider"] for r in result["rows"]},
        key=lambda p: [r["provider"] for r in result["rows"]].index(p),
    )
    colour = {p: palette[i % len(palette)] for i, p in enumerate(names)}
    for ax, ((op, mode, shape, dtype), rows) in zip(axes.flat, groups.items()):
        labels = [r["provider"] for r in rows]
        values = [r.get("gbps") or 0.0 for r in rows]
        bars = ax.bar(labels, values, color=[colour[p] for p in labels])
        for b, r in zip(bars, rows):
            text = "failed" if "error" in r else f"{r['gbps']:.0f}"
            ax.annotate(
                text, (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=7
            )
        bw = copy_bw.get((op, shape, dtype))
        ax.set_ylim(0, 1.25 * max(values + [bw or 0.0, 1e-9]))
        if bw:
            ax.axhline(bw, color="black", linestyle="--", linewidth=1, label=f"copy {bw:.0f} GB/s")
            ax.legend(fontsize=7, loc="upper right")
        ax.set_title(f"{op} {mode}\n{shape} {dtype}", fontsize=9)
        ax.set_ylabel("GB/s (minimal bytes)", fontsize=8)
        ax.tick_params(axis="x", labelsize=8, rotation=30)
        ax.tick_params(axis="y", labelsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    env = result.get("environment", {})
    fig.suptitle(f"thermokern bench: {env.get('device_name')} ({result.get('date', '')[:10]})", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


# ============================================================================ langevin_sample
# (sampling branch) A whole sampling run: _SAMPLER_STEPS steps of the JEM / IGEBM sampler
# (step_size 1, noise 0.01, clamp to [-1, 1]) on chains x0 of shape (chains, D) under a small
# MLP energy D -> 64 -> 64 -> 1. Providers: "thermokern" (sampling.langevin_sample, one fused
# langevin_step_ per step), "eager" (JEM's loop: three in-place passes and a randn tensor per
# step) and, on CUDA, "cuda_graph" (langevin_sample(cuda_graph=True)). The energy network
# is the same for all: the difference is the update and its launches.
_SAMPLER_STEPS = 64
_SAMPLER_ETA = 1.0
_SAMPLER_SIGMA = 0.01
_SAMPLER_HIDDEN = 64
_SAMPLER_NETS: dict[tuple, torch.nn.Module] = {}


def _sampler_energy(x: torch.Tensor) -> torch.nn.Module:
    """The benchmark's MLP energy for inputs like ``x`` (deterministic weights, no grads)."""
    key = (x.shape[-1], x.dtype, str(x.device))
    if key not in _SAMPLER_NETS:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            net = torch.nn.Sequential(
                torch.nn.Linear(x.shape[-1], _SAMPLER_HIDDEN),
                torch.nn.SiLU(),
                torch.nn.Linear(_SAMPLER_HIDDEN, _SAMPLER_HIDDEN),
                torch.nn.SiLU(),
                torch.nn.Linear(_SAMPLER_HIDDEN, 1),
                torch.nn.Flatten(0),
            )
        _SAMPLER_NETS[key] = net.to(device=x.device, dtype=x.dtype).requires_grad_(False)
    return _SAMPLER_NETS[key]


def _sampler_thermokern(cuda_graph: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    from thermokern import sampling

    def fn(x0: torch.Tensor) -> torch.Tensor:
        return sampling.langevin_sample(
            _sampler_energy(x0),
            x0,
            n_steps=_SAMPLER_STEPS,
            step_size=_SAMPLER_ETA,
            noise_scale=_SAMPLER_SIGMA,
            clamp=(-1.0, 1.0),
            seed=0,
            cuda_graph=cuda_graph,
        )

    return fn


def _eager_sampler(x0: torch.Tensor) -> torch.Tensor:
    """JEM's sampling loop (Grathwohl et al. 2019), as EBM code commonly writes it."""
    energy = _sampler_energy(x0)
    x = x0.detach().clone()
    for _ in range(_SAMPLER_STEPS):
        x.requires_grad_(True)
        (g,) = torch.autograd.grad(energy(x).sum(), x)
        x = x.detach()
        x.add_(-_SAMPLER_ETA * g)
        x.add_(_SAMPLER_SIGMA * torch.randn_like(x))
        x.clamp_(-1.0, 1.0)
    return x


def _sampler_providers(device: str) -> tuple[list[Provider], list[str]]:
    kind = torch.device(device).type
    providers = [Provider("thermokern", lambda: _sampler_thermokern(False), kind="thermokern")]
    what = (
        f"{_SAMPLER_STEPS} steps x (MLP energy D->{_SAMPLER_HIDDEN}->{_SAMPLER_HIDDEN}->1 forward + "
        "input gradient + update); time per whole run; GB/s counts only the updates' minimal "
        "traffic (read x and grad, write x per step), a small part of the run"
    )
    notes = [what]
    if kind == "cuda":
        providers.append(Provider("cuda_graph", lambda: _sampler_thermokern(True), kind="thermokern"))
    else:
        notes.append("cuda_graph: CUDA only")
    providers.append(Provider("eager", lambda: _eager_sampler, kind="baseline"))
    return providers, notes


def _sampler_input(shape, dtype, device, gen) -> torch.Tensor:
    x = torch.rand(shape, generator=gen, device=device, dtype=torch.float32) * 2 - 1
    return x.to(dtype)


def _sampler_shapes(device: str, quick: bool) -> list[tuple[int, ...]]:
    if torch.device(device).type == "cuda":
        return [(4096, 64)] if quick else [(4096, 64), (65536, 64)]
    return [(256, 32)] if quick else [(1024, 32)]


OPS["langevin_sample"] = OpSpec(
    name="langevin_sample",
    providers=_sampler_providers,
    make_input=_sampler_input,
    make_grad=lambda x, gen: None,
    min_bytes=lambda shape, dtype, mode: (
        _SAMPLER_STEPS * 3 * math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    ),
    input_bytes=lambda shape, dtype: math.prod(shape) * torch.empty((), dtype=dtype).element_size(),
    reference_chunks=lambda x, grad, mode: iter(()),
    default_shapes=_sampler_shapes,
    default_dtypes=lambda device, quick: [torch.float32],
    params={
        "n_steps": _SAMPLER_STEPS,
        "step_size": _SAMPLER_ETA,
        "noise_scale": _SAMPLER_SIGMA,
        "clamp": [-1.0, 1.0],
        "energy": f"MLP D-{_SAMPLER_HIDDEN}-{_SAMPLER_HIDDEN}-1 SiLU",
    },
    modes=("fwd",),
    has_reference=False,
)

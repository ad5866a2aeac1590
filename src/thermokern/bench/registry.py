"""The op registry: :class:`OpSpec` (what the benchmark needs to know about one op),
:data:`OPS` (name -> spec, filled by :mod:`thermokern.bench.specs`), and the shape and dtype
parsing and labels shared by the runner, the table and the pytest-benchmark suites."""

from __future__ import annotations

import dataclasses
import math
import re
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from .providers import Provider

MODES = ("fwd", "fwd+bwd")

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


# ============================================================================ shapes and dtypes
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


def format_dtype(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"``."""
    return str(dtype).removeprefix("torch.")


def format_shape(shape: Sequence[int]) -> str:
    """``(4096, 32000)`` -> ``"4096x32000"``."""
    return "x".join(str(d) for d in shape)


def tensor_bytes(shape: Sequence[int], dtype: torch.dtype) -> int:
    """Bytes of one tensor of ``shape`` and ``dtype``."""
    return math.prod(shape) * torch.empty((), dtype=dtype).element_size()


# ============================================================================ op specs
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
        reduced: the output is one scalar (a loss reduced over the rows): the ``fwd`` reference
            is a scalar (one ``(1,)`` chunk) and ``make_grad`` gives a scalar.
        leaves: ``leaves(x) -> tuple of tensors``: the op's other differentiable inputs (a
            weight), found from the input ``x``; ``None`` for ops of ``x`` alone. In ``fwd+bwd``
            they require grad and their gradients are cleared with the input's before every call
            (untimed); the gradient compared with the reference is then the input's and theirs,
            flattened and joined in that order (``reference_chunks`` yields slices of that flat
            vector). In ``fwd`` they do not require grad.
        shape_dims: the names of the dimensions of a shape (``("tokens", "hidden", "vocab")``):
            shapes with another number of dimensions are skipped (with a note) instead of run;
            ``None``: any shape (the last dimension is the reduced one).
    """

    name: str
    providers: Callable[[str], tuple[list[Provider], list[str]]]
    make_input: Callable[[tuple[int, ...], torch.dtype, str, torch.Generator], torch.Tensor]
    make_grad: Callable[[torch.Tensor, torch.Generator], torch.Tensor | None]
    min_bytes: Callable[[tuple[int, ...], torch.dtype, str], int]
    input_bytes: Callable[[tuple[int, ...], torch.dtype], int]
    reference_chunks: Callable[[torch.Tensor, torch.Tensor | None, str], Iterator[tuple[slice, torch.Tensor]]]
    default_shapes: Callable[[str, bool], list[tuple[int, ...]]]
    default_dtypes: Callable[[str, bool], list[torch.dtype]]
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    modes: tuple[str, ...] = MODES
    elementwise: bool = False
    has_reference: bool = True
    reduced: bool = False
    leaves: Callable[[torch.Tensor], tuple[torch.Tensor, ...]] | None = None
    shape_dims: tuple[str, ...] | None = None

    def reference(self, x: torch.Tensor, grad: torch.Tensor | None, mode: str) -> torch.Tensor:
        """float64 output (``fwd``, shaped like the op's output) or input gradient (``fwd+bwd``;
        for an op with :attr:`leaves`, the flat joined gradient of the input and the leaves)."""
        out = torch.cat([chunk.reshape(-1) for _, chunk in self.reference_chunks(x, grad, mode)])
        if mode == "fwd":
            return out.reshape(() if self.reduced else x.shape if self.elementwise else x.shape[:-1])
        return out if self.leaves is not None else out.reshape(x.shape)

    def compared_numel(self, x: torch.Tensor, mode: str) -> int:
        """Elements of what the error is measured on: the output (``fwd``) or the gradient."""
        if mode == "fwd":
            return 1 if self.reduced else x.numel() if self.elementwise else x.numel() // max(x.shape[-1], 1)
        return x.numel() + sum(t.numel() for t in (self.leaves(x) if self.leaves is not None else ()))

    def accepts_shape(self, shape: Sequence[int]) -> bool:
        """Whether ``shape`` has the dimensions this op's shapes have (see :attr:`shape_dims`)."""
        return self.shape_dims is None or len(shape) == len(self.shape_dims)


def forward_spec(
    name, providers, make_input, reference_chunks, min_bytes, shapes, dtypes, params, **fields
) -> OpSpec:
    """The OpSpec of an op timed forward only, with no upstream gradient (a sampler update, a
    whole sampling run); ``fields`` sets the rest (``elementwise``, ``has_reference``)."""
    return OpSpec(
        name=name,
        providers=providers,
        make_input=make_input,
        make_grad=lambda x, gen: None,
        min_bytes=min_bytes,
        input_bytes=tensor_bytes,
        reference_chunks=reference_chunks,
        default_shapes=shapes,
        default_dtypes=dtypes,
        params=params,
        modes=("fwd",),
        **fields,
    )


class PerInput:
    """Tensors a spec draws with each input copy (its energy gradient, its proposal), found
    again from the copy the op is called with: each of the copies the benchmark rotates through
    has its own, so that none stays in cache while the inputs rotate. ``put`` with a copy as
    ``make_input`` returns it; ``get`` with the tensor a provider receives (the runner passes
    the very tensors make_input made, detached: the same storage). An entry goes with its input.
    """

    def __init__(self) -> None:
        self._by_ptr: dict[int, Any] = {}

    def put(self, x: torch.Tensor, value: Any) -> None:
        self._by_ptr[x.data_ptr()] = value
        weakref.finalize(x, self._by_ptr.pop, x.data_ptr(), None)

    def get(self, x: torch.Tensor) -> Any:
        return self._by_ptr[x.data_ptr()]


OPS: dict[str, OpSpec] = {}
"""Every benchmarked op by name, in the order ``thermokern bench`` runs them."""


def register(spec: OpSpec) -> OpSpec:
    """Add ``spec`` to :data:`OPS` (its name must be new); returns it."""
    if spec.name in OPS:
        raise ValueError(f"register: op {spec.name!r} is already registered")
    OPS[spec.name] = spec
    return spec


def label(value: Any) -> str:
    """A short label for a benchmark parameter (pytest ids): a shape ``4096x32000``, a dtype
    ``bfloat16``, a provider's name, an ``(OpSpec, Provider)`` pair ``op-provider``."""
    if isinstance(value, torch.dtype):
        return format_dtype(value)
    if isinstance(value, Provider):
        return value.name
    if isinstance(value, OpSpec):
        return value.name
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], Provider):
        return f"{label(value[0])}-{value[1].name}"
    if isinstance(value, tuple):
        return format_shape(value)
    return str(value)

"""One declaration per kernel: :class:`KernelOp`.

Every kernel is a schema in csrc/thermokern.cpp, the single source of truth for its signature;
the CPU and CUDA kernels register under it (``torch.ops.thermokern.<name>``). A ``KernelOp``
declares, in one place (beside the public function that uses it, in ``ops/<op>.py``),
everything Python adds to that schema:

* its fake (meta) implementation, for ``torch.compile`` and ``opcheck``;
* its autograd: ``setup_context`` and a backward built from the backward ``KernelOp``, so that
  each backend's forward differentiates through the same backend's backward kernel;
* its implementation per backend::

      cpu, cuda  torch.ops.thermokern.<name>
      triton     thermokern::<name>_triton (in-place ops: <name minus "_">_triton_), a
                 torch.library.triton_op with the same schema around the launcher <name> of
                 kernels/<module>.py, defined on first use (importing triton costs ~1 s and it
                 may be missing); ``traceable=False`` makes it an opaque custom_op
      reference  thermokern.reference.kernels.<name>: the kernel's contract in plain PyTorch

A public function checks its arguments (thermokern._checks), resolves the backend once
(thermokern._backend.resolve_backend) and calls ``op(backend, *args)``.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any, Optional

import torch

from thermokern import _backend

__all__ = ["KernelOp"]


def _schema(name: str) -> torch.FunctionSchema:
    return getattr(torch.ops.thermokern, name).default._schema


# The Python annotations of the schema types the kernels use (torch 2.11's triton_op infers a
# schema from the function's signature even when it is given one: the signature must match).
_ANNOTATIONS = {
    "Tensor": torch.Tensor,
    "Optional[Tensor]": Optional[torch.Tensor],  # noqa: UP045 (what infer_schema reads everywhere)
    "List[Tensor]": list[torch.Tensor],
    "float": float,
    "Optional[float]": Optional[float],  # noqa: UP045
    "int": int,
    "List[int]": list[int],
    "bool": bool,
}


def _signature(schema: torch.FunctionSchema) -> inspect.Signature:
    """The Python signature of a schema (names, annotations, defaults, return type)."""
    params = [
        inspect.Parameter(
            a.name,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            annotation=_ANNOTATIONS[str(a.type)],
            default=a.default_value if a.has_default_value() else inspect.Parameter.empty,
        )
        for a in schema.arguments
    ]
    returns = [_ANNOTATIONS[str(r.type)] for r in schema.returns]
    if not returns:
        ret = None
    elif len(returns) == 1:
        ret = returns[0]
    else:
        ret = tuple[tuple(returns)]  # tuple[Tensor, Tensor, ...]
    return inspect.Signature(params, return_annotation=ret)


def _returns_nothing(*args: Any) -> None:
    """The fake of an in-place kernel whose outputs are its mutated arguments."""


class KernelOp:
    """A kernel of the ``thermokern`` library and its implementation per backend.

    Args:
        name: the schema name in csrc/thermokern.cpp (e.g. ``"softmax_entropy_fwd"``).
        fake: the fake (meta) implementation, registered for the C++ op and the Triton op.
        triton: the module of ``thermokern.kernels`` whose function ``name`` launches the
            Triton kernel (None: no Triton kernel).
        reference: the name of the contract implementation in ``thermokern.reference.kernels``
            (default: ``name``).
        backward: the ``KernelOp`` computing this op's backward, with ``setup_context`` and
            ``make_backward(bwd)`` (which turns the backward op of one backend, a callable
            taking the backward schema's arguments, into an autograd backward function).
        traceable: whether the Triton launcher only launches kernels through
            ``torch.library.wrap_triton`` (a ``triton_op``, which ``torch.compile`` traces
            into); otherwise it is an opaque ``custom_op``.
    """

    def __init__(
        self,
        name: str,
        *,
        fake: Callable[..., Any],
        triton: str | None = None,
        reference: str | None = None,
        backward: KernelOp | None = None,
        setup_context: Callable[..., None] | None = None,
        make_backward: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None,
        traceable: bool = True,
    ) -> None:
        if (backward is None) != (make_backward is None) or (backward is None) != (setup_context is None):
            raise ValueError(f"{name}: backward, setup_context and make_backward go together")
        self.name = name
        self.qualname = f"thermokern::{name}"
        self._fake = fake
        self._triton_launcher = triton
        self._reference = reference or name
        self.backward = backward
        self._setup_context = setup_context
        self._make_backward = make_backward
        self._traceable = traceable
        self._triton_op: Any = None
        self.twin: KernelOp | None = None  # the in-place twin (in_place_twin)
        if _backend._C is not None:
            if not hasattr(torch.ops.thermokern, name):
                raise ImportError(
                    f"thermokern._C has no op {self.qualname}: the extension is older than the Python "
                    "package; rebuild it with `pip install --no-build-isolation -e .`"
                )
            torch.library.register_fake(self.qualname)(fake)
            if backward is not None:
                torch.library.register_autograd(
                    self.qualname, make_backward(backward.native), setup_context=setup_context
                )

    @classmethod
    def differentiable(
        cls,
        fwd: str,
        bwd: str,
        *,
        fakes: tuple[Callable[..., Any], Callable[..., Any]],
        triton: str | None,
        setup_context: Callable[..., None],
        make_backward: Callable[[Callable[..., Any]], Callable[..., Any]],
        in_place_backward: bool = False,
    ) -> tuple[KernelOp, KernelOp]:
        """A forward kernel and the backward kernel its autograd calls: (fwd op, bwd op);
        ``in_place_backward``: the backward also has an in-place twin (``bwd.twin``, see
        :meth:`in_place_twin`)."""
        backward = cls(bwd, fake=fakes[1], triton=triton)
        if in_place_backward:
            backward.in_place_twin()
        forward = cls(
            fwd, fake=fakes[0], triton=triton, backward=backward, setup_context=setup_context,
            make_backward=make_backward,
        )  # fmt: skip
        return forward, backward

    def in_place_twin(self) -> KernelOp:
        """The in-place twin ``<name>_`` of a row op's backward: the same arguments, the gradient
        written over the (contiguous) logits, nothing returned (schema ``Tensor(a!) logits``;
        its Triton launcher and reference are ``<name>_`` beside this op's); also kept as
        ``self.twin``."""
        self.twin = KernelOp(self.name + "_", fake=_returns_nothing, triton=self._triton_launcher)
        return self.twin

    def __repr__(self) -> str:
        return f"KernelOp({self.name!r})"

    # ------------------------------------------------------------------------- backends
    @property
    def native(self) -> Any:
        """The C++ op (CPU and CUDA kernels), ``torch.ops.thermokern.<name>``."""
        return getattr(torch.ops.thermokern, self.name)

    @property
    def triton(self) -> Any:
        """The Triton op, defined on first use."""
        if self._triton_op is None:
            self._triton_op = self._define_triton()
        return self._triton_op

    @property
    def reference(self) -> Callable[..., Any]:
        """The kernel's contract in plain PyTorch (thermokern.reference.kernels)."""
        from thermokern.reference import kernels

        return getattr(kernels, self._reference)

    def on(self, backend: str) -> Callable[..., Any]:
        """The implementation for a resolved backend name."""
        if backend == "triton":
            return self.triton
        if backend == "reference":
            return self.reference
        return self.native

    def __call__(self, backend: str, *args: Any) -> Any:
        """Run the kernel on ``backend`` (a name returned by ``resolve_backend``)."""
        return self.on(backend)(*args)

    # ------------------------------------------------------------------------- Triton
    def triton_name(self) -> str:
        if self.name.endswith("_"):
            return self.name[:-1] + "_triton_"
        return self.name + "_triton"

    def _define_triton(self) -> Any:
        if self._triton_launcher is None:
            raise RuntimeError(f"backend: {self.name} has no Triton kernel")
        module = importlib.import_module(f"thermokern.kernels.{self._triton_launcher}")
        launcher = getattr(module, self.name)
        schema = _schema(self.name)
        names = [a.name for a in schema.arguments]
        defaults = {a.name: a.default_value for a in schema.arguments if a.has_default_value()}
        mutated = [a.name for a in schema.arguments if a.alias_info is not None and a.alias_info.is_write]
        text = str(schema)
        signature = text[text.index("(") :]

        def impl(*args: Any, **kwargs: Any) -> Any:
            # The op passes arguments by the schema's names (omitting defaults); the launchers
            # take them in order.
            rest = (kwargs[n] if n in kwargs else defaults[n] for n in names[len(args) :])
            return launcher(*args, *rest)

        impl.__signature__ = _signature(schema)  # type: ignore[attr-defined]

        qualname = f"thermokern::{self.triton_name()}"
        if self._traceable:
            op = torch.library.triton_op(qualname, impl, mutates_args=mutated, schema=signature)
        else:
            op = torch.library.custom_op(qualname, impl, mutates_args=mutated, schema=signature)
            op.register_fake(self._fake)
        if self.backward is not None:
            op.register_autograd(self._make_backward(self.backward.triton), setup_context=self._setup_context)
        return op

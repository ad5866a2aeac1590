"""``entropy_regularized_cross_entropy``: per-row cross entropy minus ``entropy_weight`` times
the softmax entropy, with uniformly random targets."""

from __future__ import annotations

import math

import torch

import thermokern
from thermokern import reference

from ..providers import Provider, standard_providers
from ..registry import register
from ._rows import logits, row_reference_chunks, row_spec

ENTROPY_WEIGHT = 0.1
_TARGETS: dict[tuple, torch.Tensor] = {}  # (shape, device) -> targets, made with the input


def target(x: torch.Tensor) -> torch.Tensor:
    """The targets drawn with the input ``x`` (by shape and device)."""
    return _TARGETS[(tuple(x.shape), str(x.device))]


def make_input(shape, dtype, device, gen) -> torch.Tensor:
    """LM-like logits; their uniformly random targets are kept aside for :func:`target`."""
    x = logits(shape, dtype, device, gen)
    n_rows = math.prod(shape[:-1])
    t = torch.randint(0, shape[-1], (n_rows,), generator=gen, device=device).reshape(shape[:-1])
    _TARGETS[(tuple(x.shape), str(x.device))] = t
    return x


def make_grad(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """An upstream gradient ~ N(0, 1) per row, in float32 (the loss is float32)."""
    return torch.randn(x.shape[:-1], generator=gen, device=x.device, dtype=torch.float32)


def eager(x: torch.Tensor) -> torch.Tensor:
    """The natural PyTorch way: F.cross_entropy minus beta times -(p * log p).sum."""
    t = target(x)
    ce = torch.nn.functional.cross_entropy(x.flatten(0, -2).float(), t.flatten(), reduction="none")
    lp = torch.log_softmax(x.float(), -1)
    h = -(lp.exp() * lp).sum(-1)
    return ce.reshape(t.shape) - ENTROPY_WEIGHT * h


def _thermokern(x: torch.Tensor, backend: str) -> torch.Tensor:
    return thermokern.entropy_regularized_cross_entropy(
        x, target(x), entropy_weight=ENTROPY_WEIGHT, reduction="none", backend=backend
    )


def providers(device: str) -> tuple[list[Provider], list[str]]:
    provs, notes = standard_providers(device, _thermokern, eager)
    notes.append("liger/quack: no entropy-regularised cross-entropy to compare with")
    return provs, notes


def reference_chunks(x: torch.Tensor, grad: torch.Tensor | None, mode: str):
    """float64 loss (``fwd``) or gradient (``fwd+bwd``) by the reference implementation."""
    t = target(x).reshape(-1)

    def fn(chunk: torch.Tensor, rows: slice) -> torch.Tensor:
        return reference.entropy_regularized_cross_entropy(
            chunk, t[rows], entropy_weight=ENTROPY_WEIGHT, reduction="none"
        )

    return row_reference_chunks(x, grad, mode, fn)


def shapes(device: str, quick: bool) -> list[tuple[int, ...]]:
    if torch.device(device).type == "cuda":
        return [(16384, 131072)] if quick else [(16384, 32000), (16384, 131072)]
    return [(8192, 32000)] if not quick else [(2048, 32000)]  # --quick: under 3 minutes in all


SPEC = register(
    row_spec(
        "entropy_regularized_cross_entropy",
        providers,
        reference_chunks,
        shapes,
        {"entropy_weight": ENTROPY_WEIGHT, "reduction": "none", "target": "uniform random"},
        make_input=make_input,
        make_grad=make_grad,
    )
)

"""``entropy_regularized_cross_entropy``: per-row cross entropy minus ``entropy_weight`` times
the softmax entropy, with uniformly random targets."""

from __future__ import annotations

import torch

import thermokern
from thermokern import reference

from ..registry import register
from ._rows import target, targeted_spec

ENTROPY_WEIGHT = 0.1


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


def _reference(chunk: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return reference.entropy_regularized_cross_entropy(
        chunk, t, entropy_weight=ENTROPY_WEIGHT, reduction="none"
    )


def shapes(device: str, quick: bool) -> list[tuple[int, ...]]:
    if torch.device(device).type == "cuda":
        return [(16384, 131072)] if quick else [(16384, 32000), (16384, 131072)]
    return [(8192, 32000)] if not quick else [(2048, 32000)]  # --quick: under 3 minutes in all


SPEC = register(
    targeted_spec(
        "entropy_regularized_cross_entropy",
        _thermokern,
        eager,
        _reference,
        shapes,
        {"entropy_weight": ENTROPY_WEIGHT, "reduction": "none", "target": "uniform random"},
        "liger/quack: no entropy-regularised cross-entropy to compare with",
    )
)

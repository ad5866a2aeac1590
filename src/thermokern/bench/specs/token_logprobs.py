"""``token_logprobs``: log p(target) per row under softmax(x / T), with uniformly random targets
(the per-token log-probabilities of RL fine-tuning, ``with_entropy=False``)."""

from __future__ import annotations

import torch

import thermokern
from thermokern import reference

from ..registry import register
from ._rows import logit_shapes, target, targeted_spec

TEMPERATURE = 1.0


def eager(x: torch.Tensor) -> torch.Tensor:
    """The natural PyTorch way (as RL trainers write it): log_softmax in float32, then gather."""
    lp = torch.log_softmax(x.float() / TEMPERATURE, -1)
    return lp.gather(-1, target(x).unsqueeze(-1)).squeeze(-1)


def _thermokern(x: torch.Tensor, backend: str) -> torch.Tensor:
    return thermokern.token_logprobs(x, target(x), temperature=TEMPERATURE, backend=backend)


def _reference(chunk: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return reference.token_logprobs(chunk, t, temperature=TEMPERATURE)


SPEC = register(
    targeted_spec(
        "token_logprobs",
        _thermokern,
        eager,
        _reference,
        logit_shapes,
        {"temperature": TEMPERATURE, "with_entropy": False, "target": "uniform random"},
        "liger/quack: no token log-prob kernel to compare with",
    )
)

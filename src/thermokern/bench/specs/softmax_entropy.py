"""``softmax_entropy``: the entropy of softmax(x / T) over the last dimension, per row."""

from __future__ import annotations

import torch

import thermokern
from thermokern import reference

from ..providers import Fn, Provider, peer_softmax_providers, standard_providers
from ..registry import register
from ._rows import LOGIT_SCALE, logit_shapes, row_reference_chunks, row_spec

TEMPERATURE = 1.0


def eager(x: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """The natural PyTorch way: log_softmax, then -(p * log p).sum."""
    lp = torch.log_softmax(x / temperature, -1)
    return -(lp.exp() * lp).sum(-1)


def _thermokern(x: torch.Tensor, backend: str) -> torch.Tensor:
    return thermokern.softmax_entropy(x, -1, temperature=TEMPERATURE, backend=backend)


def _peer(softmax: Fn, x: torch.Tensor) -> torch.Tensor:
    """A peer library's softmax kernel, then the entropy of its probabilities."""
    return torch.special.entr(softmax(x / TEMPERATURE)).sum(-1)


def providers(device: str) -> tuple[list[Provider], list[str]]:
    provs, notes = standard_providers(device, _thermokern, eager)
    peers, peer_notes = peer_softmax_providers(
        device,
        _peer,
        "has no fused softmax-entropy kernel; timed as its softmax kernel followed by "
        "torch.special.entr(p).sum(-1)",
    )
    return provs + peers, notes + peer_notes


def reference_chunks(x: torch.Tensor, grad: torch.Tensor | None, mode: str):
    """float64 entropy (``fwd``) or gradient (``fwd+bwd``) by :func:`thermokern.reference.softmax_entropy`."""
    return row_reference_chunks(
        x, grad, mode, lambda chunk, rows: reference.softmax_entropy(chunk, -1, temperature=TEMPERATURE)
    )


SPEC = register(
    row_spec(
        "softmax_entropy",
        providers,
        reference_chunks,
        logit_shapes,
        {"dim": -1, "temperature": TEMPERATURE, "logits": f"randn * {LOGIT_SCALE}"},
    )
)

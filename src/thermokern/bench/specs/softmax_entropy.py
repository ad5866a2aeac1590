"""``softmax_entropy``: the entropy of softmax(x / T) over the last dimension, per row."""

from __future__ import annotations

import torch

import thermokern
from thermokern import reference

from ..providers import Fn, Provider, peer_softmax_providers, standard_providers
from ..registry import OpSpec, register, tensor_bytes
from ._rows import (
    LOGIT_SCALE,
    logit_dtypes,
    logit_shapes,
    logits,
    row_grad,
    row_min_bytes,
    row_reference_chunks,
)

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
    OpSpec(
        name="softmax_entropy",
        providers=providers,
        make_input=logits,
        make_grad=row_grad,
        min_bytes=row_min_bytes,
        input_bytes=tensor_bytes,
        reference_chunks=reference_chunks,
        default_shapes=logit_shapes,
        default_dtypes=logit_dtypes,
        params={"dim": -1, "temperature": TEMPERATURE, "logits": f"randn * {LOGIT_SCALE}"},
    )
)

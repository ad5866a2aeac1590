"""``logsumexp`` over the last dimension, and ``logsumexp_masked``: the same with a broadcast
padding mask (a padded vocabulary)."""

from __future__ import annotations

import torch

import thermokern

from ..providers import Provider, standard_providers
from ..registry import register
from ._rows import LOGIT_SCALE, partition_shapes, row_reference_chunks, row_spec


# ============================================================================ logsumexp
def eager(x: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(x, -1)


def providers(device: str) -> tuple[list[Provider], list[str]]:
    provs, notes = standard_providers(
        device, lambda x, backend: thermokern.logsumexp(x, -1, backend=backend), eager
    )
    notes.append("eager: torch.logsumexp; liger/quack: no logsumexp op to compare with")
    return provs, notes


def reference_chunks(x: torch.Tensor, grad: torch.Tensor | None, mode: str):
    return row_reference_chunks(x, grad, mode, lambda chunk, rows: torch.logsumexp(chunk, -1))


SPEC = register(
    row_spec(
        "logsumexp",
        providers,
        reference_chunks,
        partition_shapes,
        {"dim": -1, "input": f"randn * {LOGIT_SCALE}"},
    )
)


# ============================================================================ logsumexp_masked
# A padded vocabulary: a (C,) bool mask keeping the first 90 % of the classes, broadcast over
# the rows (thermokern reads it in place; eager PyTorch fills the padding with -inf first).
PAD_KEEP = 0.9
_PAD_MASKS: dict[tuple[int, str], torch.Tensor] = {}


def pad_mask(c: int, device: torch.device) -> torch.Tensor:
    """The (C,) padding mask on ``device`` (cached)."""
    key = (c, str(device))
    if key not in _PAD_MASKS:
        _PAD_MASKS[key] = torch.arange(c, device=device) < max(1, int(c * PAD_KEEP))
    return _PAD_MASKS[key]


def eager_masked(x: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(x.masked_fill(~pad_mask(x.shape[-1], x.device), float("-inf")), -1)


def _thermokern_masked(x: torch.Tensor, backend: str) -> torch.Tensor:
    return thermokern.logsumexp(x, -1, mask=pad_mask(x.shape[-1], x.device), backend=backend)


def masked_providers(device: str) -> tuple[list[Provider], list[str]]:
    provs, notes = standard_providers(device, _thermokern_masked, eager_masked)
    notes.append(
        f"mask: (C,) bool, the first {PAD_KEEP:.0%} of the classes kept, broadcast over the rows; "
        "eager: masked_fill(-inf), then torch.logsumexp"
    )
    return provs, notes


def masked_reference_chunks(x: torch.Tensor, grad: torch.Tensor | None, mode: str):
    return row_reference_chunks(x, grad, mode, lambda chunk, rows: eager_masked(chunk))


MASKED_SPEC = register(
    row_spec(
        "logsumexp_masked",
        masked_providers,
        masked_reference_chunks,
        partition_shapes,
        {"dim": -1, "input": f"randn * {LOGIT_SCALE}", "mask": f"(C,), first {PAD_KEEP:.0%} kept"},
    )
)

"""Triton launchers for softmax_entropy: the row kernels of kernels/_common.py with no target.

The online row statistics (m, d, s), the 1/T convention and the kernels are in
kernels/_common.py; per row, with k = 1/T, H = log d - s/d and log p = k(x - m) - log d, and
    dH/dx_j = -k p_j (log p_j + H).
"""

from __future__ import annotations

import torch

from ._common import _RowLaunch, in_place_twin, launcher


@launcher
def softmax_entropy_fwd(
    logits: torch.Tensor, inv_t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row (entropy, shift, log_norm) of a (N, C) tensor with unit stride along C.

    ``inv_t``: 1-D, accumulation dtype (float64 for float64 logits, else float32), on the
    logits' device, 1 element (the same 1/T for every row) or N (one 1/T per row).
    """
    return _RowLaunch("entropy", logits, inv_t).forward()


@launcher
def softmax_entropy_bwd(
    grad: torch.Tensor,
    logits: torch.Tensor,
    inv_t: torch.Tensor,
    entropy: torch.Tensor,
    shift: torch.Tensor,
    log_norm: torch.Tensor,
    in_place: bool = False,
) -> torch.Tensor:
    """Gradient w.r.t. a (N, C) logits tensor, as a contiguous (N, C) tensor of its dtype.

    ``inv_t`` as for :func:`softmax_entropy_fwd` (the same tensor the forward got).
    ``in_place``: write the gradient over ``logits`` (contiguous) instead; that is
    :func:`softmax_entropy_bwd_`.
    """
    rows = _RowLaunch("entropy", logits, inv_t)
    return rows.backward(grad, entropy, shift, log_norm, in_place=in_place)


softmax_entropy_bwd_ = in_place_twin(softmax_entropy_bwd)

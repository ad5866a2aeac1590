"""Triton launchers for the entropy-regularised cross-entropy: the row kernels of
kernels/_common.py with OUTPUT_LOSS.

Per row i of a (N, C) logits tensor x with target y and k = 1/T (z = k x):
    loss_i = CE_i - beta H_i + zw lse_i^2
    CE_i   = (1 - eps)(lse - z_y) + eps (lse - mean_j z_j)     (label smoothing eps)
with the online statistics of kernels/_common.py (csrc/include/thermokern/row_stats.h):
    m = max x (input units), d = sum e^{k(x-m)}, s = sum k(x-m) e^{k(x-m)},
    H = log d - s/d,  log_norm = log d,  lse = k m + log d,  log p_j = k(x_j - m) - log d.
CE is formed from shifted differences, free of the cancellation of lse - z_y for large logits:
    CE = log d + k [(1 - eps)(m - x_y) + eps (m - r - mean_j (x_j - r))],
r = x_y when finite (else 0), so that the smoothing sum runs over differences x_j - x_y.
The gradient:
    dloss/dx_j = g k [p_j (1 + beta (log p_j + H) + 2 zw lse) - (1 - eps)[j = y] - eps / C].
Rows whose target is ``ignore_index`` get loss 0 and a zero gradient (their statistics are
still written); a target outside [0, C) that is not ``ignore_index`` is never read and gives a
NaN loss and a NaN gradient row.
The float weights beta, eps, zw reach the kernels as 1-element accumulation-dtype tensors
(``torch.full``: no host sync, CUDA-graph safe), like 1/T (see ``_RowLaunch``).
"""

from __future__ import annotations

import torch

from ._common import _RowLaunch, in_place_twin, launcher


@launcher
def cross_entropy_fwd(
    logits: torch.Tensor,
    target: torch.Tensor,
    inv_t: torch.Tensor,
    entropy_weight: float,
    label_smoothing: float,
    ignore_index: int,
    z_loss_weight: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row (loss, entropy, shift, log_norm), all (N,) in the accumulation dtype.

    ``logits``: (N, C) with unit stride along C. ``target``: (N,) int64. ``inv_t``: 1-D,
    accumulation dtype (float64 for float64 logits, else float32), on the logits' device, 1
    element (the same 1/T for every row) or N (one per row).
    """
    weights = (entropy_weight, label_smoothing, z_loss_weight)
    return _RowLaunch("loss", logits, inv_t, target, ignore_index, *weights).forward()


@launcher
def cross_entropy_bwd(
    grad: torch.Tensor,
    logits: torch.Tensor,
    target: torch.Tensor,
    inv_t: torch.Tensor,
    entropy: torch.Tensor,
    shift: torch.Tensor,
    log_norm: torch.Tensor,
    entropy_weight: float,
    label_smoothing: float,
    ignore_index: int,
    z_loss_weight: float,
    in_place: bool = False,
) -> torch.Tensor:
    """Gradient of sum_i grad_i loss_i w.r.t. the (N, C) logits, contiguous, in their dtype.

    ``grad``: (N,) upstream gradient of the per-row loss; the other arguments as given to /
    returned by :func:`cross_entropy_fwd`.
    ``in_place``: write the gradient over ``logits`` (contiguous) instead; that is
    :func:`cross_entropy_bwd_`.
    """
    weights = (entropy_weight, label_smoothing, z_loss_weight)
    rows = _RowLaunch("loss", logits, inv_t, target, ignore_index, *weights)
    return rows.backward(grad, entropy, shift, log_norm, in_place=in_place)


cross_entropy_bwd_ = in_place_twin(cross_entropy_bwd)

"""Triton launchers for token_logprobs: the log-probability of each row's target under
softmax(x / T), with the row's entropy; the row kernels of kernels/_common.py with OUTPUT_LOGP.

Per row i of a (N, C) logits tensor x with target y and k = 1/T, with the online statistics
of kernels/_common.py (csrc/include/thermokern/row_stats.h):
    m = max x (input units), d = sum e^{k(x-m)}, s = sum k(x-m) e^{k(x-m)},
    H = log d - s/d,  log_norm = log d,  log p_j = k(x_j - m) - log d,
    logp_i = log p_y = k(x_y - m) - log d,
formed from the shifted difference x_y - m, free of the cancellation of lse - z_y for large
logits. (entropy, shift, log_norm) are those of softmax_entropy, written for every row (also
ignored ones); they are all the backward needs. With upstream gradients g_l of logp and g_H
of H (absent: g_H = 0),
    dL/dx_j = k [g_l [j = y] - p_j (g_l + g_H (log p_j + H))],
where a term carrying p_j = 0 is 0 (never 0 * -inf). Rows whose target is ``ignore_index``
get logp 0 and a zero gradient row; a target outside [0, C) that is not ``ignore_index`` is
never read and gives a NaN logp and a NaN gradient row.
"""

from __future__ import annotations

import torch

from ._common import _RowLaunch, in_place_twin, launcher


@launcher
def token_logprobs_fwd(
    logits: torch.Tensor,
    target: torch.Tensor,
    inv_t: torch.Tensor,
    ignore_index: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row (logp, entropy, shift, log_norm), all (N,) in the accumulation dtype.

    ``logits``: (N, C) with unit stride along C. ``target``: (N,) int64. ``inv_t``: 1-D,
    accumulation dtype (float64 for float64 logits, else float32), on the logits' device, 1
    element (the same 1/T for every row) or N (one per row).
    """
    return _RowLaunch("logp", logits, inv_t, target, ignore_index).forward()


@launcher
def token_logprobs_bwd(
    grad_logp: torch.Tensor,
    grad_entropy: torch.Tensor | None,
    logits: torch.Tensor,
    target: torch.Tensor,
    inv_t: torch.Tensor,
    entropy: torch.Tensor,
    shift: torch.Tensor,
    log_norm: torch.Tensor,
    ignore_index: int,
    in_place: bool = False,
) -> torch.Tensor:
    """Gradient of sum_i (grad_logp_i logp_i + grad_entropy_i H_i) w.r.t. the (N, C) logits,
    contiguous, in their dtype.

    ``grad_logp``, ``grad_entropy``: (N,) upstream gradients (``grad_entropy`` None: no entropy
    term); the other arguments as given to / returned by :func:`token_logprobs_fwd`.
    ``in_place``: write the gradient over ``logits`` (contiguous) instead; that is
    :func:`token_logprobs_bwd_`.
    """
    rows = _RowLaunch("logp", logits, inv_t, target, ignore_index)
    return rows.backward(grad_logp, entropy, shift, log_norm, grad_entropy, in_place)


token_logprobs_bwd_ = in_place_twin(token_logprobs_bwd)

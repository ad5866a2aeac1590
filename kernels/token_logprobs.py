"""Triton kernels for token_logprobs: the log-probability of each row's target under
softmax(x / T), with the row's entropy, and their launchers.

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
import triton
import triton.language as tl

from ._common import (
    _load_shift_norm,
    _log_p,
    _per_target,
    _row_start,
    _row_stats,
    _RowLaunch,
    _store_row_grad,
    _store_row_stats,
    _target,
    in_place_twin,
    launcher,
)


@triton.jit
def _token_logprobs_fwd_kernel(
    x_ptr,  # (N, C) logits, unit stride along C
    target_ptr,  # (N,) int64 target class of each row
    logp_ptr,  # (N,) out: log p of the target, accumulation dtype
    entropy_ptr,  # (N,) out: entropy of softmax(k x), accumulation dtype
    shift_ptr,  # (N,) out: the shift m (the row maximum, input units), accumulation dtype
    log_norm_ptr,  # (N,) out: log sum e^{k(x - m)}, accumulation dtype
    C,  # number of classes
    row_stride,  # elements between rows of x
    inv_t_ptr,  # (1,) or (N,) 1 / temperature, accumulation dtype
    ignore_index,  # target value of rows whose logp is 0
    INV_T_STRIDE: tl.constexpr,  # 0: one 1/T for every row; 1: one per row
    ACC: tl.constexpr,  # accumulation dtype (float32, or float64 for float64 input)
    BLOCK_C: tl.constexpr,  # columns per step
):
    row, x_row, inv_t = _row_start(x_ptr, row_stride, inv_t_ptr, INV_T_STRIDE, ACC)
    tgt, in_range, x_y = _target(x_row, target_ptr, row, C, ACC)  # out of range: logp NaN below
    m, log_d, h, _ = _row_stats(x_row, C, inv_t, 0.0, SUM_X=False, ACC=ACC, BLOCK_C=BLOCK_C)
    logp = _log_p(x_y, m, log_d, inv_t)
    tl.store(logp_ptr + row, _per_target(logp, tgt, in_range, ignore_index, ACC))
    _store_row_stats(row, entropy_ptr, shift_ptr, log_norm_ptr, h, m, log_d)


@triton.jit
def _token_logprobs_bwd_kernel(
    grad_logp_ptr,  # (N,) upstream gradient of logp, accumulation dtype
    grad_entropy_ptr,  # (N,) upstream gradient of the entropy (read only if HAS_ENTROPY_GRAD)
    x_ptr,  # (N, C) logits, unit stride along C
    target_ptr,  # (N,) int64 target class of each row
    entropy_ptr,  # (N,) entropy saved by the forward, accumulation dtype
    shift_ptr,  # (N,) shift saved by the forward
    log_norm_ptr,  # (N,) log-normaliser saved by the forward
    grad_x_ptr,  # (N, C) out, contiguous, input dtype
    C,  # number of classes
    row_stride,  # elements between rows of x
    inv_t_ptr,  # (1,) or (N,) 1 / temperature, accumulation dtype
    ignore_index,  # target value of rows that get a zero gradient
    INV_T_STRIDE: tl.constexpr,  # 0: one 1/T for every row; 1: one per row
    HAS_ENTROPY_GRAD: tl.constexpr,  # grad_entropy given: add its term
    ACC: tl.constexpr,  # accumulation dtype
    BLOCK_C: tl.constexpr,  # columns per step
):
    row, x_row, inv_t = _row_start(x_ptr, row_stride, inv_t_ptr, INV_T_STRIDE, ACC)
    tgt = tl.load(target_ptr + row).to(tl.int64)
    g_l = tl.load(grad_logp_ptr + row).to(ACC)
    mx, ln = _load_shift_norm(row, shift_ptr, log_norm_ptr, ACC)
    # g_j = k (g_l [j = y] - p_j (g_l + g_H (log p_j + H))) = -k (p_j (w0 + g_H log p_j) - g_l [j = y])
    g_h = tl.zeros((), ACC)
    w0 = g_l
    if HAS_ENTROPY_GRAD:
        g_h = tl.load(grad_entropy_ptr + row).to(ACC)
        w0 = g_l + g_h * tl.load(entropy_ptr + row).to(ACC)
    _store_row_grad(
        x_row, grad_x_ptr + row * C, C, tgt, ignore_index, inv_t, mx, ln, -inv_t, w0, g_h, g_l, 0.0,
        HAS_ENTROPY_GRAD, ACC, BLOCK_C,
    )  # fmt: skip


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
    rows = _RowLaunch(logits, inv_t, target)
    outputs = rows.row_outputs(4)  # logp, entropy, shift, log_norm
    rows(_token_logprobs_fwd_kernel, (logits, rows.target, *outputs), (int(ignore_index),))
    return outputs


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
    rows = _RowLaunch(logits, inv_t, target)
    grad_x = rows.grad_output(in_place)
    grad_logp = rows.upstream(grad_logp)
    has_entropy_grad = grad_entropy is not None
    # Without grad_entropy the kernel never reads its pointer: any accumulation-dtype tensor does.
    grad_entropy = rows.upstream(grad_entropy) if has_entropy_grad else grad_logp
    saved = rows.saved(entropy, shift, log_norm)
    tensors = (grad_logp, grad_entropy, logits, rows.target, *saved, grad_x)
    rows(_token_logprobs_bwd_kernel, tensors, (int(ignore_index),), HAS_ENTROPY_GRAD=has_entropy_grad)
    return grad_x


token_logprobs_bwd_ = in_place_twin(token_logprobs_bwd)

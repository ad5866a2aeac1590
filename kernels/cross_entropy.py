"""Triton kernels for the entropy-regularised cross-entropy, with their launchers.

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
(``torch.full``: no host sync, CUDA-graph safe), like 1/T: Triton types a Python float argument
as fp32, which would cost float64 inputs 1e-8 of relative accuracy. A weight that is 0 is not
materialised: its HAS_* flag is off and the kernel never reads it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import (
    _load_shift_norm,
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
def _cross_entropy_fwd_kernel(
    x_ptr,  # (N, C) logits, unit stride along C
    target_ptr,  # (N,) int64 target class of each row
    loss_ptr,  # (N,) out: per-row loss, accumulation dtype
    entropy_ptr,  # (N,) out: entropy of softmax(k x), accumulation dtype
    shift_ptr,  # (N,) out: the shift m (the row maximum, input units), accumulation dtype
    log_norm_ptr,  # (N,) out: log sum e^{k(x - m)}, accumulation dtype
    C,  # number of classes
    row_stride,  # elements between rows of x
    inv_t_ptr,  # (1,) or (N,) 1 / temperature, accumulation dtype
    beta_ptr,  # (1,) entropy weight, accumulation dtype (read only if HAS_ENTROPY)
    eps_ptr,  # (1,) label smoothing, accumulation dtype (read only if HAS_SMOOTHING)
    zw_ptr,  # (1,) z-loss weight, accumulation dtype (read only if HAS_Z_LOSS)
    ignore_index,  # target value of rows that contribute nothing
    INV_T_STRIDE: tl.constexpr,  # 0: one 1/T for every row; 1: one per row
    HAS_SMOOTHING: tl.constexpr,  # eps != 0: also sum the row (the mean_j z_j term)
    HAS_ENTROPY: tl.constexpr,  # beta != 0: subtract beta H
    HAS_Z_LOSS: tl.constexpr,  # zw != 0: add zw lse^2
    ACC: tl.constexpr,  # accumulation dtype (float32, or float64 for float64 input)
    BLOCK_C: tl.constexpr,  # columns per step
):
    row, x_row, inv_t = _row_start(x_ptr, row_stride, inv_t_ptr, INV_T_STRIDE, ACC)
    tgt, in_range, x_y = _target(x_row, target_ptr, row, C, ACC)  # out of range: loss NaN below
    # Reference the smoothing sum is taken against: x_y when finite (differences near the
    # target are exact), else 0 so that an infinite x_y never meets itself (inf - inf).
    ref = tl.where(tl.abs(x_y) < float("inf"), x_y, 0.0).to(ACC)
    # sx = sum_j (x_j - ref), only with HAS_SMOOTHING
    m, log_d, h, sx = _row_stats(x_row, C, inv_t, ref, SUM_X=HAS_SMOOTHING, ACC=ACC, BLOCK_C=BLOCK_C)
    if HAS_SMOOTHING:
        eps = tl.load(eps_ptr).to(ACC)
        mean_diff = m - ref - sx / C  # m - mean_j x_j
        loss = log_d + inv_t * ((1.0 - eps) * (m - x_y) + eps * mean_diff)
    else:
        loss = log_d + inv_t * (m - x_y)
    if HAS_ENTROPY:
        loss -= tl.load(beta_ptr).to(ACC) * h
    if HAS_Z_LOSS:
        lse = m * inv_t + log_d
        loss += tl.load(zw_ptr).to(ACC) * lse * lse
    tl.store(loss_ptr + row, _per_target(loss, tgt, in_range, ignore_index, ACC))
    _store_row_stats(row, entropy_ptr, shift_ptr, log_norm_ptr, h, m, log_d)


@triton.jit
def _cross_entropy_bwd_kernel(
    grad_ptr,  # (N,) upstream gradient of the per-row loss, accumulation dtype
    x_ptr,  # (N, C) logits, unit stride along C
    target_ptr,  # (N,) int64 target class of each row
    entropy_ptr,  # (N,) entropy saved by the forward, accumulation dtype
    shift_ptr,  # (N,) shift saved by the forward
    log_norm_ptr,  # (N,) log-normaliser saved by the forward
    grad_x_ptr,  # (N, C) out, contiguous, input dtype
    C,  # number of classes
    row_stride,  # elements between rows of x
    inv_t_ptr,  # (1,) or (N,) 1 / temperature, accumulation dtype
    beta_ptr,  # (1,) entropy weight, accumulation dtype (read only if HAS_ENTROPY)
    eps_ptr,  # (1,) label smoothing, accumulation dtype (read only if HAS_SMOOTHING)
    zw_ptr,  # (1,) z-loss weight, accumulation dtype (read only if HAS_Z_LOSS)
    ignore_index,  # target value of rows that contribute nothing
    INV_T_STRIDE: tl.constexpr,  # 0: one 1/T for every row; 1: one per row
    HAS_SMOOTHING: tl.constexpr,  # eps != 0
    HAS_ENTROPY: tl.constexpr,  # beta != 0
    HAS_Z_LOSS: tl.constexpr,  # zw != 0
    ACC: tl.constexpr,  # accumulation dtype
    BLOCK_C: tl.constexpr,  # columns per step
):
    row, x_row, inv_t = _row_start(x_ptr, row_stride, inv_t_ptr, INV_T_STRIDE, ACC)
    tgt = tl.load(target_ptr + row).to(tl.int64)
    mx, ln = _load_shift_norm(row, shift_ptr, log_norm_ptr, ACC)
    # p_j is weighted by w_j = 1 + beta (log p_j + H) + 2 zw lse = w0 + beta log p_j.
    w0 = tl.full((), 1.0, ACC)
    beta = tl.zeros((), ACC)
    if HAS_Z_LOSS:
        w0 += 2.0 * tl.load(zw_ptr).to(ACC) * (mx * inv_t + ln)
    if HAS_ENTROPY:
        beta = tl.load(beta_ptr).to(ACC)
        w0 += beta * tl.load(entropy_ptr + row).to(ACC)
    if HAS_SMOOTHING:
        eps = tl.load(eps_ptr).to(ACC)
        on_target = 1.0 - eps
        off_target = eps / C
    else:
        on_target = tl.full((), 1.0, ACC)
        off_target = tl.zeros((), ACC)
    coef = tl.load(grad_ptr + row).to(ACC) * inv_t
    _store_row_grad(
        x_row, grad_x_ptr + row * C, C, tgt, ignore_index, inv_t, mx, ln, coef, w0, beta, on_target, off_target,
        HAS_ENTROPY, ACC, BLOCK_C,
    )  # fmt: skip


def _acc_scalar(value: float, acc_t: torch.dtype, device: torch.device) -> torch.Tensor:
    # torch.full: a fill kernel, no host-to-device copy (no sync; capturable in CUDA graphs).
    return torch.full((1,), value, dtype=acc_t, device=device)


def _weights(rows: _RowLaunch, entropy_weight, label_smoothing, z_loss_weight):
    """(beta, eps, zw) kernel arguments and HAS_* flags; a zero weight is never read, so its
    argument is any tensor of the right dtype (inv_t)."""
    beta, eps, zw = float(entropy_weight), float(label_smoothing), float(z_loss_weight)
    flags = {"HAS_SMOOTHING": eps != 0.0, "HAS_ENTROPY": beta != 0.0, "HAS_Z_LOSS": zw != 0.0}
    device = rows.logits.device
    args = tuple(_acc_scalar(v, rows.acc_t, device) if v != 0.0 else rows.inv_t for v in (beta, eps, zw))
    return args, flags


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
    rows = _RowLaunch(logits, inv_t, target)
    outputs = rows.row_outputs(4)  # loss, entropy, shift, log_norm
    weights, flags = _weights(rows, entropy_weight, label_smoothing, z_loss_weight)
    rows(_cross_entropy_fwd_kernel, (logits, rows.target, *outputs), (*weights, int(ignore_index)), **flags)
    return outputs


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
    rows = _RowLaunch(logits, inv_t, target)
    grad_x = rows.grad_output(in_place)
    weights, flags = _weights(rows, entropy_weight, label_smoothing, z_loss_weight)
    saved = rows.saved(entropy, shift, log_norm)
    tensors = (rows.upstream(grad), logits, rows.target, *saved, grad_x)
    rows(_cross_entropy_bwd_kernel, tensors, (*weights, int(ignore_index)), **flags)
    return grad_x


cross_entropy_bwd_ = in_place_twin(cross_entropy_bwd)

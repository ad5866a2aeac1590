"""Triton kernels for softmax_entropy, with their launchers.

The online row statistics (m, d, s), the 1/T convention and the launcher helpers are in
kernels/_common.py; per row, with k = 1/T, H = log d - s/d and log p = k(x - m) - log d, and
    dH/dx_j = -k p_j (log p_j + H).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import (
    _load_shift_norm,
    _log_p,
    _row_start,
    _row_stats,
    _RowLaunch,
    _store_row_stats,
    _unless_p_zero,
    in_place_twin,
    launcher,
)


@triton.jit
def _softmax_entropy_fwd_kernel(
    x_ptr,  # (N, C) input, unit stride along C
    entropy_ptr,  # (N,) out: entropy, accumulation dtype
    shift_ptr,  # (N,) out: the shift m (here the row maximum, input units), accumulation dtype
    log_norm_ptr,  # (N,) out: log sum e^{(x - max)/T}, accumulation dtype
    C,  # number of classes
    row_stride,  # elements between rows of x
    inv_t_ptr,  # (1,) or (N,) 1 / temperature, accumulation dtype (a Python float would be fp32)
    INV_T_STRIDE: tl.constexpr,  # 0: one 1/T for every row; 1: one per row
    ACC: tl.constexpr,  # accumulation dtype (float32, or float64 for float64 input)
    BLOCK_C: tl.constexpr,  # columns per step
):
    row, x_row, inv_t = _row_start(x_ptr, row_stride, inv_t_ptr, INV_T_STRIDE, ACC)
    m, log_d, h, _ = _row_stats(x_row, C, inv_t, 0.0, SUM_X=False, ACC=ACC, BLOCK_C=BLOCK_C)
    _store_row_stats(row, entropy_ptr, shift_ptr, log_norm_ptr, h, m, log_d)


@triton.jit
def _softmax_entropy_bwd_kernel(
    grad_ptr,  # (N,) upstream gradient of the entropy, accumulation dtype
    x_ptr,  # (N, C) input, unit stride along C
    entropy_ptr,  # (N,) entropy saved by the forward, accumulation dtype
    shift_ptr,  # (N,) shift saved by the forward
    log_norm_ptr,  # (N,) log-normaliser saved by the forward
    grad_x_ptr,  # (N, C) out, contiguous, input dtype
    C,  # number of classes
    row_stride,  # elements between rows of x
    inv_t_ptr,  # (1,) or (N,) 1 / temperature, accumulation dtype
    INV_T_STRIDE: tl.constexpr,  # 0: one 1/T for every row; 1: one per row
    ACC: tl.constexpr,  # accumulation dtype
    BLOCK_C: tl.constexpr,  # columns per step
):
    row, x_row, inv_t = _row_start(x_ptr, row_stride, inv_t_ptr, INV_T_STRIDE, ACC)
    g_row = grad_x_ptr + row * C
    cols = tl.arange(0, BLOCK_C)
    coef = -tl.load(grad_ptr + row).to(ACC) * inv_t
    mx, ln = _load_shift_norm(row, shift_ptr, log_norm_ptr, ACC)
    h = tl.load(entropy_ptr + row).to(ACC)
    for c0 in range(0, C, BLOCK_C):
        mask = c0 + cols < C
        x = tl.load(x_row + c0 + cols, mask=mask, other=0.0).to(ACC)
        logp = _log_p(x, mx, ln, inv_t)
        g = _unless_p_zero(logp, coef * tl.exp(logp) * (logp + h))
        tl.store(g_row + c0 + cols, g.to(grad_x_ptr.dtype.element_ty), mask=mask)


@launcher
def softmax_entropy_fwd(
    logits: torch.Tensor, inv_t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row (entropy, shift, log_norm) of a (N, C) tensor with unit stride along C.

    ``inv_t``: 1-D, accumulation dtype (float64 for float64 logits, else float32), on the
    logits' device, 1 element (the same 1/T for every row) or N (one 1/T per row).
    """
    rows = _RowLaunch(logits, inv_t)
    entropy, shift, log_norm = rows.row_outputs(3)
    rows(_softmax_entropy_fwd_kernel, (logits, entropy, shift, log_norm))
    return entropy, shift, log_norm


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
    rows = _RowLaunch(logits, inv_t)
    grad_x = rows.grad_output(in_place)
    saved = rows.saved(entropy, shift, log_norm)
    rows(_softmax_entropy_bwd_kernel, (rows.upstream(grad), logits, *saved, grad_x))
    return grad_x


softmax_entropy_bwd_ = in_place_twin(softmax_entropy_bwd)

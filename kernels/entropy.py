"""Triton kernels for softmax_entropy, with their launchers.

One program per row; each program walks its row in blocks of BLOCK_C columns keeping scalar
online statistics (m, d, s) as in csrc/include/thermokern/row_stats.h, with k = 1/T:
    m = max x,  d = sum e^{k(x-m)},  s = sum k(x-m) e^{k(x-m)},  H = log d - s/d,
    log p = k(x - m) - log d.
k comes from a 1-D accumulation-dtype tensor of 1 element (one 1/T for every row) or N (one
per row): the kernels read ``inv_t_ptr + row * INV_T_STRIDE`` with INV_T_STRIDE 0 or 1.
Row offsets are int64 (rows * stride passes 2^31 for large vocabularies). The launchers go
through ``torch.library.wrap_triton`` so that ``torch.compile`` can trace them when they run
inside a ``triton_op``.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl


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
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * row_stride
    cols = tl.arange(0, BLOCK_C)
    inv_t = tl.load(inv_t_ptr + row * INV_T_STRIDE).to(ACC)
    m = tl.full((), float("-inf"), ACC)
    d = tl.zeros((), ACC)
    s = tl.zeros((), ACC)
    for c0 in range(0, C, BLOCK_C):
        mask = c0 + cols < C
        x = tl.load(x_row + c0 + cols, mask=mask, other=float("-inf")).to(ACC)
        m_new = tl.maximum(m, tl.max(x, axis=0))
        # Shift by 0 while everything seen is -inf, so that -inf - -inf never appears.
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new).to(ACC)
        delta = (m - m_safe) * inv_t
        alpha = tl.exp(delta)
        s = tl.where(m == float("-inf"), 0.0, (s + delta * d) * alpha).to(ACC)
        d = d * alpha
        y = (x - m_safe) * inv_t  # subtract first: exact for x near the max, whatever T
        e = tl.exp(y)
        d += tl.sum(e, axis=0)
        s += tl.sum(tl.where(x == float("-inf"), 0.0, y * e), axis=0)
        m = m_new
    log_d = tl.log(d)
    tl.store(shift_ptr + row, m)
    tl.store(log_norm_ptr + row, log_d)
    tl.store(entropy_ptr + row, log_d - s / d)


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
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * row_stride
    g_row = grad_x_ptr + row * C
    cols = tl.arange(0, BLOCK_C)
    inv_t = tl.load(inv_t_ptr + row * INV_T_STRIDE).to(ACC)
    coef = -tl.load(grad_ptr + row).to(ACC) * inv_t
    mx = tl.load(shift_ptr + row).to(ACC)
    ln = tl.load(log_norm_ptr + row).to(ACC)
    h = tl.load(entropy_ptr + row).to(ACC)
    for c0 in range(0, C, BLOCK_C):
        mask = c0 + cols < C
        x = tl.load(x_row + c0 + cols, mask=mask, other=0.0).to(ACC)
        logp = (x - mx) * inv_t - ln
        g = tl.where(logp == float("-inf"), 0.0, coef * tl.exp(logp) * (logp + h))
        tl.store(g_row + c0 + cols, g.to(grad_x_ptr.dtype.element_ty), mask=mask)


def _poison(*tensors: torch.Tensor) -> None:
    """Fill fresh outputs with NaN when the tests ask for it (see thermokern._C._set_poison_outputs)."""
    from thermokern import _backend

    if _backend.poison_outputs_enabled():
        for t in tensors:
            t.fill_(float("nan"))


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _block_and_warps(C: int) -> tuple[int, int]:
    # The interpreter runs each program as numpy calls: the larger the block, the fewer calls.
    cap = 16384 if _interpreting() else 4096
    block = min(triton.next_power_of_2(max(C, 1)), cap)
    warps = 4 if block <= 1024 else 8
    return block, warps


def _acc(dtype: torch.dtype):
    return (torch.float64, tl.float64) if dtype == torch.float64 else (torch.float32, tl.float32)


def _inv_t_arg(inv_t: torch.Tensor, n: int, acc_t: torch.dtype) -> tuple[torch.Tensor, int]:
    """``inv_t`` as the kernels read it, with its INV_T_STRIDE (0: shared, 1: per row).

    ``inv_t`` is a 1-D tensor of 1/T in the accumulation dtype (a Python float would reach the
    kernel as fp32 and cost float64 inputs 1e-8 of relative accuracy), with 1 or ``n`` elements.
    A numel-1 tensor is shared by every row, also when ``n == 1``.
    """
    if inv_t.dim() != 1 or inv_t.numel() not in (1, n):
        raise ValueError(f"inv_t: expected a 1-D tensor of 1 or {n} elements, got shape {tuple(inv_t.shape)}")
    if inv_t.dtype != acc_t:
        raise TypeError(f"inv_t: expected dtype {acc_t}, got {inv_t.dtype}")
    if inv_t.numel() == 1:
        return inv_t, 0
    return inv_t.contiguous(), 1


def softmax_entropy_fwd(
    logits: torch.Tensor, inv_t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row (entropy, shift, log_norm) of a (N, C) tensor with unit stride along C.

    ``inv_t``: 1-D, accumulation dtype (float64 for float64 logits, else float32), on the
    logits' device, 1 element (the same 1/T for every row) or N (one 1/T per row).
    """
    N, C = logits.shape
    acc_t, acc_tl = _acc(logits.dtype)
    inv_t, inv_t_stride = _inv_t_arg(inv_t, N, acc_t)
    entropy = torch.empty(N, device=logits.device, dtype=acc_t)
    shift = torch.empty(N, device=logits.device, dtype=acc_t)
    log_norm = torch.empty(N, device=logits.device, dtype=acc_t)
    _poison(entropy, shift, log_norm)
    if N == 0:
        return entropy, shift, log_norm
    block, warps = _block_and_warps(C)
    torch.library.wrap_triton(_softmax_entropy_fwd_kernel)[(N,)](
        logits,
        entropy,
        shift,
        log_norm,
        C,
        logits.stride(0),
        inv_t,
        INV_T_STRIDE=inv_t_stride,
        ACC=acc_tl,
        BLOCK_C=block,
        num_warps=warps,
    )
    return entropy, shift, log_norm


def softmax_entropy_bwd(
    grad: torch.Tensor,
    logits: torch.Tensor,
    inv_t: torch.Tensor,
    entropy: torch.Tensor,
    shift: torch.Tensor,
    log_norm: torch.Tensor,
) -> torch.Tensor:
    """Gradient w.r.t. a (N, C) logits tensor, as a contiguous (N, C) tensor of its dtype.

    ``inv_t`` as for :func:`softmax_entropy_fwd` (the same tensor the forward got).
    """
    N, C = logits.shape
    acc_t, acc_tl = _acc(logits.dtype)
    inv_t, inv_t_stride = _inv_t_arg(inv_t, N, acc_t)
    grad_x = torch.empty((N, C), device=logits.device, dtype=logits.dtype)
    _poison(grad_x)
    if N == 0:
        return grad_x
    block, warps = _block_and_warps(C)
    torch.library.wrap_triton(_softmax_entropy_bwd_kernel)[(N,)](
        grad.to(acc_t).contiguous(),
        logits,
        entropy.contiguous(),
        shift.contiguous(),
        log_norm.contiguous(),
        grad_x,
        C,
        logits.stride(0),
        inv_t,
        INV_T_STRIDE=inv_t_stride,
        ACC=acc_tl,
        BLOCK_C=block,
        num_warps=warps,
    )
    return grad_x

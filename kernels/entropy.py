"""Triton kernels for softmax_entropy, with their launchers.

One program per row; each program walks its row in blocks of BLOCK_C columns keeping scalar
online statistics (m, d, s) as in csrc/include/thermokern/row_stats.h:
    m = max z,  d = sum e^{z-m},  s = sum (z-m) e^{z-m},  lse = m + log d,  H = log d - s/d.
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
    lse_ptr,  # (N,) out: log-sum-exp of x / T, accumulation dtype
    C,  # number of classes
    row_stride,  # elements between rows of x
    inv_t,  # 1 / temperature
    ACC: tl.constexpr,  # accumulation dtype (float32, or float64 for float64 input)
    BLOCK_C: tl.constexpr,  # columns per step
):
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * row_stride
    cols = tl.arange(0, BLOCK_C)
    m = tl.full((), float("-inf"), ACC)
    d = tl.zeros((), ACC)
    s = tl.zeros((), ACC)
    for c0 in range(0, C, BLOCK_C):
        mask = c0 + cols < C
        z = tl.load(x_row + c0 + cols, mask=mask, other=float("-inf")).to(ACC) * inv_t
        m_new = tl.maximum(m, tl.max(z, axis=0))
        # Shift by 0 while everything seen is -inf, so that -inf - -inf never appears.
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new).to(ACC)
        alpha = tl.exp(m - m_safe)
        s = tl.where(m == float("-inf"), 0.0, (s + (m - m_safe) * d) * alpha).to(ACC)
        d = d * alpha
        y = z - m_safe
        e = tl.exp(y)
        d += tl.sum(e, axis=0)
        s += tl.sum(tl.where(z == float("-inf"), 0.0, y * e), axis=0)
        m = m_new
    log_d = tl.log(d)
    tl.store(lse_ptr + row, m + log_d)
    tl.store(entropy_ptr + row, log_d - s / d)


@triton.jit
def _softmax_entropy_bwd_kernel(
    grad_ptr,  # (N,) upstream gradient of the entropy, accumulation dtype
    x_ptr,  # (N, C) input, unit stride along C
    entropy_ptr,  # (N,) entropy saved by the forward, accumulation dtype
    lse_ptr,  # (N,) lse saved by the forward, accumulation dtype
    grad_x_ptr,  # (N, C) out, contiguous, input dtype
    C,  # number of classes
    row_stride,  # elements between rows of x
    inv_t,  # 1 / temperature
    ACC: tl.constexpr,  # accumulation dtype
    BLOCK_C: tl.constexpr,  # columns per step
):
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * row_stride
    g_row = grad_x_ptr + row * C
    cols = tl.arange(0, BLOCK_C)
    coef = -tl.load(grad_ptr + row).to(ACC) * inv_t
    lse = tl.load(lse_ptr + row).to(ACC)
    h = tl.load(entropy_ptr + row).to(ACC)
    for c0 in range(0, C, BLOCK_C):
        mask = c0 + cols < C
        logp = tl.load(x_row + c0 + cols, mask=mask, other=0.0).to(ACC) * inv_t - lse
        g = tl.where(logp == float("-inf"), 0.0, coef * tl.exp(logp) * (logp + h))
        tl.store(g_row + c0 + cols, g.to(grad_x_ptr.dtype.element_ty), mask=mask)


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


def softmax_entropy_fwd(logits: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row (entropy, lse) of a (N, C) tensor with unit stride along C."""
    N, C = logits.shape
    acc_t, acc_tl = _acc(logits.dtype)
    entropy = torch.empty(N, device=logits.device, dtype=acc_t)
    lse = torch.empty(N, device=logits.device, dtype=acc_t)
    if N == 0:
        return entropy, lse
    block, warps = _block_and_warps(C)
    torch.library.wrap_triton(_softmax_entropy_fwd_kernel)[(N,)](
        logits, entropy, lse, C, logits.stride(0), 1.0 / temperature,
        ACC=acc_tl, BLOCK_C=block, num_warps=warps,
    )
    return entropy, lse


def softmax_entropy_bwd(
    grad: torch.Tensor, logits: torch.Tensor, entropy: torch.Tensor, lse: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Gradient w.r.t. a (N, C) logits tensor, as a contiguous (N, C) tensor of its dtype."""
    N, C = logits.shape
    acc_t, acc_tl = _acc(logits.dtype)
    grad_x = torch.empty((N, C), device=logits.device, dtype=logits.dtype)
    if N == 0:
        return grad_x
    block, warps = _block_and_warps(C)
    torch.library.wrap_triton(_softmax_entropy_bwd_kernel)[(N,)](
        grad.to(acc_t).contiguous(), logits, entropy.contiguous(), lse.contiguous(), grad_x,
        C, logits.stride(0), 1.0 / temperature,
        ACC=acc_tl, BLOCK_C=block, num_warps=warps,
    )
    return grad_x

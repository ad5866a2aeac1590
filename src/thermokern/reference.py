"""Pure-PyTorch implementations of every thermokern op: the specification.

These are what the tests compare the kernels against (in float64), and the ``reference``
backend. They favour clarity and numerical safety over speed, but stay differentiable with
PyTorch's own autograd.
"""

from __future__ import annotations

import torch


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: float64 for float64, float32 for everything else."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def softmax_entropy(logits: torch.Tensor, dim: int = -1, *, temperature: float = 1.0) -> torch.Tensor:
    """H(softmax(logits / T)) = -sum p log p along ``dim``, in the accumulation dtype internally.

    Computed as log sum e^y - sum p y with y = z - max z: the shift keeps y <= 0 (no overflow,
    no cancellation between two large numbers), and entries at -inf contribute 0, not NaN, to
    the value and the gradient. Rows that are all -inf, or contain +inf or NaN, give NaN, as
    softmax does.
    """
    z = logits.to(acc_dtype(logits.dtype)) / temperature
    shift = z.amax(dim=dim, keepdim=True).detach()  # H is shift-invariant: no gradient needed
    y = z - shift
    log_d = torch.logsumexp(y, dim=dim, keepdim=True)
    p = torch.exp(y - log_d)
    y_safe = torch.where(y == float("-inf"), torch.zeros_like(y), y)
    h = log_d.squeeze(dim) - (p * y_safe).sum(dim=dim)
    return h.to(logits.dtype)

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


def _temperature_along(temperature, logits: torch.Tensor, dim: int):
    """A float, or a temperature tensor broadcastable to the output shape (``logits`` without
    ``dim``), made to broadcast against ``logits`` along ``dim`` (``dim`` non-negative)."""
    if not isinstance(temperature, torch.Tensor):
        return temperature
    t = temperature.to(device=logits.device, dtype=acc_dtype(logits.dtype))
    if t.dim() == 0:
        return t
    out_shape = logits.shape[:dim] + logits.shape[dim + 1 :]
    return t.broadcast_to(out_shape).unsqueeze(dim)


def softmax_entropy(logits: torch.Tensor, dim: int = -1, *, temperature=1.0) -> torch.Tensor:
    """H(softmax(logits / T)) = -sum p log p along ``dim``, in the accumulation dtype internally.

    Computed as log sum e^y - sum p y with y = z - max z: the shift keeps y <= 0 (no overflow,
    no cancellation between two large numbers), and entries at -inf contribute 0, not NaN, to
    the value and the gradient. Rows that are all -inf, or contain +inf or NaN, give NaN, as
    softmax does.
    """
    dim = dim % logits.dim()
    z = logits.to(acc_dtype(logits.dtype)) / _temperature_along(temperature, logits, dim)
    shift = z.amax(dim=dim, keepdim=True).detach()  # H is shift-invariant: no gradient needed
    y = z - shift
    log_d = torch.logsumexp(y, dim=dim, keepdim=True)
    p = torch.exp(y - log_d)
    y_safe = torch.where(y == float("-inf"), torch.zeros_like(y), y)
    h = log_d.squeeze(dim) - (p * y_safe).sum(dim=dim)
    return h.to(logits.dtype)


def entropy_regularized_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    entropy_weight: float = 0.0,
    temperature=1.0,
    label_smoothing: float = 0.0,
    ignore_index: int = -100,
    reduction: str = "mean",
    z_loss_weight: float = 0.0,
) -> torch.Tensor:
    """CE(z, target; label smoothing) - entropy_weight * H(softmax z) + z_loss_weight * lse(z)^2
    per row, z = logits / T over the last dim; rows whose target is ignore_index give 0 and
    are not counted by "mean". Loss in float32 (float64 for float64 logits)."""
    acc = acc_dtype(logits.dtype)
    last = logits.dim() - 1
    z = logits.to(acc) / _temperature_along(temperature, logits, last)
    logp = torch.log_softmax(z, dim=-1)
    valid = target != ignore_index
    safe_target = torch.where(valid, target, torch.zeros_like(target)).long()
    ce = -logp.gather(-1, safe_target.unsqueeze(-1)).squeeze(-1)
    if label_smoothing > 0.0:
        ce = (1.0 - label_smoothing) * ce - label_smoothing * logp.mean(dim=-1)
    loss = ce
    if entropy_weight != 0.0:
        loss = loss - entropy_weight * softmax_entropy(logits.to(acc), -1, temperature=temperature)
    if z_loss_weight != 0.0:
        loss = loss + z_loss_weight * torch.logsumexp(z, dim=-1).square()
    loss = torch.where(valid, loss, torch.zeros_like(loss))
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / valid.sum()

"""``torch.nn.Module`` wrappers of the thermokern ops."""

from __future__ import annotations

import torch
from torch import nn

from thermokern.ops.cross_entropy import entropy_regularized_cross_entropy
from thermokern.ops.softmax_entropy import softmax_entropy

__all__ = ["EntropyRegularizedCrossEntropyLoss", "SoftmaxEntropy"]


def _set_temperature(module: nn.Module, temperature: float | torch.Tensor) -> None:
    """An ``nn.Parameter`` stays a parameter (a learnable temperature: the ops differentiate
    w.r.t. it); another tensor becomes a buffer, so that it follows ``.to(device)``."""
    if isinstance(temperature, nn.Parameter):
        module.temperature = temperature
    elif isinstance(temperature, torch.Tensor):
        module.register_buffer("temperature", temperature.detach().clone())
    else:
        module.temperature = float(temperature)


class SoftmaxEntropy(nn.Module):
    """``H(softmax(logits / T))`` along ``dim``; see :func:`thermokern.softmax_entropy`.

    Args:
        dim: the class dimension.
        temperature: a float > 0, or a tensor of per-row temperatures (registered as a buffer,
            so it follows ``.to(device)``), or an ``nn.Parameter`` (a learnable temperature,
            registered as a parameter).
        reduction: ``"none"`` (per row), ``"mean"`` or ``"sum"`` over the rows.
        backend: as in :func:`thermokern.softmax_entropy`.
    """

    def __init__(
        self,
        dim: int = -1,
        *,
        temperature: float | torch.Tensor = 1.0,
        reduction: str = "none",
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if reduction not in ("none", "mean", "sum"):
            raise ValueError(f"reduction: expected 'none', 'mean' or 'sum', got {reduction!r}")
        self.dim = dim
        self.reduction = reduction
        self.backend = backend
        _set_temperature(self, temperature)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        h = softmax_entropy(logits, self.dim, temperature=self.temperature, backend=self.backend)
        if self.reduction == "mean":
            return h.mean()
        if self.reduction == "sum":
            return h.sum()
        return h

    def extra_repr(self) -> str:
        t = "tensor" if isinstance(self.temperature, torch.Tensor) else self.temperature
        return f"dim={self.dim}, temperature={t}, reduction={self.reduction!r}, backend={self.backend!r}"


class EntropyRegularizedCrossEntropyLoss(nn.Module):
    """``CE - entropy_weight * H + z_loss_weight * lse^2``, fused; a drop-in for
    ``nn.CrossEntropyLoss`` (classes on the last dimension) when ``entropy_weight = 0``.

    See :func:`thermokern.entropy_regularized_cross_entropy` for the arguments. A positive
    ``entropy_weight`` raises the entropy of the predictions (confidence penalty).
    """

    def __init__(
        self,
        *,
        entropy_weight: float = 0.0,
        temperature: float | torch.Tensor = 1.0,
        label_smoothing: float = 0.0,
        ignore_index: int = -100,
        reduction: str = "mean",
        z_loss_weight: float = 0.0,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.entropy_weight = entropy_weight
        self.label_smoothing = label_smoothing
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.z_loss_weight = z_loss_weight
        self.backend = backend
        _set_temperature(self, temperature)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return entropy_regularized_cross_entropy(
            logits,
            target,
            entropy_weight=self.entropy_weight,
            temperature=self.temperature,
            label_smoothing=self.label_smoothing,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            z_loss_weight=self.z_loss_weight,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        return (
            f"entropy_weight={self.entropy_weight}, label_smoothing={self.label_smoothing}, "
            f"ignore_index={self.ignore_index}, reduction={self.reduction!r}, "
            f"z_loss_weight={self.z_loss_weight}, backend={self.backend!r}"
        )

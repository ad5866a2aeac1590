"""``torch.nn.Module`` wrappers of the thermokern ops."""

from __future__ import annotations

import torch
from torch import nn

from thermokern.ops.cross_entropy import entropy_regularized_cross_entropy
from thermokern.ops.linear import linear_cross_entropy, linear_token_logprobs
from thermokern.ops.softmax_entropy import softmax_entropy

__all__ = [
    "EntropyRegularizedCrossEntropyLoss",
    "LinearCrossEntropyLoss",
    "SoftmaxEntropy",
    "TokenLogprobsHead",
]


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


class LinearCrossEntropyLoss(EntropyRegularizedCrossEntropyLoss):
    """The language-model loss from hidden states and an output layer's weight, without the
    (N, V) logits: ``loss(hidden, weight, target, bias=None)`` is
    :func:`thermokern.linear_cross_entropy` with this module's options (those of
    :class:`EntropyRegularizedCrossEntropyLoss`).

    Example:
        >>> loss_fn = thermokern.nn.LinearCrossEntropyLoss(entropy_weight=0.01)  # doctest: +SKIP
        >>> loss = loss_fn(model.last_hidden_state, model.lm_head.weight, labels)  # doctest: +SKIP
    """

    def forward(  # type: ignore[override]
        self,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        target: torch.Tensor,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return linear_cross_entropy(
            hidden, weight, target, bias=bias, entropy_weight=self.entropy_weight, temperature=self.temperature,
            label_smoothing=self.label_smoothing, ignore_index=self.ignore_index, reduction=self.reduction,
            z_loss_weight=self.z_loss_weight, backend=self.backend,
        )  # fmt: skip


class TokenLogprobsHead(nn.Module):
    """The log-probs of given tokens and the entropy per token, straight from hidden states: an
    output layer (``weight`` (V, D), optional ``bias``) that never materialises its logits, for
    RL fine-tuning (see :func:`thermokern.linear_token_logprobs`).

    ``head(hidden, target)`` returns ``(logp, entropy)`` shaped like ``target``. Build it around
    an existing layer with :meth:`from_linear` (the parameters are shared, not copied).

    Args:
        weight: the (V, D) weight (registered as a parameter when it is one).
        bias: an optional (V,) bias.
        temperature: a float > 0 or a tensor (see :class:`SoftmaxEntropy`).
        ignore_index: rows with this target give 0 and no gradient.
        backend: the backend of the row kernels.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None = None,
        *,
        temperature: float | torch.Tensor = 1.0,
        ignore_index: int = -100,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.weight = (
            weight if isinstance(weight, nn.Parameter) else nn.Parameter(weight, requires_grad=False)
        )
        if bias is None or isinstance(bias, nn.Parameter):
            self.bias = bias
        else:
            self.bias = nn.Parameter(bias, requires_grad=False)
        self.ignore_index = ignore_index
        self.backend = backend
        _set_temperature(self, temperature)

    @classmethod
    def from_linear(cls, layer: nn.Linear, **kwargs) -> TokenLogprobsHead:
        """A head sharing ``layer``'s weight and bias (e.g. a causal LM's ``lm_head``)."""
        return cls(layer.weight, layer.bias, **kwargs)

    def forward(self, hidden: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return linear_token_logprobs(
            hidden, self.weight, target, bias=self.bias, temperature=self.temperature,
            ignore_index=self.ignore_index, with_entropy=True, backend=self.backend,
        )  # fmt: skip

    def extra_repr(self) -> str:
        v, d = self.weight.shape
        return f"vocab={v}, hidden={d}, bias={self.bias is not None}, ignore_index={self.ignore_index}"

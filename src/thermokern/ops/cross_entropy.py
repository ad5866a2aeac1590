"""Entropy-regularised cross-entropy: ``entropy_regularized_cross_entropy``.

One forward pass over the logits gives, per row, the loss and the three softmax statistics
(entropy, shift, log-normaliser); one backward pass recomputes p from them. The schema is in
csrc/thermokern.cpp; the CPU and CUDA kernels register under it; the Triton kernels are
``triton_op``s defined here on first use.
"""

from __future__ import annotations

import math
import numbers

import torch

from thermokern import _backend, reference
from thermokern.ops._checks import (
    _can_sync,
    as_rows,
    check_float_tensor,
    check_temperature,
    divide_by_temperature,
    inverse_temperature,
    temperature_needs_grad,
)

__all__ = ["entropy_regularized_cross_entropy"]

_ops = torch.ops.thermokern if _backend._C is not None else None
REDUCTIONS = ("none", "mean", "sum")


def _setup_context(ctx, inputs, output):
    logits, target, inv_t, entropy_weight, label_smoothing, ignore_index, z_loss_weight = inputs
    _, entropy, shift, log_norm = output
    ctx.save_for_backward(logits, target, inv_t, entropy, shift, log_norm)
    ctx.mark_non_differentiable(entropy, shift, log_norm)
    ctx.params = (entropy_weight, label_smoothing, ignore_index, z_loss_weight)
    ctx.set_materialize_grads(False)


def _make_backward(bwd_op):
    def backward(ctx, grad_loss, *_stats):
        if grad_loss is None:
            return (None,) * 7
        logits, target, inv_t, entropy, shift, log_norm = ctx.saved_tensors
        grad = bwd_op(grad_loss, logits, target, inv_t, entropy, shift, log_norm, *ctx.params)
        return (grad,) + (None,) * 6

    return backward


if _ops is not None:

    @torch.library.register_fake("thermokern::cross_entropy_fwd")
    def _fwd_fake(logits, target, inv_t, entropy_weight, label_smoothing, ignore_index, z_loss_weight):
        torch._check(logits.dim() == 2, lambda: "logits: expected a 2-D (rows, classes) tensor")
        n = logits.shape[0]
        acc = reference.acc_dtype(logits.dtype)
        return tuple(logits.new_empty((n,), dtype=acc) for _ in range(4))

    @torch.library.register_fake("thermokern::cross_entropy_bwd")
    def _bwd_fake(grad, logits, target, inv_t, entropy, shift, log_norm, *params):
        return logits.new_empty(logits.shape)

    torch.library.register_autograd(
        "thermokern::cross_entropy_fwd", _make_backward(_ops.cross_entropy_bwd), setup_context=_setup_context
    )


_triton_fwd = None


def _triton_ops():
    """Define the Triton ops on first use (importing triton costs ~1 s and may be missing)."""
    global _triton_fwd
    if _triton_fwd is not None:
        return _triton_fwd
    from thermokern.kernels import cross_entropy as tk

    @torch.library.triton_op("thermokern::cross_entropy_fwd_triton", mutates_args=())
    def fwd(
        logits: torch.Tensor,
        target: torch.Tensor,
        inv_t: torch.Tensor,
        entropy_weight: float,
        label_smoothing: float,
        ignore_index: int,
        z_loss_weight: float,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return tk.cross_entropy_fwd(
            logits, target, inv_t, entropy_weight, label_smoothing, ignore_index, z_loss_weight
        )

    @torch.library.triton_op("thermokern::cross_entropy_bwd_triton", mutates_args=())
    def bwd(
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
    ) -> torch.Tensor:
        return tk.cross_entropy_bwd(
            grad, logits, target, inv_t, entropy, shift, log_norm,
            entropy_weight, label_smoothing, ignore_index, z_loss_weight,
        )  # fmt: skip

    fwd.register_autograd(_make_backward(bwd), setup_context=_setup_context)
    _triton_fwd = fwd
    return fwd


def _check_real(value: object, name: str, low: float | None = None, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a float, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or (low is not None and v < low) or (high is not None and v > high):
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ValueError(f"{name}: expected a finite value in [{lo}, {hi}], got {v}")
    return v


def _check_target_values(target: torch.Tensor, num_classes: int, ignore_index: int) -> None:
    """Class indices outside [0, C) that are not ignore_index: a ValueError naming the row.

    On CUDA this reads one flag back (a host synchronisation); it is skipped inside
    torch.compile and CUDA-graph capture, where such rows get a NaN loss instead (the kernels
    never read out of bounds)."""
    if not _can_sync(target):
        return
    bad = ((target < 0) | (target >= num_classes)) & (target != ignore_index)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"target: class index {int(target[i])} at row {i} is outside [0, {num_classes}) "
            f"and is not ignore_index ({ignore_index})"
        )


def _check_ce_args(
    logits, target, entropy_weight, label_smoothing, ignore_index, reduction, z_loss_weight,
    *, name: str = "logits", classes: str = "classes last", class_dim: str = "the class dim",
):  # fmt: skip
    """The checks of the cross-entropy's arguments (shared with thermokern.distributed, whose
    logits are ``name="logits_shard"``); returns the checked (entropy_weight, label_smoothing,
    ignore_index, z_loss_weight)."""
    check_float_tensor(logits, name)
    if logits.dim() == 0:
        raise ValueError(f"{name}: expected at least 1 dimension ({classes}), got a 0-d tensor")
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target: expected a torch.Tensor, got {type(target).__name__}")
    if target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool:
        raise TypeError(f"target: expected an integer tensor of class indices, got {target.dtype}")
    if target.shape != logits.shape[:-1]:
        raise ValueError(
            f"target: expected shape {tuple(logits.shape[:-1])} ({name} without {class_dim}), "
            f"got {tuple(target.shape)}"
        )
    if target.device != logits.device:
        raise ValueError(f"target: expected device {logits.device}, got {target.device}")
    entropy_weight = _check_real(entropy_weight, "entropy_weight")
    label_smoothing = _check_real(label_smoothing, "label_smoothing", 0.0, 1.0)
    z_loss_weight = _check_real(z_loss_weight, "z_loss_weight", 0.0)
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise TypeError(f"ignore_index: expected an int, got {type(ignore_index).__name__}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")
    return entropy_weight, label_smoothing, int(ignore_index), z_loss_weight


def _reduce(loss: torch.Tensor, out_shape, tgt: torch.Tensor, ignore_index: int, reduction: str):
    """Per-row losses to the requested reduction ("mean" counts the rows not ignored; the count
    stays on the device)."""
    if reduction == "none":
        return loss.reshape(out_shape)
    total = loss.sum()
    if reduction == "sum":
        return total
    return total / (tgt != ignore_index).sum()


def entropy_regularized_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    entropy_weight: float = 0.0,
    temperature: float | torch.Tensor = 1.0,
    label_smoothing: float = 0.0,
    ignore_index: int = -100,
    reduction: str = "mean",
    z_loss_weight: float = 0.0,
    backend: str = "auto",
) -> torch.Tensor:
    """Cross-entropy minus an entropy bonus (plus an optional z-loss), fused.

    Per row, with z = logits / T over the last dimension::

        loss = CE(z, target; label_smoothing) - entropy_weight * H(softmax(z))
               + z_loss_weight * logsumexp(z)**2

    With ``entropy_weight=0`` and ``z_loss_weight=0`` this equals
    ``F.cross_entropy(logits / T, target, label_smoothing=..., ignore_index=...,
    reduction=...)``. A positive ``entropy_weight`` *raises* the entropy (confidence
    penalty, maximum-entropy regularisation, policy-entropy bonus). The common snippet
    ``CE - lam * (p * log p).sum(1).mean()`` adds +lam*H, i.e. ``entropy_weight = -lam``.

    One pass over the logits forward and one backward; no probability tensor is stored (the
    backward recomputes p from three numbers per row); the non-ignored row count for "mean"
    stays on the device.

    Args:
        logits: (..., C) float32/float64/float16/bfloat16; classes on the last dimension.
        target: integer class indices shaped like ``logits`` without its last dimension.
        entropy_weight: beta, any finite float.
        temperature: a finite float > 0, or a tensor of per-row temperatures broadcastable
            to ``target``'s shape. A tensor that requires grad (a learnable temperature, e.g.
            CLIP's logit scale) is differentiated: the op then runs on ``logits / T``, one
            extra elementwise pass.
        label_smoothing: epsilon in [0, 1], as in ``F.cross_entropy``.
        ignore_index: rows with this target contribute 0 and are not counted by "mean".
        reduction: ``"none"`` (per row, shaped like ``target``), ``"mean"`` or ``"sum"``.
        z_loss_weight: weight >= 0 of logsumexp(z)^2 (PaLM's z-loss).
        backend: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"triton"`` or ``"reference"``.

    Returns:
        The loss in float32 (float64 for float64 logits). "mean" over no counted rows is NaN,
        as in PyTorch.

    Raises:
        TypeError / ValueError: bad argument types or values, each naming the argument; a
            target outside [0, C) that is not ``ignore_index`` (see below).

    A target out of range is reported as a ValueError before any kernel runs. On CUDA that
    check costs one host synchronisation; inside ``torch.compile`` or CUDA-graph capture it
    is skipped and such rows give a NaN loss instead (never a device-side assert).
    """
    entropy_weight, label_smoothing, ignore_index, z_loss_weight = _check_ce_args(
        logits, target, entropy_weight, label_smoothing, ignore_index, reduction, z_loss_weight
    )
    temperature = check_temperature(temperature, differentiable=True)
    num_classes = logits.shape[-1]
    if num_classes == 0:
        raise ValueError("logits: the class dimension (last) has size 0")
    if temperature_needs_grad(temperature):  # the loss depends on logits / T only
        z, _ = divide_by_temperature(logits, temperature, (logits.dim() - 1,))
        return entropy_regularized_cross_entropy(
            z, target, entropy_weight=entropy_weight, label_smoothing=label_smoothing,
            ignore_index=ignore_index, reduction=reduction, z_loss_weight=z_loss_weight,
            backend=backend,
        )  # fmt: skip
    name = _backend.resolve_backend(backend, logits)

    out_shape = logits.shape[:-1]
    tgt = target.reshape(-1).long()
    inv_t = inverse_temperature(temperature, out_shape, logits.dtype, logits.device)  # also validates
    if name != "cpu":  # the CPU op checks its targets itself, without cost
        _check_target_values(tgt, num_classes, ignore_index)
    if name == "reference":
        return reference.entropy_regularized_cross_entropy(
            logits, tgt.reshape(out_shape), entropy_weight=entropy_weight, temperature=temperature,
            label_smoothing=label_smoothing, ignore_index=ignore_index, reduction=reduction,
            z_loss_weight=z_loss_weight,
        )  # fmt: skip
    rows, _ = as_rows(logits, -1)
    args = (rows, tgt, inv_t, entropy_weight, label_smoothing, ignore_index, z_loss_weight)
    if name == "triton":
        loss = _triton_ops()(*args)[0]
    else:
        loss = _ops.cross_entropy_fwd(*args)[0]
    return _reduce(loss, out_shape, tgt, ignore_index, reduction)

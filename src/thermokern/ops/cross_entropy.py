"""``entropy_regularized_cross_entropy``: its kernel declarations and the public function.

One forward pass over the logits gives, per row, the loss and the three softmax statistics
(entropy, shift, log-normaliser); one backward pass recomputes p from them. The schemas
``cross_entropy_fwd`` / ``cross_entropy_bwd`` (and the backward's in-place twin
``cross_entropy_bwd_``) are in csrc/thermokern.cpp; the CPU and CUDA kernels register under them, the Triton launchers are in kernels/cross_entropy.py.
"""

from __future__ import annotations

import torch

from thermokern import _backend, reference
from thermokern._checks import (
    as_rows,
    check_cross_entropy_args,
    check_logits_temperature,
    check_target_values,
    inverse_temperature,
)
from thermokern._dispatch import KernelOp
from thermokern._dtypes import acc_dtype

__all__ = ["entropy_regularized_cross_entropy", "reduce_loss", "target_rows"]


# ----------------------------------------------------------------------------- kernels
def _fwd_fake(logits, target, inv_t, entropy_weight, label_smoothing, ignore_index, z_loss_weight):
    torch._check(logits.dim() == 2, lambda: "logits: expected a 2-D (rows, classes) tensor")
    n = logits.shape[0]
    acc = acc_dtype(logits.dtype)
    return tuple(logits.new_empty((n,), dtype=acc) for _ in range(4))


def _bwd_fake(grad, logits, target, inv_t, entropy, shift, log_norm, *params):
    return logits.new_empty(logits.shape)


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


cross_entropy_fwd, cross_entropy_bwd = KernelOp.differentiable(
    "cross_entropy_fwd", "cross_entropy_bwd", fakes=(_fwd_fake, _bwd_fake), triton="cross_entropy",
    setup_context=_setup_context, make_backward=_make_backward, in_place_backward=True,
)  # fmt: skip


def target_rows(logits, target, temperature, ignore_index: int, backend: str):
    """(backend, output shape, flat int64 targets, 1/T per row) of a checked row op with one
    target per row: the backend resolved once, the temperature values checked, the targets'
    values checked (except on the CPU, whose ops check them without cost). Shared with
    ops/token_logprobs.py."""
    name = _backend.resolve_backend(backend, logits)
    out_shape = logits.shape[:-1]
    tgt = target.reshape(-1).long()
    inv_t = inverse_temperature(temperature, out_shape, logits.dtype, logits.device)  # also validates
    if name != "cpu":
        check_target_values(tgt, logits.shape[-1], ignore_index)
    return name, out_shape, tgt, inv_t


def reduce_loss(loss: torch.Tensor, out_shape, tgt: torch.Tensor, ignore_index: int, reduction: str):
    """Per-row losses to the requested reduction ("mean" counts the rows not ignored; the count
    stays on the device). Shared with thermokern.distributed."""
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
    entropy_weight, label_smoothing, ignore_index, z_loss_weight = check_cross_entropy_args(
        logits, target, entropy_weight, label_smoothing, ignore_index, reduction, z_loss_weight
    )
    temperature, z = check_logits_temperature(
        logits, temperature, logits.dim() - 1, "the class dimension (last)"
    )
    if z is not None:  # the loss depends on logits / T only
        return entropy_regularized_cross_entropy(
            z, target, entropy_weight=entropy_weight, label_smoothing=label_smoothing,
            ignore_index=ignore_index, reduction=reduction, z_loss_weight=z_loss_weight,
            backend=backend,
        )  # fmt: skip
    name, out_shape, tgt, inv_t = target_rows(logits, target, temperature, ignore_index, backend)
    if name == "reference":
        return reference.entropy_regularized_cross_entropy(
            logits, tgt.reshape(out_shape), entropy_weight=entropy_weight, temperature=temperature,
            label_smoothing=label_smoothing, ignore_index=ignore_index, reduction=reduction,
            z_loss_weight=z_loss_weight,
        )  # fmt: skip
    rows, _ = as_rows(logits, -1)
    args = (rows, tgt, inv_t, entropy_weight, label_smoothing, ignore_index, z_loss_weight)
    loss = cross_entropy_fwd(name, *args)[0]
    return reduce_loss(loss, out_shape, tgt, ignore_index, reduction)

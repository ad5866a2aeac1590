"""``token_logprobs``: log-probabilities of given tokens (and the entropy), its kernel
declarations and the public function.

The RL fine-tuning primitive (PPO, GRPO: the log-probs of the sampled tokens plus an entropy
bonus or metric) in one read of the logits forward and one backward pass that takes both
upstream gradients. The schemas ``token_logprobs_fwd`` / ``token_logprobs_bwd`` (and the
backward's in-place twin ``token_logprobs_bwd_``) are in csrc/thermokern.cpp; the CPU and CUDA kernels register under them, the Triton launchers are in
kernels/token_logprobs.py.
"""

from __future__ import annotations

import torch

from thermokern import reference
from thermokern._checks import (
    as_rows,
    check_float_tensor,
    check_int,
    check_logits_temperature,
    check_target,
)
from thermokern._dispatch import KernelOp
from thermokern._dtypes import acc_dtype
from thermokern.ops.cross_entropy import target_rows

__all__ = ["token_logprobs"]


# ----------------------------------------------------------------------------- kernels
def _fwd_fake(logits, target, inv_t, ignore_index):
    torch._check(logits.dim() == 2, lambda: "logits: expected a 2-D (rows, classes) tensor")
    n = logits.shape[0]
    return tuple(logits.new_empty((n,), dtype=acc_dtype(logits.dtype)) for _ in range(4))


def _bwd_fake(grad_logp, grad_entropy, logits, target, inv_t, entropy, shift, log_norm, ignore_index):
    return logits.new_empty(logits.shape)


def _setup_context(ctx, inputs, output):
    logits, target, inv_t, ignore_index = inputs
    _, entropy, shift, log_norm = output
    ctx.save_for_backward(logits, target, inv_t, entropy, shift, log_norm)
    ctx.mark_non_differentiable(shift, log_norm)
    ctx.ignore_index = ignore_index
    ctx.set_materialize_grads(False)


def _make_backward(bwd_op):
    def backward(ctx, grad_logp, grad_entropy, _grad_shift, _grad_log_norm):
        if grad_logp is None and grad_entropy is None:
            return None, None, None, None
        logits, target, inv_t, entropy, shift, log_norm = ctx.saved_tensors
        if grad_logp is None:
            grad_logp = torch.zeros_like(entropy)
        grad = bwd_op(
            grad_logp.contiguous(), None if grad_entropy is None else grad_entropy.contiguous(),
            logits, target, inv_t, entropy, shift, log_norm, ctx.ignore_index,
        )  # fmt: skip
        return grad, None, None, None

    return backward


token_logprobs_fwd, token_logprobs_bwd = KernelOp.differentiable(
    "token_logprobs_fwd", "token_logprobs_bwd", fakes=(_fwd_fake, _bwd_fake), triton="token_logprobs",
    setup_context=_setup_context, make_backward=_make_backward, in_place_backward=True,
)  # fmt: skip


# ----------------------------------------------------------------------------- public API
def token_logprobs(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    temperature: float | torch.Tensor = 1.0,
    ignore_index: int = -100,
    with_entropy: bool = False,
    backend: str = "auto",
):
    """Log-probabilities ``log softmax(logits / T)[target]`` over the last dimension, fused with
    the entropy of each row.

    What RL fine-tuning computes per token (TRL's ``selective_log_softmax`` and
    ``entropy_from_logits``, verl's ``logprobs_from_logits`` and ``entropy_from_logits``) in
    one pass over the logits: no log-softmax tensor is materialised, and the backward is one
    more pass that takes the gradients of both outputs (it recomputes p from three saved
    numbers per row).

    Args:
        logits: (..., V) float32/float64/float16/bfloat16; the vocabulary on the last dim.
        target: integer token indices shaped like ``logits`` without its last dimension.
        temperature: a finite float > 0, or a tensor broadcastable to ``target``'s shape
            (per-row T); a tensor that requires grad is differentiated (the op then runs on
            ``logits / T``, one extra elementwise pass).
        ignore_index: rows with this target give 0 for both outputs and a zero gradient.
        with_entropy: also return the entropy of ``softmax(logits / T)`` per row.
        backend: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"triton"`` or ``"reference"``.

    Returns:
        ``logp`` shaped like ``target``, float32 (float64 for float64 logits); with
        ``with_entropy``, ``(logp, entropy)``.

    Raises:
        TypeError / ValueError: bad arguments, each naming the argument; a target outside
            [0, V) that is not ``ignore_index`` (on CUDA this check costs one host
            synchronisation; inside torch.compile or CUDA-graph capture it is skipped and such
            rows give NaN instead).

    Example:
        >>> import torch, thermokern
        >>> logp, h = thermokern.token_logprobs(torch.zeros(2, 4), torch.tensor([1, 3]), with_entropy=True)
        >>> logp, h  # uniform over 4 tokens
        (tensor([-1.3863, -1.3863]), tensor([1.3863, 1.3863]))
    """
    check_float_tensor(logits, "logits")
    if logits.dim() == 0:
        raise ValueError("logits: expected at least 1 dimension (vocabulary last), got a 0-d tensor")
    check_target(target, logits, "logits", "the vocabulary dim")
    ignore_index = check_int(ignore_index, "ignore_index")
    if not isinstance(with_entropy, bool):
        raise TypeError(f"with_entropy: expected a bool, got {type(with_entropy).__name__}")
    last = logits.dim() - 1
    temperature, z = check_logits_temperature(logits, temperature, last, "the vocabulary dimension (last)")
    if z is not None:  # both outputs depend on logits / T only
        return token_logprobs(
            z, target, ignore_index=ignore_index, with_entropy=with_entropy, backend=backend
        )
    name, out_shape, tgt, inv_t = target_rows(logits, target, temperature, ignore_index, backend)
    if name == "reference":
        return reference.token_logprobs(
            logits, tgt.reshape(out_shape), temperature=temperature, ignore_index=ignore_index,
            with_entropy=with_entropy,
        )  # fmt: skip
    rows, _ = as_rows(logits, -1)
    logp, entropy, _, _ = token_logprobs_fwd(name, rows, tgt, inv_t, ignore_index)
    logp = logp.reshape(out_shape)
    if not with_entropy:
        return logp
    entropy = torch.where(tgt != ignore_index, entropy, torch.zeros_like(entropy))
    return logp, entropy.reshape(out_shape)

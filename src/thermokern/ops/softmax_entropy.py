"""``softmax_entropy``: its kernel declarations and the public function.

The schemas ``softmax_entropy_fwd`` / ``softmax_entropy_bwd`` (and the backward's in-place twin
``softmax_entropy_bwd_``) are in csrc/thermokern.cpp; the CPU and CUDA kernels register under them, the Triton launchers are in
kernels/softmax_entropy.py, the contract in thermokern.reference.kernels. This module declares
the pair (fake, autograd, backends: thermokern._dispatch) and the public function.
"""

from __future__ import annotations

import torch

from thermokern import _backend, reference
from thermokern._checks import (
    as_rows,
    check_dim,
    check_float_tensor,
    check_logits_temperature,
    inverse_temperature,
)
from thermokern._dispatch import KernelOp
from thermokern._dtypes import acc_dtype

__all__ = ["softmax_entropy"]


# ----------------------------------------------------------------------------- kernels
def _fwd_fake(logits: torch.Tensor, inv_t: torch.Tensor):
    torch._check(logits.dim() == 2, lambda: "logits: expected a 2-D (rows, classes) tensor")
    n = logits.shape[0]
    acc = acc_dtype(logits.dtype)
    return tuple(logits.new_empty((n,), dtype=acc) for _ in range(3))


def _bwd_fake(grad, logits, inv_t, entropy, shift, log_norm):
    torch._check(logits.dim() == 2, lambda: "logits: expected a 2-D (rows, classes) tensor")
    return logits.new_empty(logits.shape)


def _setup_context(ctx, inputs, output):
    logits, inv_t = inputs
    entropy, shift, log_norm = output
    ctx.save_for_backward(logits, inv_t, entropy, shift, log_norm)
    ctx.mark_non_differentiable(shift, log_norm)  # per-row statistics for the backward
    ctx.set_materialize_grads(False)  # unused stats outputs arrive as None


def _make_backward(bwd_op):
    """Autograd backward of a softmax_entropy forward op, computed by ``bwd_op``."""

    def backward(ctx, grad_entropy, grad_shift, grad_log_norm):
        if grad_entropy is None:
            return None, None
        logits, inv_t, entropy, shift, log_norm = ctx.saved_tensors
        return bwd_op(grad_entropy, logits, inv_t, entropy, shift, log_norm), None

    return backward


softmax_entropy_fwd, softmax_entropy_bwd = KernelOp.differentiable(
    "softmax_entropy_fwd", "softmax_entropy_bwd", fakes=(_fwd_fake, _bwd_fake), triton="softmax_entropy",
    setup_context=_setup_context, make_backward=_make_backward, in_place_backward=True,
)  # fmt: skip


# ----------------------------------------------------------------------------- public API
def softmax_entropy(
    logits: torch.Tensor,
    dim: int = -1,
    *,
    temperature: float | torch.Tensor = 1.0,
    backend: str = "auto",
) -> torch.Tensor:
    """Shannon entropy of ``softmax(logits / temperature)`` along ``dim``.

    ``H = -sum_j p_j log p_j`` with ``p = softmax(logits / T)``, computed in one pass over each
    row with online statistics, never materialising ``p``. Differentiable w.r.t. ``logits``:
    ``dH/dlogits = -(p / T) (log p + H)``; the backward recomputes ``p`` from three saved fp32
    numbers per row (entropy, max, log-normaliser).

    Args:
        logits: float32, float64, float16 or bfloat16 tensor of any shape (non-contiguous is
            fine). 16-bit inputs accumulate in float32.
        dim: the class dimension to reduce.
        temperature: a finite float > 0, or a tensor of temperatures broadcastable to the
            output shape (per-row T). A tensor that requires grad is differentiated (the op
            then runs on ``logits / T``, one extra elementwise pass). Tensor values are checked for being
            finite and > 0 except inside torch.compile or CUDA-graph capture, where that
            would need a host synchronisation.
        backend: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"triton"`` or ``"reference"`` (see
            :func:`thermokern.available_backends`).

    Returns:
        The entropy, shaped like ``logits`` without ``dim``, in ``logits.dtype``. Rows that
        are all ``-inf`` or hold ``+inf``/NaN give NaN, as softmax does.

    Raises:
        TypeError: non-float ``logits`` or a non-numeric ``temperature``.
        ValueError: ``temperature`` <= 0 or non-finite, an empty class dimension, an unknown
            backend.
        IndexError: ``dim`` out of range (the exception is also a ValueError).
        RuntimeError: the requested backend cannot run here.

    Example:
        >>> import torch, thermokern
        >>> thermokern.softmax_entropy(torch.zeros(2, 4))  # uniform: log 4
        tensor([1.3863, 1.3863])
    """
    check_float_tensor(logits, "logits")
    dim = check_dim(dim, logits.dim())
    temperature, z = check_logits_temperature(
        logits, temperature, dim, f"dimension {dim} (the class dimension)"
    )
    if z is not None:  # H depends on logits / T only
        return softmax_entropy(z, dim, backend=backend).to(logits.dtype)
    name = _backend.resolve_backend(backend, logits)
    out_shape = logits.shape[:dim] + logits.shape[dim + 1 :]
    inv_t = inverse_temperature(temperature, out_shape, logits.dtype, logits.device)  # also validates
    if name == "reference":
        return reference.softmax_entropy(logits, dim, temperature=temperature)
    rows, _ = as_rows(logits, dim)
    entropy = softmax_entropy_fwd(name, rows, inv_t)[0]
    return entropy.to(logits.dtype).reshape(out_shape)

"""Entropy ops: ``softmax_entropy``.

Layers (one per concern): the schema lives in csrc/thermokern.cpp; the CPU and CUDA kernels
register under it; this module adds the fake (meta) implementations, autograd, the Triton
ops (``torch.library.triton_op``, so they trace under torch.compile) and the public function
with its argument checks and dispatch.
"""

from __future__ import annotations

import torch

from thermokern import _backend, reference
from thermokern.ops._checks import (
    as_rows,
    check_dim,
    check_float_tensor,
    check_temperature,
    divide_by_temperature,
    inverse_temperature,
    temperature_needs_grad,
)

__all__ = ["softmax_entropy"]

_ops = torch.ops.thermokern if _backend._C is not None else None


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


# ----------------------------------------------------------------------------- C++ ops
if _ops is not None:

    @torch.library.register_fake("thermokern::softmax_entropy_fwd")
    def _fwd_fake(logits: torch.Tensor, inv_t: torch.Tensor):
        torch._check(logits.dim() == 2, lambda: "logits: expected a 2-D (rows, classes) tensor")
        n = logits.shape[0]
        acc = reference.acc_dtype(logits.dtype)
        return tuple(logits.new_empty((n,), dtype=acc) for _ in range(3))

    @torch.library.register_fake("thermokern::softmax_entropy_bwd")
    def _bwd_fake(grad, logits, inv_t, entropy, shift, log_norm):
        torch._check(logits.dim() == 2, lambda: "logits: expected a 2-D (rows, classes) tensor")
        return logits.new_empty(logits.shape)

    torch.library.register_autograd(
        "thermokern::softmax_entropy_fwd",
        _make_backward(_ops.softmax_entropy_bwd),
        setup_context=_setup_context,
    )


# ----------------------------------------------------------------------------- Triton ops
_triton_fwd = None


def _triton_ops():
    """Define the Triton ops on first use (importing triton costs ~1 s and may be missing)."""
    global _triton_fwd
    if _triton_fwd is not None:
        return _triton_fwd
    from thermokern.kernels import softmax_entropy as tk

    @torch.library.triton_op("thermokern::softmax_entropy_fwd_triton", mutates_args=())
    def fwd(logits: torch.Tensor, inv_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return tk.softmax_entropy_fwd(logits, inv_t)

    @torch.library.triton_op("thermokern::softmax_entropy_bwd_triton", mutates_args=())
    def bwd(
        grad: torch.Tensor,
        logits: torch.Tensor,
        inv_t: torch.Tensor,
        entropy: torch.Tensor,
        shift: torch.Tensor,
        log_norm: torch.Tensor,
    ) -> torch.Tensor:
        return tk.softmax_entropy_bwd(grad, logits, inv_t, entropy, shift, log_norm)

    fwd.register_autograd(_make_backward(bwd), setup_context=_setup_context)
    _triton_fwd = fwd
    return fwd


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
    temperature = check_temperature(temperature, differentiable=True)
    if logits.shape[dim] == 0:
        raise ValueError(
            f"logits: dimension {dim} (the class dimension) has size 0; the entropy is undefined"
        )
    if temperature_needs_grad(temperature):  # H depends on logits / T only
        z, _ = divide_by_temperature(logits, temperature, (dim,))
        return softmax_entropy(z, dim, backend=backend).to(logits.dtype)
    name = _backend.resolve_backend(backend, logits)
    out_shape = logits.shape[:dim] + logits.shape[dim + 1 :]
    inv_t = inverse_temperature(temperature, out_shape, logits.dtype, logits.device)  # also validates
    if name == "reference":
        return reference.softmax_entropy(logits, dim, temperature=temperature)
    rows, _ = as_rows(logits, dim)
    if name == "triton":
        entropy = _triton_ops()(rows, inv_t)[0]
    else:
        entropy = _ops.softmax_entropy_fwd(rows, inv_t)[0]
    return entropy.to(logits.dtype).reshape(out_shape)

"""The multi-tensor SGLD step behind :class:`thermokern.optim.SGLD`.

Layers: the schema of ``thermokern::sgld_step_`` is in csrc/thermokern.cpp ([Note: SGLD step]);
its CPU and CUDA kernels register under it. This module adds its fake (meta) implementation,
the Triton op (an opaque ``torch.library.custom_op``, defined on first use; see [Note: the SGLD
Triton launch] in kernels/sgld.py), the per-tensor reference path, and :func:`sgld_step_`, which
dispatches one call (one dtype, one device) to a backend.
"""

from __future__ import annotations

import torch

from thermokern import _backend, reference
from thermokern.ops._checks import FLOAT_DTYPES

__all__ = ["sgld_step_"]

_ops = torch.ops.thermokern if _backend._C is not None else None


def _check_lists(params, grads, counter_starts) -> None:
    """The list checks of the C++ op, for the Triton and reference paths."""
    if not len(params) == len(grads) == len(counter_starts):
        raise ValueError(
            f"grads, counter_starts: expected one per param ({len(params)}), "
            f"got {len(grads)} and {len(counter_starts)}"
        )
    for i, (p, g, s) in enumerate(zip(params, grads, counter_starts, strict=True)):
        if p.dtype not in FLOAT_DTYPES:
            raise TypeError(f"params[{i}]: expected a floating-point tensor, got {p.dtype}")
        if p.dtype != params[0].dtype or p.device != params[0].device:
            raise ValueError(
                f"params[{i}]: expected {params[0].dtype} on {params[0].device} (params[0]'s), "
                f"got {p.dtype} on {p.device}"
            )
        if g.layout != torch.strided:
            raise ValueError(f"grads[{i}]: expected a dense gradient, got {g.layout}")
        if g.shape != p.shape or g.dtype != p.dtype or g.device != p.device:
            raise ValueError(
                f"grads[{i}]: expected shape {tuple(p.shape)}, {p.dtype} on {p.device} (its param's), "
                f"got {tuple(g.shape)}, {g.dtype} on {g.device}"
            )
        if s < 0:
            raise ValueError(f"counter_starts[{i}]: expected a value >= 0, got {s}")


# ----------------------------------------------------------------------------- C++ op
if _ops is not None:

    @torch.library.register_fake("thermokern::sgld_step_")
    def _sgld_fake(params, grads, seed, offset, counter_starts, lr, noise_std, weight_decay=0.0):
        torch._check(len(grads) == len(params), lambda: "grads: expected one per param")
        torch._check(len(counter_starts) == len(params), lambda: "counter_starts: expected one per param")
        for p, g in zip(params, grads, strict=True):
            torch._check(g.shape == p.shape, lambda: "grads: expected each param's shape")


# ----------------------------------------------------------------------------- Triton op
_triton = None


def _triton_op():
    """Define the Triton op on first use (importing triton costs ~1 s and may be missing)."""
    global _triton
    if _triton is not None:
        return _triton
    from thermokern.kernels import sgld as tk

    # An opaque custom op, not a triton_op: the kernel writes through addresses read from a
    # table, which torch.compile's analysis of a traced triton_op cannot see.
    @torch.library.custom_op("thermokern::sgld_step_triton_", mutates_args={"params"})
    def op(
        params: list[torch.Tensor],
        grads: list[torch.Tensor],
        seed: torch.Tensor,
        offset: torch.Tensor,
        counter_starts: list[int],
        lr: float,
        noise_std: float,
        weight_decay: float,
    ) -> None:
        _check_lists(params, grads, counter_starts)
        tk.sgld_step_(params, grads, seed, offset, counter_starts, lr, noise_std, weight_decay)

    @op.register_fake
    def _(params, grads, seed, offset, counter_starts, lr, noise_std, weight_decay):
        return None

    _triton = op
    return op


# ----------------------------------------------------------------------------- reference
def _reference_(params, grads, seed, offset, counter_starts, lr, noise_std, weight_decay) -> None:
    """Per-tensor :func:`thermokern.reference.langevin_step` with grad' = grad + wd * param (in
    the accumulation dtype) at offset + counter_starts[i]: the specification of the op."""
    _check_lists(params, grads, counter_starts)
    for p, g, start in zip(params, grads, counter_starts, strict=True):
        acc = reference.acc_dtype(p.dtype)
        gd = g.to(acc)
        if weight_decay != 0.0:
            gd = gd + weight_decay * p.to(acc)
        out = reference.langevin_step(
            p, gd, step_size=lr, noise_scale=noise_std, seed=seed, offset=offset + start
        )
        p.copy_(out)


# ----------------------------------------------------------------------------- dispatch
def sgld_step_(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    *,
    lr: float,
    noise_std: float,
    weight_decay: float = 0.0,
    seed: torch.Tensor,
    offset: torch.Tensor,
    counter_starts: list[int],
    backend: str = "auto",
) -> None:
    """``params[i] -= lr * (grads[i] + weight_decay * params[i]) - noise_std * n_i`` in place,
    for every i, in one kernel launch ([Note: SGLD step] in csrc/thermokern.cpp).

    ``n_i``: the normals of ``langevin_step`` at Philox counter ``offset + counter_starts[i]``
    (element e of params[i] at counter ``offset + counter_starts[i] + e // 4``), key ``seed``.
    All params share one dtype and device; ``seed``/``offset`` are 0-dim int64 tensors there;
    ``offset`` is read, not advanced. Arguments are checked by the op (no Python-side
    hyperparameter checks here: :class:`thermokern.optim.SGLD` validates them).

    Args:
        params: tensors updated in place (non-contiguous ones through a contiguous copy).
        grads: dense gradients, one per param, of its shape, dtype and device.
        lr: the step size eta > 0.
        noise_std: sigma >= 0 (sqrt(2 lr T) for SGLD at temperature T).
        weight_decay: lambda >= 0, added to the gradient as lambda * param.
        seed: 0-dim int64 Philox key.
        offset: 0-dim int64 base counter.
        counter_starts: each tensor's first counter relative to ``offset``.
        backend: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"triton"`` or ``"reference"``.
    """
    if not params:
        return
    name = _backend.resolve_backend(backend, params[0])
    if name == "reference":
        _reference_(params, grads, seed, offset, counter_starts, lr, noise_std, weight_decay)
    elif name == "triton":
        _triton_op()(params, grads, seed, offset, counter_starts, lr, noise_std, weight_decay)
    else:
        _ops.sgld_step_(params, grads, seed, offset, counter_starts, lr, noise_std, weight_decay)

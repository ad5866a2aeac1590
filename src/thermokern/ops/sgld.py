"""The multi-tensor SGLD step behind :class:`thermokern.optim.SGLD`: its kernel declaration and
:func:`sgld_step_`, which runs one call (one dtype, one device) on a backend.

The schema of ``thermokern::sgld_step_`` is in csrc/thermokern.cpp ([Note: SGLD step]); its CPU
and CUDA kernels register under it and check their arguments themselves. The Triton launcher
(kernels/sgld.py) is an opaque ``custom_op``: it writes through addresses read from a table,
which torch.compile's analysis of a traced ``triton_op`` cannot see ([Note: the SGLD Triton
launch]).
"""

from __future__ import annotations

import torch

from thermokern import _backend
from thermokern._checks import check_sgld_lists
from thermokern._dispatch import KernelOp

__all__ = ["sgld_step_"]


# ----------------------------------------------------------------------------- kernel
def _sgld_fake(params, grads, seed, offset, counter_starts, lr, noise_std, weight_decay=0.0):
    torch._check(len(grads) == len(params), lambda: "grads: expected one per param")
    torch._check(len(counter_starts) == len(params), lambda: "counter_starts: expected one per param")
    for p, g in zip(params, grads, strict=True):
        torch._check(g.shape == p.shape, lambda: "grads: expected each param's shape")


sgld_step_kernel = KernelOp("sgld_step_", fake=_sgld_fake, triton="sgld", traceable=False)


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
    if name in ("triton", "reference"):  # the C++ op checks its lists itself
        check_sgld_lists(params, grads, counter_starts)
    sgld_step_kernel(name, params, grads, seed, offset, counter_starts, lr, noise_std, weight_decay)

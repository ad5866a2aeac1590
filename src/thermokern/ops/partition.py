"""Partition-function ops: ``logsumexp``, ``log_partition``, ``free_energy``, ``thermo_stats``.

All four are thin compositions over one kernel pair (schemas in csrc/thermokern.cpp, [Note:
partition statistics]): ``partition_fwd`` reads the input once and returns per-output online
statistics (shift, sum w e^u, sum w u e^u, sum w u^2 e^u) with u = k (x' - shift), and
``partition_bwd`` turns upstream gradients of those sums into the input gradient in one more
pass. Every result here is a shift-invariant function of the statistics, so the shift is
treated as a constant by autograd and the gradients are exact.

Any reduction dimension is handled without a transposing copy: the input is viewed as
(outer, reduced, inner) and the kernels reduce the middle axis in place (see
csrc/cpu/partition_kernel.h, [Note: lanes]). Only several non-adjacent reduced dims, or a
non-contiguous input, are first copied.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from thermokern import _backend, reference
from thermokern._checks import (
    DimError,
    check_dims,
    check_float_tensor,
    check_temperature,
    divide_by_temperature,
    inverse_temperature,
    temperature_needs_grad,
)
from thermokern._dispatch import KernelOp
from thermokern._dtypes import FLOAT_DTYPES, acc_dtype

__all__ = ["ThermoStats", "free_energy", "log_partition", "logsumexp", "thermo_stats"]


class ThermoStats(NamedTuple):
    """Thermodynamic statistics of a Boltzmann distribution p ∝ exp(-E/T) (k_B = 1)."""

    log_z: torch.Tensor  #: log Z = log sum exp(-E/T)
    free_energy: torch.Tensor  #: F = -T log Z
    mean_energy: torch.Tensor  #: U = <E>_p
    entropy: torch.Tensor  #: S = (U - F) / T = -sum p log p
    heat_capacity: torch.Tensor  #: C = Var_p(E) / T^2


# ----------------------------------------------------------------------------- autograd
def _setup_context(ctx, inputs, output):
    x, weight, mask, scale, negate, _moments = inputs
    shift, total, _m1, _m2 = output
    ctx.save_for_backward(x, weight, mask, scale, shift, total)
    ctx.negate = negate
    ctx.mark_non_differentiable(shift)  # the results are shift-invariant: a constant for autograd
    ctx.set_materialize_grads(False)


def _make_backward(bwd_op):
    """Backward of partition_fwd's sums, computed by ``bwd_op`` (partition_bwd or its Triton twin).

    With d = sum w e^u, m1 = sum w u e^u, m2 = sum w u^2 e^u and p = e^u / |d|:
      d d/dz = w e^u,  d m1/dz = w e^u (1 + u),  d m2/dz = w e^u (2u + u^2),
    so dL/dz = w p |d| (g_d + g_1 + (g_1 + 2 g_2) u + g_2 u^2), one polynomial per output.
    For the weights, d/dw of the three sums is e^u (1, u, u^2).
    """

    def backward(ctx, g_shift, g_sum, g_m1, g_m2):
        x, weight, mask, scale, shift, total = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        # Without moments m1 and m2 are empty outputs (their gradients, if any, are empty too).
        if g_m1 is not None and g_m1.shape != total.shape:
            g_m1 = None
        if g_m2 is not None and g_m2.shape != total.shape:
            g_m2 = None
        if not (need_x or need_w) or (g_sum is None and g_m1 is None and g_m2 is None):
            return None, None, None, None, None, None
        zero = torch.zeros_like(total)
        gd = zero if g_sum is None else g_sum.to(total.dtype)
        g1 = zero if g_m1 is None else g_m1.to(total.dtype)
        g2 = zero if g_m2 is None else g_m2.to(total.dtype)
        mag = total.abs()
        # Outputs with nothing included (or weights that cancel exactly) get no gradient:
        # log_norm = +inf makes p = 0 there, and a shift of 0 keeps u free of -inf - -inf.
        empty = total == 0
        log_norm = torch.where(empty, torch.full_like(mag, math.inf), torch.log(mag))
        shift_b = torch.where(shift == -math.inf, zero, shift)

        def coefs(terms):
            c = torch.stack([mag * t for t in terms], dim=1)
            return torch.where(empty.unsqueeze(1), torch.zeros_like(c), c).contiguous()

        if g_m2 is not None:
            cx = coefs([gd + g1, g1 + 2 * g2, g2])
        elif g_m1 is not None:
            cx = coefs([gd + g1, g1])
        else:
            cx = coefs([gd])
        moments = g_m1 is not None or g_m2 is not None
        grad_x, grad_w = bwd_op(
            x, weight, mask, scale, ctx.negate, shift_b, log_norm, cx, need_w and not moments
        )
        if need_w and moments:
            cw = coefs([gd, g1, g2])
            _, grad_w = bwd_op(x, weight, mask, scale, ctx.negate, shift_b, log_norm, cw, True)
        return (grad_x if need_x else None), (grad_w if need_w else None), None, None, None, None

    return backward


# ----------------------------------------------------------------------------- kernels
def _fwd_fake(x, weight, mask, scale, negate, moments):
    torch._check(x.dim() == 3, lambda: "input: expected a 3-D (outer, reduced, inner) tensor")
    n = x.shape[0] * x.shape[2]
    acc = acc_dtype(x.dtype)
    m = n if moments else 0
    return (
        x.new_empty((n,), dtype=acc),
        x.new_empty((n,), dtype=acc),
        x.new_empty((m,), dtype=acc),
        x.new_empty((m,), dtype=acc),
    )


def _bwd_fake(x, weight, mask, scale, negate, shift, log_norm, coef, weight_grad):
    return x.new_empty(x.shape), x.new_empty(x.shape if weight_grad else (0,))


partition_fwd, partition_bwd = KernelOp.differentiable(
    "partition_fwd", "partition_bwd", fakes=(_fwd_fake, _bwd_fake), triton="partition",
    setup_context=_setup_context, make_backward=_make_backward,
)  # fmt: skip


# ----------------------------------------------------------------------------- layout
def _layout(x: torch.Tensor, dims: tuple[int, ...]):
    """(view function, out_shape, keepdim_shape, R): the function maps a tensor shaped like x to
    the contiguous (O, R, I) tensor the kernels take (a view for a contiguous x whose reduced
    dims are adjacent; otherwise the reduced dims are moved last and copied). With
    ``contiguous=False`` (weights and masks, which the kernels read with any strides) it returns
    a view wherever one exists, so a broadcast argument keeps its stride-0 dims and is never
    expanded in memory."""
    shape = list(x.shape)
    out_shape = [n for i, n in enumerate(shape) if i not in dims]
    keep_shape = [1 if i in dims else n for i, n in enumerate(shape)]
    r = 1
    for d in dims:
        r *= shape[d]
    adjacent = dims == tuple(range(dims[0], dims[-1] + 1))
    inner = 1
    for n in shape[dims[-1] + 1 :]:
        inner *= n
    # An inner size of 2-4 fills only a few of a vector's lanes: there a transposing copy plus
    # the row kernel measured faster (64 x 32000 x I float32 on the CPU: I = 3, 43 ms in place
    # against 12 ms with the copy; I = 6, 39 against 44; I = 16, 24 against 287).
    if adjacent and not 1 < inner <= 4:
        o, i = 1, 1
        for n in shape[: dims[0]]:
            o *= n
        for n in shape[dims[-1] + 1 :]:
            i *= n

        def to_3d(t, contiguous=True):
            return t.contiguous().view(o, r, i) if contiguous else t.reshape(o, r, i)
    else:
        rest = [d for d in range(len(shape)) if d not in dims]

        def to_3d(t, contiguous=True):
            t = t.permute(*rest, *dims)
            return t.contiguous().view(-1, r, 1) if contiguous else t.reshape(-1, r, 1)

    return to_3d, torch.Size(out_shape), torch.Size(keep_shape), r


def _broadcast_arg(t, x: torch.Tensor, name: str, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor or None, got {type(t).__name__}")
    if t.device != x.device:
        raise ValueError(f"{name}: expected a tensor on {x.device}, got {t.device}")
    try:
        # Converted before broadcasting: the result is a view with stride 0 in broadcast dims.
        return (t if dtype is None else t.to(dtype)).broadcast_to(x.shape)
    except RuntimeError:
        raise ValueError(
            f"{name}: shape {tuple(t.shape)} is not broadcastable to the input shape {tuple(x.shape)}"
        ) from None


_UNIT_SCALES: dict = {}


def _unit_scale(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A (1,) tensor of ones (k = 1), cached per dtype and device outside of tracing."""
    if torch.compiler.is_compiling():
        return torch.ones((1,), dtype=dtype, device=device)
    key = (dtype, device)
    t = _UNIT_SCALES.get(key)
    if t is None:
        with torch.inference_mode(False):  # a normal tensor, which autograd may save
            t = _UNIT_SCALES[key] = torch.ones((1,), dtype=dtype, device=device)
    return t


def _finish(v: torch.Tensor, out_shape, keep_shape, keepdim: bool, dtype: torch.dtype) -> torch.Tensor:
    return v.reshape(keep_shape if keepdim else out_shape).to(dtype)


def _log_abs_sum(shift_k: torch.Tensor, total: torch.Tensor, signed: bool = True) -> torch.Tensor:
    """k shift + log|sum|: -inf for an empty sum (never NaN from log 0 in the gradient), NaN
    for +inf terms that cancel (inf - inf).

    Without signed weights (``signed=False``) the sum is >= 1 (its largest term is e^0) unless
    nothing is included, where the shift is -inf: then ``k shift + log(sum)`` is already right
    (-inf; the backward zeroes such rows' gradients), in two ops instead of seven."""
    if not signed:
        return shift_k + torch.log(total)
    empty = total == 0
    safe = torch.where(empty, torch.ones_like(total), total)
    at_zero = torch.where(shift_k == math.inf, math.nan, -math.inf).to(total.dtype)
    return torch.where(empty, at_zero, shift_k + torch.log(safe.abs()))


# ----------------------------------------------------------------------------- public API
def logsumexp(
    input: torch.Tensor,
    dim,
    keepdim: bool = False,
    *,
    weight: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    return_sign: bool = False,
    backend: str = "auto",
):
    """``log sum_j w_j exp(x_j)`` over ``dim``: a drop-in for :func:`torch.logsumexp`.

    Without ``weight`` and ``mask`` the result equals ``torch.logsumexp(input, dim, keepdim)``,
    edge cases included: ``-inf`` entries add nothing, a ``+inf`` entry gives ``+inf``, NaN gives
    NaN, an empty reduced dimension gives ``-inf``, integer and bool inputs are promoted to the
    default float dtype. One pass over the input with online statistics (no ``exp`` tensor);
    any ``dim`` (or several), without transposing the input.

    Args:
        input: tensor of any shape and dtype (16-bit floats accumulate in float32).
        dim: the dimension, or a sequence of dimensions, to reduce.
        keepdim: keep the reduced dimensions with size 1.
        weight: scipy's ``b``: a tensor broadcastable to ``input`` of factors ``w_j`` (may be
            negative). A zero weight leaves its element out entirely, even an infinity or NaN.
            Without ``return_sign`` a negative sum gives NaN. Differentiable. A broadcast
            weight (say a ``(C,)`` weight for an ``(N, C)`` input) is read in place by the
            kernels, never expanded to the input's size.
        mask: JAX's ``where``: a bool tensor broadcastable to ``input``; ``False`` elements are
            left out. A fully masked row gives ``-inf``. Read in place like ``weight``.
        return_sign: also return ``sign(sum_j w_j e^{x_j})`` (1, -1, 0 for a zero sum, NaN where
            the result is NaN; an empty or fully masked row gives 0, where scipy gives -1 for an
            empty array), and the result is then ``log|sum|``.
        backend: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"triton"`` or ``"reference"``.

    Returns:
        The result (input's dtype, or the default float dtype for integer input), or the pair
        ``(result, sign)`` with ``return_sign``. The gradient of a fully masked or all ``-inf``
        row is 0, not NaN.

    Raises:
        TypeError: a non-tensor ``input``, complex input, a non-bool ``mask``.
        ValueError: ``weight`` or ``mask`` not broadcastable to ``input``, repeated dims, an
            unknown backend.
        IndexError: ``dim`` out of range (also a ValueError).

    Example:
        >>> import torch, thermokern
        >>> thermokern.logsumexp(torch.tensor([0.0, 0.0]), 0)  # log 2
        tensor(0.6931)
        >>> thermokern.logsumexp(torch.tensor([1.0, 2.0]), 0, weight=torch.tensor([-1.0, 1.0]))
        tensor(1.5413)
    """
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"input: expected a torch.Tensor, got {type(input).__name__}")
    if input.is_complex():
        raise TypeError(f"input: complex tensors are not supported, got {input.dtype}")
    x = input if input.dtype in FLOAT_DTYPES else input.to(torch.get_default_dtype())
    dims = check_dims(dim, x.dim())
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise TypeError(f"mask: expected a bool tensor, got {got}")
        mask = _broadcast_arg(mask, x, "mask")
    wt = None
    if weight is not None:
        if isinstance(weight, torch.Tensor) and (weight.is_complex() or weight.dtype == torch.bool):
            raise TypeError(f"weight: expected a real floating-point tensor, got {weight.dtype}")
        if isinstance(weight, torch.Tensor) and weight.is_floating_point():
            # Promote like any binary op (a float64 weight makes a float64 computation).
            x = x.to(torch.promote_types(x.dtype, weight.dtype))
        wt = _broadcast_arg(weight, x, "weight", dtype=x.dtype)
    name = _backend.resolve_backend(backend, x)
    if x.dim() == 0:
        x, dims = x.reshape(1), (0,)
        wt = None if wt is None else wt.reshape(1)
        mask = None if mask is None else mask.reshape(1)
        scalar = True
    else:
        scalar = False
    to_3d, out_shape, keep_shape, r = _layout(x, dims)
    if name == "reference" or r == 0 or x.numel() == 0:
        res = reference.logsumexp(x, dims, keepdim, weight=wt, mask=mask, return_sign=return_sign)
        if scalar:
            res = tuple(v.reshape(()) for v in res) if return_sign else res.reshape(())
        return res
    acc = acc_dtype(x.dtype)
    scale = _unit_scale(acc, x.device)
    shift, total, _, _ = partition_fwd(
        name,
        to_3d(x),
        None if wt is None else to_3d(wt, contiguous=False),
        None if mask is None else to_3d(mask, contiguous=False),
        scale,
        False,
        0,
    )
    lse = _log_abs_sum(shift, total, signed=wt is not None)
    if return_sign:
        sign = torch.sign(total.detach())
        sign = torch.where(torch.isnan(lse.detach()), torch.full_like(sign, math.nan), sign)
    elif wt is not None:
        lse = torch.where(total.detach() < 0, torch.full_like(lse, math.nan), lse)
    if scalar:
        out_shape = keep_shape = torch.Size(())
    lse = _finish(lse, out_shape, keep_shape, keepdim, x.dtype)
    if return_sign:
        return lse, _finish(sign, out_shape, keep_shape, keepdim, x.dtype)
    return lse


def _energy_setup(energy, dim, temperature, backend):
    check_float_tensor(energy, "energy")
    if energy.dim() == 0:
        raise DimError("energy: the input is 0-dimensional; it needs at least one dimension to reduce")
    dims = check_dims(dim, energy.dim())
    temperature = check_temperature(temperature, differentiable=True)
    name = _backend.resolve_backend(backend, energy)
    to_3d, out_shape, keep_shape, r = _layout(energy, dims)
    k = inverse_temperature(temperature, out_shape, energy.dtype, energy.device)  # also validates
    return dims, temperature, name, to_3d, out_shape, keep_shape, r, k


def _scaled_energy(energy, dim, temperature):
    """(E / T, T per output, dims) when the temperature tensor needs a gradient (else None): the
    ops then run at T = 1 on E / T and autograd differentiates the division (see
    divide_by_temperature): log Z and S are those of E / T, F = -T log Z, U = T <E/T>, and
    C = Var(E) / T^2 = Var(E / T)."""
    check_float_tensor(energy, "energy")
    temperature = check_temperature(temperature, differentiable=True)
    if not temperature_needs_grad(temperature) or energy.dim() == 0:
        return None
    dims = check_dims(dim, energy.dim())
    z, t_out = divide_by_temperature(energy, temperature, dims)
    return z, t_out, dims


def _energy_lz(energy, dim, temperature, backend, moments: int):
    """(log Z and, with moments, (<u>, <u^2>) with u = -E/T - shift/T ...) in the accumulation dtype."""
    dims, temperature, name, to_3d, out_shape, keep_shape, r, k = _energy_setup(
        energy, dim, temperature, backend
    )
    if name == "reference" or r == 0 or energy.numel() == 0:
        return None, (dims, temperature, out_shape, keep_shape)
    shift, total, m1, m2 = partition_fwd(name, to_3d(energy), None, None, k, True, moments)
    lz = _log_abs_sum(k * shift, total, signed=False)
    return (lz, shift, total, m1, m2, k), (dims, temperature, out_shape, keep_shape)


def log_partition(
    energy: torch.Tensor,
    dim=-1,
    *,
    temperature: float | torch.Tensor = 1.0,
    keepdim: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """log Z = log sum_j exp(-E_j / T) over ``dim``, in one pass.

    Args:
        energy: float tensor of energies (16-bit accumulates in float32). ``+inf`` energies are
            forbidden states (they add nothing); a ``-inf`` energy gives ``+inf``.
        dim: the dimension (or dimensions) of the states.
        temperature: a finite float > 0 or a tensor broadcastable to the output (per-row T).
            A tensor that requires grad is differentiated (the op then runs on ``E / T``).
        keepdim: keep the reduced dimensions with size 1.
        backend: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"triton"`` or ``"reference"``.

    Returns:
        log Z in ``energy.dtype``; differentiable w.r.t. ``energy`` (d log Z/dE = -p/T).

    Raises:
        TypeError: non-float ``energy``; ValueError: temperature <= 0, bad dims, unknown backend.
    """
    scaled = _scaled_energy(energy, dim, temperature)
    if scaled is not None:
        z, _, dims = scaled
        return log_partition(z, dims, keepdim=keepdim, backend=backend).to(energy.dtype)
    stats, (dims, temperature, out_shape, keep_shape) = _energy_lz(energy, dim, temperature, backend, 0)
    if stats is None:
        return reference.log_partition(energy, dims, temperature=temperature, keepdim=keepdim)
    return _finish(stats[0], out_shape, keep_shape, keepdim, energy.dtype)


def free_energy(
    energy: torch.Tensor,
    dim=-1,
    *,
    temperature: float | torch.Tensor = 1.0,
    keepdim: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """Helmholtz free energy F = -T log Z over ``dim`` (see :func:`log_partition`).

    Differentiable w.r.t. ``energy``: dF/dE = p, the Boltzmann distribution.
    """
    scaled = _scaled_energy(energy, dim, temperature)
    if scaled is not None:
        z, t_out, dims = scaled
        lz = log_partition(z, dims, keepdim=keepdim, backend=backend)
        return (-t_out.reshape(lz.shape) * lz).to(energy.dtype)
    stats, (dims, temperature, out_shape, keep_shape) = _energy_lz(energy, dim, temperature, backend, 0)
    if stats is None:
        return reference.free_energy(energy, dims, temperature=temperature, keepdim=keepdim)
    lz, k = stats[0], stats[5]
    return _finish(-lz / k, out_shape, keep_shape, keepdim, energy.dtype)


def thermo_stats(
    energy: torch.Tensor,
    dim=-1,
    *,
    temperature: float | torch.Tensor = 1.0,
    backend: str = "auto",
) -> ThermoStats:
    """log Z, F, U, S and C of p ∝ exp(-E/T) over ``dim`` from a single pass over ``energy``.

    With k_B = 1: ``log_z = log sum exp(-E/T)``, ``free_energy = -T log Z``, ``mean_energy =
    <E>_p``, ``entropy = (U - F)/T = -sum p log p``, ``heat_capacity = Var_p(E) / T^2``. The
    kernel accumulates sum e^u, sum u e^u and sum u^2 e^u with u = -(E - E_min)/T in one read of
    the energies; all five are differentiable w.r.t. ``energy``.

    Args:
        energy: float tensor (16-bit accumulates in float32).
        dim: the dimension (or dimensions) of the states.
        temperature: a finite float > 0 or a tensor broadcastable to the output (per-row T).
            A tensor that requires grad is differentiated (the op then runs on ``E / T``).
        backend: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"triton"`` or ``"reference"``.

    Returns:
        :class:`ThermoStats` of tensors shaped like ``energy`` without ``dim``, in its dtype.

    Example:
        >>> import torch, thermokern
        >>> s = thermokern.thermo_stats(torch.tensor([0.0, 1.0]))  # a two-level system at T = 1
        >>> round(float(s.heat_capacity), 4)  # e / (1 + e)^2
        0.1966
    """
    scaled = _scaled_energy(energy, dim, temperature)
    if scaled is not None:
        z, t_out, dims = scaled
        s = thermo_stats(z, dims, backend=backend)
        outs = (s.log_z, -t_out * s.log_z, t_out * s.mean_energy, s.entropy, s.heat_capacity)
        return ThermoStats(*(v.to(energy.dtype) for v in outs))
    stats, (dims, temperature, out_shape, keep_shape) = _energy_lz(energy, dim, temperature, backend, 2)
    if stats is None:
        return ThermoStats(*reference.thermo_stats(energy, dims, temperature=temperature))
    lz, shift, total, m1, m2, k = stats
    t = 1.0 / k
    empty = total == 0
    safe = torch.where(empty, torch.ones_like(total), total)
    mu = m1 / safe  # <u>, u = k (x' - shift) = -E/T - k shift
    mu2 = m2 / safe
    var = (mu2 - mu * mu).clamp_min(0.0)
    nan = torch.full_like(total, math.nan)
    mean_energy = torch.where(empty, nan, -(shift + t * mu))
    entropy = torch.where(empty, nan, torch.log(safe) - mu)
    heat = torch.where(empty, nan, var)
    outs = (lz, -t * lz, mean_energy, entropy, heat)
    return ThermoStats(*(_finish(v, out_shape, keep_shape, False, energy.dtype) for v in outs))

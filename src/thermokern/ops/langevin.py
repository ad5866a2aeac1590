"""Langevin dynamics: ``langevin_step``, its in-place twin ``langevin_step_``, their kernel
declarations, and the two functions the samplers share (:func:`langevin_args`,
:func:`checked_step_`).

The schemas ``langevin_step``, ``langevin_step_`` and ``langevin_step_bwd`` are in
csrc/thermokern.cpp ([Note: Langevin step]); the CPU and CUDA kernels register under them, the
Triton launchers are in kernels/langevin.py.
"""

from __future__ import annotations

import math

import torch

from thermokern import _backend, reference
from thermokern._checks import (
    check_float_tensor,
    check_nonnegative,
    check_positive,
    check_real,
    rng_tensor,
)
from thermokern._dispatch import KernelOp

__all__ = ["checked_step_", "langevin_args", "langevin_step", "langevin_step_"]


# ----------------------------------------------------------------------------- autograd
def _setup_context(ctx, inputs, output):
    x, grad, seed, offset, step_size, noise_std, grad_clip, lo, hi = inputs
    ctx.params = (step_size, noise_std, grad_clip, lo, hi)
    ctx.clamped = lo is not None or hi is not None
    if ctx.clamped:
        # The backward recomputes v = x - eta clip(grad) + sigma n (noise included) to see
        # where the clamp was active: nothing beyond the inputs is kept.
        ctx.save_for_backward(x, grad, seed, offset)
    else:
        ctx.save_for_backward(grad if grad_clip is not None else None)


def _make_backward(bwd_op):
    """Autograd backward of a langevin_step op whose clamp case is computed by ``bwd_op``.

    d out / d x = 1 and d out / d grad = -step_size [|grad| < grad_clip], both 0 where the
    clamp was active (v outside (lo, hi); a v on a bound counts as clamped, as in torch.clamp's
    own backward).
    """

    def backward(ctx, grad_out):
        step_size, noise_std, grad_clip, lo, hi = ctx.params
        if ctx.clamped:
            x, grad, seed, offset = ctx.saved_tensors
            grad_x, grad_grad = bwd_op(
                grad_out, x, grad, seed, offset, step_size, noise_std, grad_clip, lo, hi
            )
        else:
            (grad,) = ctx.saved_tensors
            grad_x = grad_out
            grad_grad = grad_out * -step_size
            if grad_clip is not None:
                grad_grad = torch.where((grad > -grad_clip) & (grad < grad_clip), grad_grad, 0.0)
        return grad_x, grad_grad, None, None, None, None, None, None, None

    return backward


# ----------------------------------------------------------------------------- kernels
def _fwd_fake(x, grad, seed, offset, step_size, noise_std, grad_clip=None, clamp_lo=None, clamp_hi=None):
    torch._check(grad.shape == x.shape, lambda: "grad: expected x's shape")
    return x.new_empty(x.shape)


def _fwd_inplace_fake(
    x, grad, seed, offset, step_size, noise_std, grad_clip=None, clamp_lo=None, clamp_hi=None
):
    torch._check(grad.shape == x.shape, lambda: "grad: expected x's shape")


def _bwd_fake(
    grad_out, x, grad, seed, offset, step_size, noise_std, grad_clip=None, clamp_lo=None, clamp_hi=None
):
    return x.new_empty(x.shape), x.new_empty(x.shape)


langevin_step_fwd, langevin_step_bwd = KernelOp.differentiable(
    "langevin_step", "langevin_step_bwd", fakes=(_fwd_fake, _bwd_fake), triton="langevin",
    setup_context=_setup_context, make_backward=_make_backward,
)  # fmt: skip
langevin_step_inplace = KernelOp("langevin_step_", fake=_fwd_inplace_fake, triton="langevin")


# ----------------------------------------------------------------------------- checks
def _overlaps_partially(x: torch.Tensor, g: torch.Tensor) -> bool:
    """Whether g shares memory with x other than as the very same view (conservative: the
    address ranges of two views of one storage intersect)."""
    if x.numel() == 0 or g.numel() == 0 or x.untyped_storage().data_ptr() != g.untyped_storage().data_ptr():
        return False
    if x.data_ptr() == g.data_ptr() and x.stride() == g.stride():
        return False

    def span(t):
        last = sum((s - 1) * st for s, st in zip(t.shape, t.stride()))
        return t.data_ptr(), t.data_ptr() + (last + 1) * t.element_size()

    (a0, a1), (b0, b1) = span(x), span(g)
    return a0 < b1 and b0 < a1


def langevin_args(x, grad, step_size, temperature, noise_scale, grad_clip, clamp, seed, offset):
    """The checked arguments of a Langevin step as its kernels take them: (grad in x's dtype,
    noise_std, grad_clip, clamp_lo, clamp_hi, seed tensor, offset tensor). Shared with
    thermokern.sampling, which checks a run's arguments once."""
    check_float_tensor(x, "x")
    check_float_tensor(grad, "grad")
    if grad.shape != x.shape:
        raise ValueError(f"grad: expected x's shape {tuple(x.shape)}, got {tuple(grad.shape)}")
    if grad.device != x.device:
        raise ValueError(f"grad: expected a tensor on {x.device} (x's device), got {grad.device}")
    if grad.dtype != x.dtype:
        grad = grad.to(x.dtype)
    step = check_positive(step_size, "step_size")
    t = check_positive(temperature, "temperature")
    if noise_scale is not None:
        noise_scale = check_nonnegative(noise_scale, "noise_scale")
    sigma = reference.langevin_noise_std(step, t, noise_scale)
    if grad_clip is not None:
        grad_clip = check_real(grad_clip, "grad_clip")
        if not grad_clip > 0.0:  # also NaN; +inf means no clipping
            raise ValueError(f"grad_clip: expected a value > 0 (or None), got {grad_clip}")
    lo = hi = None
    if clamp is not None:
        if not isinstance(clamp, (tuple, list)) or len(clamp) != 2:
            raise TypeError(f"clamp: expected a (lo, hi) tuple (either may be None), got {clamp!r}")
        lo = None if clamp[0] is None else check_real(clamp[0], "clamp")
        hi = None if clamp[1] is None else check_real(clamp[1], "clamp")
        if (lo is not None and math.isnan(lo)) or (hi is not None and math.isnan(hi)):
            raise ValueError(f"clamp: the bounds must not be NaN, got {clamp!r}")
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"clamp: expected lo <= hi, got ({lo}, {hi})")
    seed_t = rng_tensor(seed, "seed", x.device)
    offset_t = rng_tensor(offset, "offset", x.device)
    return grad, sigma, grad_clip, lo, hi, seed_t, offset_t


# ----------------------------------------------------------------------------- public API
def langevin_step(
    x: torch.Tensor,
    grad: torch.Tensor,
    *,
    step_size: float,
    temperature: float = 1.0,
    noise_scale: float | None = None,
    grad_clip: float | None = None,
    clamp: tuple[float | None, float | None] | None = None,
    seed: int | torch.Tensor,
    offset: int | torch.Tensor = 0,
    backend: str = "auto",
) -> torch.Tensor:
    """One (unadjusted) Langevin step ``x - step_size * clip(grad) + sigma * xi``, clamped.

    With ``grad`` = dE/dx this samples ``p(x) ∝ exp(-E(x) / T)`` in the limit of small steps.
    One fused pass reads ``x`` and ``grad`` and writes the result; the Gaussian noise ``xi`` is
    generated inside the kernel from a counter-based generator (no noise tensor, no global RNG
    state).

    Noise conventions:
      * ``noise_scale=None`` (exact overdamped Langevin): ``sigma = sqrt(2 * step_size * T)``.
      * ``noise_scale=s`` (the decoupled convention of JEM / IGEBM-style EBM samplers, e.g.
        step_size=1 or 10 with s=0.005..0.01): ``sigma = s`` and ``temperature`` is ignored.
        This is the exact dynamics at the effective temperature ``T = s**2 / (2 * step_size)``;
        ``noise_scale=0`` gives plain (clipped, clamped) gradient descent.

    Random numbers: element ``e`` of ``x`` (its index in row-major logical order, whatever the
    strides) uses output word ``e % 4`` of Philox4x32-10 with key ``seed`` and counter
    ``offset + e // 4``, exactly ``tl.randint4x(seed, offset + e // 4)`` of Triton; the words
    become uniforms ``u = ((w >> 8) + 1) * 2**-24`` in (0, 1] and Box-Muller on the word pairs
    (0, 1) and (2, 3) gives ``n0 = sqrt(-2 ln u0) cos(2 pi u1)``, ``n1 = sqrt(-2 ln u0)
    sin(2 pi u1)`` (likewise n2, n3 from u2, u3). A step thus uses the counters ``offset ..
    offset + ceil(numel / 4) - 1``: advance ``offset`` by ``ceil(x.numel() / 4)`` (or simply by
    ``x.numel()``) between steps and no two steps share noise. Every backend gives the same
    uniform bits for the same (seed, offset) and normals equal within 1e-6 relative (the float32
    kernels evaluate log, sin and cos by short series, ~3e-7 relative). The 24-bit uniforms
    bound ``|xi| <= 5.77``.

    Args:
        x: float32, float64, float16 or bfloat16 tensor of any shape (non-contiguous is fine).
            16-bit inputs compute in float32; float64 in float64.
        grad: the energy gradient, x's shape and device (cast to x's dtype when it differs).
        step_size: eta > 0.
        temperature: T > 0 (used only when ``noise_scale`` is None).
        noise_scale: sigma >= 0 overriding sqrt(2 eta T), or None.
        grad_clip: g > 0 clamps each gradient element to [-g, g] before the step; None: off.
        clamp: ``(lo, hi)`` bounds of the result (either may be None), or None.
        seed: the Philox key, an int in [-2**63, 2**64) or a 0-dim int64 tensor on x's device.
        offset: the first counter, an int >= 0 or a 0-dim int64 tensor on x's device (bits as
            uint64; a CUDA tensor's value is not checked). Tensors are read by the kernel, so a
            CUDA graph can capture the step and replay it after ``offset.add_(n)`` in place.
        backend: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"triton"`` or ``"reference"``.

    Returns:
        A new contiguous tensor of x's shape and dtype.

    Autograd: differentiable w.r.t. ``x`` (d/dx = 1) and ``grad`` (d/dgrad = -step_size where
    ``|grad| < grad_clip``), both 0 where the clamp was active, i.e. where the unclamped value
    ``v`` is not strictly inside ``(lo, hi)`` (a value on a bound counts as clamped, as in
    ``torch.clamp``'s own backward; likewise a gradient on ``±grad_clip`` counts as clipped).
    The backward recomputes ``v`` and its noise from the saved inputs; the noise is a constant.

    Raises:
        TypeError: non-float ``x``/``grad``; a non-numeric argument; seed/offset of a wrong type.
        ValueError: step_size <= 0 or non-finite, temperature <= 0, noise_scale < 0,
            grad_clip <= 0, clamp lo > hi, shape or device mismatch, a negative offset.
        RuntimeError: the requested backend cannot run here.

    Example:
        >>> import torch, thermokern
        >>> x = torch.zeros(4)
        >>> y = thermokern.langevin_step(x, x, step_size=0.01, seed=0)  # pure noise, sigma 0.14
        >>> y.shape
        torch.Size([4])
    """
    grad, sigma, grad_clip, lo, hi, seed_t, offset_t = langevin_args(
        x, grad, step_size, temperature, noise_scale, grad_clip, clamp, seed, offset
    )
    step = float(step_size)
    name = _backend.resolve_backend(backend, x)
    if name == "reference":
        return reference.langevin_step(
            x,
            grad,
            step_size=step,
            noise_scale=sigma,
            grad_clip=grad_clip,
            clamp=(lo, hi),
            seed=seed_t,
            offset=offset_t,
        )
    return langevin_step_fwd(name, x, grad, seed_t, offset_t, step, sigma, grad_clip, lo, hi)


def langevin_step_(
    x: torch.Tensor,
    grad: torch.Tensor,
    *,
    step_size: float,
    temperature: float = 1.0,
    noise_scale: float | None = None,
    grad_clip: float | None = None,
    clamp: tuple[float | None, float | None] | None = None,
    seed: int | torch.Tensor,
    offset: int | torch.Tensor = 0,
    backend: str = "auto",
) -> torch.Tensor:
    """In-place :func:`langevin_step`: writes the step into ``x`` and returns ``x``.

    The same arguments give the same result (and noise) as :func:`langevin_step`. ``grad`` may
    be ``x`` itself (e.g. the gradient of ``x**2 / 2``) but not another view overlapping it.
    Not differentiable: it refuses to run while autograd would need it (``x`` or ``grad``
    requiring grad with grad mode on); wrap sampler updates in ``torch.no_grad()``.

    Raises:
        RuntimeError: ``x`` or ``grad`` requires grad while grad mode is on; and as
            :func:`langevin_step`.
    """
    grad, sigma, grad_clip, lo, hi, seed_t, offset_t = langevin_args(
        x, grad, step_size, temperature, noise_scale, grad_clip, clamp, seed, offset
    )
    if torch.is_grad_enabled() and (x.requires_grad or grad.requires_grad):
        which = "x" if x.requires_grad else "grad"
        raise RuntimeError(
            f"langevin_step_: {which} requires grad, and an in-place step cannot be differentiated; "
            "use thermokern.langevin_step (out of place), or run the update under torch.no_grad()"
        )
    name = _backend.resolve_backend(backend, x)
    if name == "triton" and not torch.compiler.is_compiling() and _overlaps_partially(x, grad):
        # (the C++ ops check this themselves; the reference computes out of place)
        raise RuntimeError(
            "langevin_step_: grad overlaps x in memory (other than being x itself); "
            "pass grad.clone() or use langevin_step"
        )
    return checked_step_(x, grad, seed_t, offset_t, float(step_size), sigma, grad_clip, lo, hi, name)


def checked_step_(x, grad, seed_t, offset_t, step: float, sigma: float, grad_clip, lo, hi, name: str):
    """The in-place step with every argument already checked (by :func:`langevin_args`) and
    the backend resolved: what :func:`langevin_step_` ends with, and what a sampler's loop calls
    directly (its arguments are checked once per run, not once per step)."""
    langevin_step_inplace(name, x, grad, seed_t, offset_t, step, sigma, grad_clip, lo, hi)
    return x

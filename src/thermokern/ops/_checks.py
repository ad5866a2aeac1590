"""Argument checks shared by the public ops. Every message names the argument."""

from __future__ import annotations

import math
import numbers

import torch

from thermokern.reference import acc_dtype

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


class DimError(IndexError, ValueError):
    """A ``dim`` argument out of range (an IndexError like torch's, and a ValueError)."""


def check_float_tensor(t: object, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name}: expected a floating-point tensor (float32, float64, float16 or bfloat16), got {t.dtype}"
        )
    return t


def check_dim(dim: object, ndim: int, name: str = "dim") -> int:
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {type(dim).__name__}")
    dim = int(dim)
    if ndim == 0:
        raise DimError(f"{name}: the input is 0-dimensional; it needs at least one dimension to reduce")
    if not -ndim <= dim < ndim:
        raise DimError(f"{name}: expected a value in [{-ndim}, {ndim - 1}] for a {ndim}-d input, got {dim}")
    return dim % ndim


def check_temperature(temperature: object, *, differentiable: bool = False) -> float | torch.Tensor:
    """A finite float > 0, or a floating-point tensor of temperatures (values checked later).

    Ops that support gradients w.r.t. a temperature tensor (through :func:`divide_by_temperature`)
    pass ``differentiable=True``; the others reject a tensor that requires grad."""
    if isinstance(temperature, torch.Tensor):
        if temperature.dtype == torch.bool or temperature.is_complex():
            raise TypeError(f"temperature: expected a real tensor, got {temperature.dtype}")
        if temperature.requires_grad and not differentiable:
            raise ValueError(
                "temperature: this op does not support gradients with respect to a temperature "
                "tensor; pass temperature.detach(), or divide the input by the temperature first"
            )
        return temperature
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise TypeError(
            f"temperature: expected a positive float or a tensor, got {type(temperature).__name__}"
        )
    t = float(temperature)
    if not 0.0 < t < math.inf:  # also rejects NaN (comparisons only: traceable by dynamo)
        raise ValueError(f"temperature: expected a finite value > 0, got {t}")
    return t


def _can_sync(t: torch.Tensor) -> bool:
    """Whether a data-dependent check may read values back (never while capturing a CUDA
    graph or tracing with torch.compile; on CUDA it costs one host synchronisation)."""
    if torch.compiler.is_compiling():
        return False
    return not (t.is_cuda and torch.cuda.is_current_stream_capturing())


def as_rows(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Size]:
    """View ``x`` as (rows, C) with the reduced dim last and unit stride along it.

    Copies only when the reduced dim is not already the unit-stride one (a non-last ``dim``
    of a contiguous tensor, or a transposed input); leading dims are flattened as a view when
    their strides allow.
    """
    moved = x.movedim(dim, -1)
    out_shape = moved.shape[:-1]
    c = moved.shape[-1]
    rows = moved.reshape(-1, c)
    if c > 1 and rows.stride(1) != 1:
        rows = rows.contiguous()
    return rows, out_shape


def _temperature_values(
    temperature: torch.Tensor, out_shape: torch.Size, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """A temperature tensor checked and converted: on ``device`` in ``dtype``, 1 element, or
    broadcast to ``out_shape`` (not flattened). Differentiable (a ``.to`` and a broadcast)."""
    if temperature.device != device and temperature.numel() != 1:
        raise ValueError(
            f"temperature: expected a tensor on {device} (or one value), got {temperature.device}"
        )
    t = temperature.to(device=device, dtype=dtype)
    if t.numel() == 1:
        t = t.reshape(())
    else:
        try:
            t = t.broadcast_to(out_shape)
        except RuntimeError:
            raise ValueError(
                f"temperature: shape {tuple(temperature.shape)} is not broadcastable to the per-row "
                f"shape {tuple(out_shape)}"
            ) from None
    if _can_sync(t) and not bool(((t > 0) & torch.isfinite(t)).all()):
        raise ValueError("temperature: expected finite values > 0 in the temperature tensor")
    return t


def inverse_temperature(
    temperature: float | torch.Tensor, out_shape: torch.Size, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """1/T as the kernels take it: a 1-D tensor of the accumulation dtype with 1 element, or
    one per output row (``temperature`` broadcast to ``out_shape``, flattened).

    A temperature tensor must be broadcastable to ``out_shape`` and hold finite values > 0;
    the values are checked where that needs no host synchronisation in a traced or captured
    region (see :func:`_can_sync`).
    """
    acc = acc_dtype(dtype)
    if not isinstance(temperature, torch.Tensor):
        return torch.full((1,), 1.0 / temperature, dtype=acc, device=device)
    return (1.0 / _temperature_values(temperature, out_shape, acc, device).reshape(-1)).contiguous()


def temperature_needs_grad(temperature: float | torch.Tensor) -> bool:
    """Whether autograd must differentiate w.r.t. this (already checked) temperature."""
    return isinstance(temperature, torch.Tensor) and temperature.requires_grad and torch.is_grad_enabled()


def divide_by_temperature(
    x: torch.Tensor, temperature: torch.Tensor, dims: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x / T, T per output) for a temperature tensor that requires grad.

    Every op here depends on x and T only through x / T (an entropy is a function of the
    logits over T; log Z of -E/T; the other statistics follow from those and T). So with a
    differentiable temperature the ops run on ``x / T`` at T = 1, and autograd differentiates
    the division exactly, for one extra elementwise pass. ``x / T`` is in the
    accumulation dtype of x (float32 for 16-bit input, so nothing is rounded to 16 bits); T
    per output is broadcast to x's shape without ``dims`` and has that dtype too. Values and
    shape are checked as for :func:`inverse_temperature`.
    """
    out_shape = torch.Size([n for i, n in enumerate(x.shape) if i not in dims])
    keep_shape = torch.Size([1 if i in dims else n for i, n in enumerate(x.shape)])
    t = _temperature_values(temperature, out_shape, acc_dtype(x.dtype), x.device)
    z = x.to(t.dtype) / (t if t.dim() == 0 else t.reshape(keep_shape))
    return z, t.broadcast_to(out_shape)

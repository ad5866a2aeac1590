"""Argument checks shared by the public ops. Every message names the argument."""

from __future__ import annotations

import math
import numbers

import torch

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


def check_temperature(temperature: object) -> float:
    if isinstance(temperature, torch.Tensor):
        raise TypeError(
            "temperature: expected a positive Python float; per-row temperature tensors are not supported "
            "by this op yet"
        )
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise TypeError(f"temperature: expected a positive float, got {type(temperature).__name__}")
    t = float(temperature)
    if not 0.0 < t < math.inf:  # also rejects NaN (comparisons only: traceable by dynamo)
        raise ValueError(f"temperature: expected a finite value > 0, got {t}")
    return t

"""Every argument check of thermokern's Python layer. Every message names the argument.

Errors: TypeError for a wrong type, ValueError for a wrong value (DimError, an IndexError too,
for a dim out of range), raised before any kernel runs. Data-dependent checks (temperature
tensor values, class indices, a CPU offset) read values back only where that needs no host
synchronisation inside torch.compile or CUDA-graph capture (see :func:`can_sync`).
"""

from __future__ import annotations

import math
import numbers

import torch

from thermokern._dtypes import FLOAT_DTYPES, acc_dtype

_U64 = 2**64
_I63 = 2**63
REDUCTIONS = ("none", "mean", "sum")


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


def check_dims(dim: object, ndim: int, name: str = "dim") -> tuple[int, ...]:
    """``dim`` (int or sequence of ints) as sorted non-negative dims (a 0-d input has one)."""
    items = list(dim) if isinstance(dim, (list, tuple)) else [dim]
    if not items:
        raise ValueError(f"{name}: expected at least one dimension to reduce, got {dim!r}")
    n = max(ndim, 1)
    out = []
    for d in items:
        if isinstance(d, bool) or not isinstance(d, numbers.Integral):
            raise TypeError(f"{name}: expected an int or a sequence of ints, got {type(d).__name__}")
        d = int(d)
        if not -n <= d < n:
            raise DimError(f"{name}: expected values in [{-n}, {n - 1}] for a {ndim}-d input, got {d}")
        out.append(d % n)
    if len(set(out)) != len(out):
        raise ValueError(f"{name}: dimension {dim!r} lists a dimension more than once")
    return tuple(sorted(out))


# ----------------------------------------------------------------------------- numbers
def check_real(value: object, name: str) -> float:
    """Any real number (not a bool) as a float; NaN and infinities pass."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    return float(value)


def check_positive(value: object, name: str) -> float:
    """A finite real number > 0 (a step size, a temperature, a learning rate)."""
    v = check_real(value, name)
    if not 0.0 < v < math.inf:  # also NaN
        raise ValueError(f"{name}: expected a finite value > 0, got {v}")
    return v


def check_nonnegative(value: object, name: str) -> float:
    """A finite real number >= 0 (a weight decay, a noise scale, a loss weight)."""
    v = check_real(value, name)
    if not 0.0 <= v < math.inf:
        raise ValueError(f"{name}: expected a finite value >= 0, got {v}")
    return v


def check_finite(value: object, name: str, low: float | None = None, high: float | None = None) -> float:
    """A finite real number in [low, high] (either bound may be None)."""
    v = check_real(value, name)
    if not math.isfinite(v) or (low is not None and v < low) or (high is not None and v > high):
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ValueError(f"{name}: expected a finite value in [{lo}, {hi}], got {v}")
    return v


def check_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    return int(value)


def rng_tensor(value: object, name: str, device: torch.device) -> torch.Tensor:
    """``seed`` or ``offset`` (an int or a 0-dim int64 tensor) as the 0-dim int64 tensor on
    ``device`` that the kernels read. A seed is any 64-bit key; an offset is >= 0."""
    if isinstance(value, torch.Tensor):
        if value.dtype != torch.int64:
            raise TypeError(f"{name}: expected an int or a 0-dim int64 tensor, got a {value.dtype} tensor")
        if value.dim() != 0:
            raise ValueError(f"{name}: expected a 0-dim int64 tensor, got shape {tuple(value.shape)}")
        if value.device != device:
            raise ValueError(f"{name}: expected a tensor on {device} (x's device), got {value.device}")
        # A CPU offset is checked for free; a CUDA one would cost a host synchronisation per
        # step (and cannot be read while a CUDA graph is captured): its bits count as uint64.
        checkable = name == "offset" and value.device.type == "cpu" and not torch.compiler.is_compiling()
        if checkable and int(value) < 0:
            raise ValueError(f"offset: expected a value >= 0, got {int(value)}")
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int or a 0-dim int64 tensor, got {type(value).__name__}")
    v = int(value)
    if name == "offset":
        if not 0 <= v < _I63:
            raise ValueError(f"offset: expected an int in [0, 2**63), got {v}")
    elif not -_I63 <= v < _U64:
        raise ValueError(f"{name}: expected an int in [-2**63, 2**64) (a 64-bit key), got {v}")
    if v >= _I63:
        v -= _U64  # the same 64 bits as an int64
    return torch.tensor(v, dtype=torch.int64, device=device)


# ----------------------------------------------------------------------------- temperatures
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


def can_sync(t: torch.Tensor) -> bool:
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
    if can_sync(t) and not bool(((t > 0) & torch.isfinite(t)).all()):
        raise ValueError("temperature: expected finite values > 0 in the temperature tensor")
    return t


def inverse_temperature(
    temperature: float | torch.Tensor, out_shape: torch.Size, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """1/T as the kernels take it: a 1-D tensor of the accumulation dtype with 1 element, or
    one per output row (``temperature`` broadcast to ``out_shape``, flattened).

    A temperature tensor must be broadcastable to ``out_shape`` and hold finite values > 0;
    the values are checked where that needs no host synchronisation in a traced or captured
    region (see :func:`can_sync`).
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


def check_logits_temperature(
    logits: torch.Tensor, temperature: object, dim: int, what: str
) -> tuple[float | torch.Tensor, torch.Tensor | None]:
    """(T, z) for a row op of ``logits`` over the (normalised) dimension ``dim``, called ``what``
    in the error when it is empty: T checked (a tensor may require grad), and z = logits / T
    when autograd must differentiate w.r.t. T (the op then runs on z at T = 1, see
    :func:`divide_by_temperature`), else None."""
    temperature = check_temperature(temperature, differentiable=True)
    if logits.shape[dim] == 0:
        raise ValueError(f"logits: {what} has size 0")
    if not temperature_needs_grad(temperature):
        return temperature, None
    return temperature, divide_by_temperature(logits, temperature, (dim,))[0]


# ----------------------------------------------------------------------------- cross-entropy
def check_target(
    target: object, logits: torch.Tensor, name: str = "logits", class_dim: str = "the class dim"
):
    """Integer class indices shaped like ``logits`` (called ``name``) without its last dim."""
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target: expected a torch.Tensor, got {type(target).__name__}")
    if target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool:
        raise TypeError(f"target: expected an integer tensor of class indices, got {target.dtype}")
    if target.shape != logits.shape[:-1]:
        raise ValueError(
            f"target: expected shape {tuple(logits.shape[:-1])} ({name} without {class_dim}), "
            f"got {tuple(target.shape)}"
        )
    if target.device != logits.device:
        raise ValueError(f"target: expected device {logits.device}, got {target.device}")
    return target


def check_cross_entropy_args(
    logits, target, entropy_weight, label_smoothing, ignore_index, reduction, z_loss_weight,
    *, name: str = "logits", classes: str = "classes last", class_dim: str = "the class dim",
):  # fmt: skip
    """The checks of the cross-entropy's arguments (also thermokern.distributed's, whose logits
    are ``name="logits_shard"``); returns the checked (entropy_weight, label_smoothing,
    ignore_index, z_loss_weight)."""
    check_float_tensor(logits, name)
    if logits.dim() == 0:
        raise ValueError(f"{name}: expected at least 1 dimension ({classes}), got a 0-d tensor")
    check_target(target, logits, name, class_dim)
    entropy_weight = check_finite(entropy_weight, "entropy_weight")
    label_smoothing = check_finite(label_smoothing, "label_smoothing", 0.0, 1.0)
    z_loss_weight = check_finite(z_loss_weight, "z_loss_weight", 0.0)
    ignore_index = check_int(ignore_index, "ignore_index")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")
    return entropy_weight, label_smoothing, ignore_index, z_loss_weight


def check_target_values(target: torch.Tensor, num_classes: int, ignore_index: int) -> None:
    """Class indices outside [0, C) that are not ignore_index: a ValueError naming the row.

    On CUDA this reads one flag back (a host synchronisation); it is skipped inside
    torch.compile and CUDA-graph capture, where such rows get a NaN loss instead (the kernels
    never read out of bounds)."""
    if not can_sync(target):
        return
    bad = ((target < 0) | (target >= num_classes)) & (target != ignore_index)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"target: class index {int(target[i])} at row {i} is outside [0, {num_classes}) "
            f"and is not ignore_index ({ignore_index})"
        )


# ----------------------------------------------------------------------------- samplers
def check_chains(x: object, name: str = "x") -> torch.Tensor:
    """A float tensor whose dim 0 indexes chains."""
    check_float_tensor(x, name)
    if x.dim() == 0:
        raise ValueError(f"{name}: expected at least 1 dimension (dim 0 indexes chains), got a 0-dim tensor")
    return x


def check_chain_param(value: object, name: str, x: torch.Tensor) -> float | torch.Tensor:
    """A sampler parameter (a step size, a temperature) that is either one finite number > 0
    for every chain or a tensor of one value per chain of ``x``, shape ``(chains,)``.

    A tensor is returned detached in x's accumulation dtype on x's device; its values are
    checked (finite, > 0) where that costs no more than one read back (see :func:`can_sync`)."""
    if not isinstance(value, torch.Tensor):
        return check_positive(value, name)
    if not value.is_floating_point():
        raise TypeError(f"{name}: expected a number or a floating-point tensor, got a {value.dtype} tensor")
    chains = x.shape[0]
    if tuple(value.shape) != (chains,):
        raise ValueError(
            f"{name}: expected a number or one value per chain, shape ({chains},), got {tuple(value.shape)}"
        )
    if value.device != x.device:
        raise ValueError(f"{name}: expected a tensor on {x.device} (x's device), got {value.device}")
    value = value.detach().to(acc_dtype(x.dtype))
    if can_sync(value) and not bool(((value > 0) & (value < math.inf)).all()):
        raise ValueError(
            f"{name}: expected finite values > 0 for every chain, got {value.min().item()}..{value.max().item()}"
        )
    return value


def check_sgld_lists(params, grads, counter_starts) -> None:
    """The list checks of the C++ sgld_step_ op, for the Triton and reference paths."""
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

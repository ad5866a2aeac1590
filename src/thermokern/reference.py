"""Pure-PyTorch implementations of every thermokern op: the specification.

These are what the tests compare the kernels against (in float64), and the ``reference``
backend. They favour clarity and numerical safety over speed, but stay differentiable with
PyTorch's own autograd.
"""

from __future__ import annotations

import torch


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: float64 for float64, float32 for everything else."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _temperature_along(temperature, logits: torch.Tensor, dim: int):
    """A float, or a temperature tensor broadcastable to the output shape (``logits`` without
    ``dim``), made to broadcast against ``logits`` along ``dim`` (``dim`` non-negative)."""
    if not isinstance(temperature, torch.Tensor):
        return temperature
    t = temperature.to(device=logits.device, dtype=acc_dtype(logits.dtype))
    if t.dim() == 0:
        return t
    out_shape = logits.shape[:dim] + logits.shape[dim + 1 :]
    return t.broadcast_to(out_shape).unsqueeze(dim)


def softmax_entropy(logits: torch.Tensor, dim: int = -1, *, temperature=1.0) -> torch.Tensor:
    """H(softmax(logits / T)) = -sum p log p along ``dim``, in the accumulation dtype internally.

    Computed as log sum e^y - sum p y with y = z - max z: the shift keeps y <= 0 (no overflow,
    no cancellation between two large numbers), and entries at -inf contribute 0, not NaN, to
    the value and the gradient. Rows that are all -inf, or contain +inf or NaN, give NaN, as
    softmax does.
    """
    dim = dim % logits.dim()
    z = logits.to(acc_dtype(logits.dtype)) / _temperature_along(temperature, logits, dim)
    shift = z.amax(dim=dim, keepdim=True).detach()  # H is shift-invariant: no gradient needed
    y = z - shift
    log_d = torch.logsumexp(y, dim=dim, keepdim=True)
    p = torch.exp(y - log_d)
    y_safe = torch.where(y == float("-inf"), torch.zeros_like(y), y)
    h = log_d.squeeze(dim) - (p * y_safe).sum(dim=dim)
    return h.to(logits.dtype)


def entropy_regularized_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    entropy_weight: float = 0.0,
    temperature=1.0,
    label_smoothing: float = 0.0,
    ignore_index: int = -100,
    reduction: str = "mean",
    z_loss_weight: float = 0.0,
) -> torch.Tensor:
    """CE(z, target; label smoothing) - entropy_weight * H(softmax z) + z_loss_weight * lse(z)^2
    per row, z = logits / T over the last dim; rows whose target is ignore_index give 0 and
    are not counted by "mean". Loss in float32 (float64 for float64 logits)."""
    acc = acc_dtype(logits.dtype)
    last = logits.dim() - 1
    z = logits.to(acc) / _temperature_along(temperature, logits, last)
    logp = torch.log_softmax(z, dim=-1)
    valid = target != ignore_index
    safe_target = torch.where(valid, target, torch.zeros_like(target)).long()
    ce = -logp.gather(-1, safe_target.unsqueeze(-1)).squeeze(-1)
    if label_smoothing > 0.0:
        ce = (1.0 - label_smoothing) * ce - label_smoothing * logp.mean(dim=-1)
    loss = ce
    if entropy_weight != 0.0:
        loss = loss - entropy_weight * softmax_entropy(logits.to(acc), -1, temperature=temperature)
    if z_loss_weight != 0.0:
        loss = loss + z_loss_weight * torch.logsumexp(z, dim=-1).square()
    loss = torch.where(valid, loss, torch.zeros_like(loss))
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / valid.sum()


# ----------------------------------------------------------------------------- partition functions
def reduce_dims(dim, ndim: int) -> tuple[int, ...]:
    """``dim`` (an int or a sequence of ints) as a sorted tuple of non-negative dims.

    A 0-d tensor reduces over its single implicit dimension (``dim`` 0 or -1), as torch does.
    """
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    n = max(ndim, 1)
    return tuple(sorted({d % n for d in dims})) if ndim > 0 else ()


def _lse_parts(x, dims, weight, mask):
    """(shift, s) with log|sum_j w_j e^{x_j}| = shift + log|s| over ``dims`` (keepdim), in the
    accumulation dtype, following thermokern's conventions: masked elements and zero weights
    are left out (a zero weight hides an infinity or NaN, as in scipy), shift is the maximum of
    what is left (0 when that is not finite). The gradient w.r.t. a zero weight is e^{x - lse}."""
    acc = acc_dtype(x.dtype)
    xa = x.to(acc)
    keep = torch.ones_like(xa, dtype=torch.bool)
    if mask is not None:
        keep = keep & mask.broadcast_to(xa.shape)
    inc = keep
    w = None
    if weight is not None:
        w = weight.to(acc).broadcast_to(xa.shape)
        inc = keep & (w != 0)
    xm = torch.where(inc, xa, float("-inf"))
    m = xm.amax(dim=dims, keepdim=True) if xm.numel() else xm.sum(dims, keepdim=True)
    shift = torch.where(torch.isfinite(m), m, torch.zeros_like(m)).detach()
    e = torch.exp(xm - shift)
    if w is not None:
        e = w * e
    e = torch.where(inc, e, torch.zeros_like(e))
    if w is not None:
        # d/dw at w = 0 is e^{x - shift}: a term whose value is exactly 0.
        hidden = torch.where(keep & ~inc, xa, float("-inf"))
        eh = torch.exp(hidden - shift).detach()
        e = e + (w - w.detach()) * torch.where(torch.isfinite(eh), eh, torch.zeros_like(eh))
    s = e.sum(dim=dims, keepdim=True)
    # +inf maxima: e^{inf - 0} = inf gives +inf (or NaN for inf - inf) in s, as it should.
    return shift, s


def logsumexp(input, dim, keepdim=False, *, weight=None, mask=None, return_sign=False):
    """log sum_j w_j e^{x_j} over ``dim``, with torch.logsumexp's edge cases when unweighted.

    ``weight`` follows scipy's ``b`` (negative values allowed; without ``return_sign`` a
    negative sum gives NaN); ``mask`` follows JAX's ``where``. Fully masked or all -inf rows
    give -inf with gradient 0. ``return_sign`` also returns sign(sum) (0 for a zero sum, NaN
    where the result is NaN).
    """
    x = input if input.is_floating_point() else input.to(torch.get_default_dtype())
    dims = reduce_dims(dim, x.dim())
    x0 = x.reshape(1) if x.dim() == 0 else x
    dims0 = dims if x.dim() else (0,)
    shift, s = _lse_parts(x0, dims0, weight, mask)
    zero = s == 0
    s_safe = torch.where(zero, torch.ones_like(s), s)
    lse = torch.where(zero, torch.full_like(s, float("-inf")), shift + torch.log(s_safe.abs()))
    sign = torch.sign(s.detach())
    sign = torch.where(torch.isnan(lse.detach()), torch.full_like(sign, float("nan")), sign)
    if not return_sign:
        lse = torch.where(s.detach() < 0, torch.full_like(lse, float("nan")), lse)
    if x.dim() == 0:
        lse, sign = lse.reshape(()), sign.reshape(())
    elif not keepdim:
        lse, sign = lse.squeeze(dims), sign.squeeze(dims)
    lse = lse.to(x.dtype)
    return (lse, sign.to(x.dtype)) if return_sign else lse


def _energy_z(energy, dims, temperature):
    acc = acc_dtype(energy.dtype)
    e = energy.to(acc)
    if isinstance(temperature, torch.Tensor):
        t = temperature.to(device=e.device, dtype=acc)
        if t.dim() > 0:
            out_shape = [1 if i in dims else n for i, n in enumerate(e.shape)]
            kept = [n for i, n in enumerate(e.shape) if i not in dims]
            t = t.broadcast_to(kept).reshape(out_shape)
    else:
        t = temperature
    return e, t


def log_partition(energy, dim=-1, *, temperature=1.0, keepdim=False):
    """log Z = logsumexp(-E / T) over ``dim``."""
    dims = reduce_dims(dim, energy.dim())
    e, t = _energy_z(energy, dims, temperature)
    return logsumexp(-e / t, dims, keepdim=keepdim).to(energy.dtype)


def free_energy(energy, dim=-1, *, temperature=1.0, keepdim=False):
    """F = -T log Z over ``dim``."""
    dims = reduce_dims(dim, energy.dim())
    e, t = _energy_z(energy, dims, temperature)
    lz = logsumexp(-e / t, dims, keepdim=True)
    f = -t * lz
    return (f if keepdim else f.squeeze(dims)).to(energy.dtype)


def thermo_stats(energy, dim=-1, *, temperature=1.0):
    """(log Z, F, U, S, C) over ``dim`` with p = softmax(-E/T): U = <E>, S = (U - F)/T,
    C = Var_p(E) / T^2 (k_B = 1). Returned as a tuple in ``energy.dtype``."""
    dims = reduce_dims(dim, energy.dim())
    e, t = _energy_z(energy, dims, temperature)
    lz = logsumexp(-e / t, dims, keepdim=True)
    p = torch.exp(-e / t - lz)
    pe = torch.where(p == 0, torch.zeros_like(p), p * e)
    u = pe.sum(dims, keepdim=True)
    dev = e - u
    var = torch.where(p == 0, torch.zeros_like(p), p * dev * dev).sum(dims, keepdim=True)
    f = -t * lz
    s = (u - f) / t
    c = var / (t * t)
    return tuple(v.squeeze(dims).to(energy.dtype) for v in (lz, f, u, s, c))

"""Every kernel's contract in plain PyTorch: the ``reference`` backend of each KernelOp.

One function per schema of csrc/thermokern.cpp, with the schema's name and arguments in its
order (read the Notes there for the meaning of each output). Forward kernels return the same
statistics as the CPU, CUDA and Triton kernels; where the contract leaves a choice (the shift
of a row may sit up to a margin below its maximum on the CPU), these return the exact maximum.
Everything is computed in the accumulation dtype (float64 for float64 inputs), differentiable
by PyTorch's autograd, and checked against the kernels in tests/test_kernel_contracts.py.
"""

from __future__ import annotations

import math

import torch

from thermokern._dtypes import acc_dtype
from thermokern.reference import spec

_INF = math.inf


def _zero_where(cond: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.where(cond, torch.zeros_like(t), t)


# ----------------------------------------------------------------------------- softmax_entropy
def softmax_entropy_fwd(logits: torch.Tensor, inv_t: torch.Tensor):
    """(entropy, shift, log_norm) per row of (rows, C) logits; log p = (x - shift) k - log_norm."""
    acc = acc_dtype(logits.dtype)
    x = logits.to(acc)
    k = inv_t.to(acc).unsqueeze(1)
    m = x.amax(dim=1)
    m_safe = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    y = (x - m_safe.unsqueeze(1)) * k
    e = torch.exp(y)
    d = e.sum(dim=1)
    s = _zero_where(y == -_INF, y * e).sum(dim=1)
    log_d = torch.log(d)
    h = log_d - s / d
    nan = torch.full_like(m, math.nan)
    bad = ~torch.isfinite(m)  # -inf: nothing (log d = -inf, H = NaN); +inf or NaN: NaN
    log_d = torch.where(bad, torch.where(m == -_INF, m, nan), log_d)
    return torch.where(bad, nan, h), m, log_d


def _log_p(logits, inv_t, shift, log_norm):
    acc = shift.dtype
    k = inv_t.to(acc).unsqueeze(1)
    return (logits.to(acc) - shift.unsqueeze(1)) * k - log_norm.unsqueeze(1), k


def softmax_entropy_bwd(grad, logits, inv_t, entropy, shift, log_norm):
    """dH/dx = -g k p (log p + H), 0 where p = 0, in the logits' dtype."""
    log_p, k = _log_p(logits, inv_t, shift, log_norm)
    p = torch.exp(log_p)
    term = _zero_where(p == 0, p * (log_p + entropy.unsqueeze(1)))
    return (-(grad.to(shift.dtype).unsqueeze(1) * k) * term).to(logits.dtype)


# ----------------------------------------------------------------------------- cross_entropy
def _bad_targets(target, num_classes: int, ignore_index: int):
    valid = target != ignore_index
    bad = valid & ((target < 0) | (target >= num_classes))
    return valid, bad


def cross_entropy_fwd(logits, target, inv_t, entropy_weight, label_smoothing, ignore_index, z_loss_weight):
    """(loss, entropy, shift, log_norm) per row; a target outside [0, C) that is not
    ignore_index gives a NaN loss (what the CUDA and Triton kernels write)."""
    entropy, shift, log_norm = softmax_entropy_fwd(logits, inv_t)
    _, bad = _bad_targets(target, logits.shape[1], ignore_index)
    safe = torch.where(bad, torch.zeros_like(target), target)
    t = 1.0 / inv_t.to(entropy.dtype)
    loss = spec.entropy_regularized_cross_entropy(
        logits, safe, entropy_weight=entropy_weight, temperature=t.reshape(()) if t.numel() == 1 else t,
        label_smoothing=label_smoothing, ignore_index=ignore_index, reduction="none",
        z_loss_weight=z_loss_weight,
    )  # fmt: skip
    loss = torch.where(bad, torch.full_like(loss, math.nan), loss)
    return loss, entropy, shift, log_norm


def cross_entropy_bwd(
    grad, logits, target, inv_t, entropy, shift, log_norm, entropy_weight, label_smoothing, ignore_index,
    z_loss_weight,
):  # fmt: skip
    """dL/dx_j = g k [p_j (1 + beta H + 2 zw lse) + beta p_j log p_j - eps / C - (1 - eps) [j = y]],
    0 on ignored rows, NaN on rows whose target is out of range."""
    log_p, k = _log_p(logits, inv_t, shift, log_norm)
    p = torch.exp(log_p)
    p_log_p = _zero_where(p == 0, p * log_p)
    lse = (shift * k.squeeze(1) + log_norm).unsqueeze(1)
    gk = grad.to(shift.dtype).unsqueeze(1) * k
    beta, eps, zw = entropy_weight, label_smoothing, z_loss_weight
    c = logits.shape[1]
    out = gk * (p * (1.0 + beta * entropy.unsqueeze(1) + 2.0 * zw * lse) + beta * p_log_p - eps / c)
    valid, bad = _bad_targets(target, c, ignore_index)
    cols = torch.arange(c, device=logits.device)
    hot = (valid & ~bad).unsqueeze(1) & (cols.unsqueeze(0) == target.unsqueeze(1))
    out = out - torch.where(hot, gk * (1.0 - eps), torch.zeros_like(out))
    out = torch.where(valid.unsqueeze(1), out, torch.zeros_like(out))
    out = torch.where(bad.unsqueeze(1), torch.full_like(out, math.nan), out)
    return out.to(logits.dtype)


# ----------------------------------------------------------------------------- token_logprobs
def token_logprobs_fwd(logits, target, inv_t, ignore_index):
    """(logp, entropy, shift, log_norm) per row: the softmax_entropy statistics of every row and
    logp = k (x_y - shift) - log_norm, 0 where the target is ignore_index, NaN where it is out of
    range."""
    entropy, shift, log_norm = softmax_entropy_fwd(logits, inv_t)
    valid, bad = _bad_targets(target, logits.shape[1], ignore_index)
    safe = torch.where(valid & ~bad, target, torch.zeros_like(target))
    k = inv_t.to(entropy.dtype).expand(logits.shape[0])
    x_y = logits.gather(1, safe.unsqueeze(1)).squeeze(1).to(entropy.dtype)
    logp = (x_y - shift) * k - log_norm
    logp = torch.where(valid, logp, torch.zeros_like(logp))
    return torch.where(bad, torch.full_like(logp, math.nan), logp), entropy, shift, log_norm


def token_logprobs_bwd(
    grad_logp, grad_entropy, logits, target, inv_t, entropy, shift, log_norm, ignore_index
):
    """k [g_l ([j = y] - p_j) - g_H p_j (log p_j + H)] per row; 0 on ignored rows, NaN on rows
    whose target is out of range; no g_H term without grad_entropy."""
    log_p, k = _log_p(logits, inv_t, shift, log_norm)
    p = torch.exp(log_p)
    acc = shift.dtype
    c = logits.shape[1]
    valid, bad = _bad_targets(target, c, ignore_index)
    cols = torch.arange(c, device=logits.device)
    hot = (valid & ~bad).unsqueeze(1) & (cols.unsqueeze(0) == target.unsqueeze(1))
    out = grad_logp.to(acc).unsqueeze(1) * (hot.to(acc) - p)
    if grad_entropy is not None:
        out = out - grad_entropy.to(acc).unsqueeze(1) * _zero_where(
            p == 0, p * (log_p + entropy.unsqueeze(1))
        )
    out = k * out
    out = torch.where(valid.unsqueeze(1), out, torch.zeros_like(out))
    out = torch.where(bad.unsqueeze(1), torch.full_like(out, math.nan), out)
    return out.to(logits.dtype)


# ----------------------------------------------------------------------------- in-place backwards
def _in_place(bwd, logits_at: int):
    """The contract of ``<op>_bwd_``: ``bwd``'s gradient written over its logits argument (the
    one at position ``logits_at``)."""

    def bwd_(*args) -> None:
        if not args[logits_at].is_contiguous():
            raise ValueError(
                "logits: the in-place backward writes the gradient over the logits, which must be contiguous"
            )
        args[logits_at].copy_(bwd(*args))

    bwd_.__name__ = bwd.__name__ + "_"
    return bwd_


softmax_entropy_bwd_ = _in_place(softmax_entropy_bwd, 1)
cross_entropy_bwd_ = _in_place(cross_entropy_bwd, 1)
token_logprobs_bwd_ = _in_place(token_logprobs_bwd, 2)


# ----------------------------------------------------------------------------- partition
def _partition_elements(x, weight, mask, scale, negate):
    """x' and k shaped (O, R, I) in the accumulation dtype, w (1 without weight), the mask's
    keep and the included elements."""
    acc = acc_dtype(x.dtype)
    o, _, i = x.shape
    xs = x.to(acc)
    if negate:
        xs = -xs
    k = scale.to(acc).reshape(1, 1, 1) if scale.numel() == 1 else scale.to(acc).reshape(o, 1, i)
    keep = torch.ones_like(xs, dtype=torch.bool) if mask is None else mask.broadcast_to(x.shape)
    w = torch.ones_like(xs) if weight is None else weight.to(acc).broadcast_to(x.shape)
    inc = keep & (w != 0)
    return xs, k, w, keep, inc


def partition_fwd(x, weight, mask, scale, negate, moments):
    """(shift, sum, m1, m2) per output j = o * I + i of a (O, R, I) tensor ([Note: partition
    statistics]); m1 and m2 are empty without moments."""
    xs, k, w, _, inc = _partition_elements(x, weight, mask, scale, negate)
    has_nan = (inc & torch.isnan(xs)).any(dim=1)
    pinf = inc & (xs == _INF)
    has_pinf = pinf.any(dim=1)
    regular = inc & ~torch.isnan(xs) & (xs != _INF)
    m = torch.where(regular, xs, torch.full_like(xs, -_INF)).amax(dim=1)
    m_safe = torch.where(m == -_INF, torch.zeros_like(m), m).unsqueeze(1)
    u = k * (xs - m_safe)
    live = regular & (xs != -_INF)
    e = torch.where(live, torch.exp(torch.where(live, u, torch.zeros_like(u))), torch.zeros_like(u))
    u = torch.where(live, u, torch.zeros_like(u))
    total = (w * e).sum(dim=1)
    m1 = (w * u * e).sum(dim=1)
    m2 = (w * u * u * e).sum(dim=1)
    nan = torch.full_like(m, math.nan)
    shift = torch.where(has_nan, nan, torch.where(has_pinf, torch.full_like(m, _INF), m))
    total = torch.where(has_pinf, torch.where(pinf, w, torch.zeros_like(w)).sum(dim=1), total)
    total = torch.where(has_nan, nan, total)
    m1 = torch.where(has_nan | has_pinf, nan, m1)
    m2 = torch.where(has_nan | has_pinf, nan, m2)
    n = shift.numel()
    empty = shift.new_empty((0,))
    flat = (shift.reshape(n), total.reshape(n))
    return (*flat, m1.reshape(n), m2.reshape(n)) if moments else (*flat, empty, empty.clone())


def partition_bwd(x, weight, mask, scale, negate, shift, log_norm, coef, weight_grad):
    """(grad_x, grad_weight): g = p (c0 + c1 u + c2 u^2) with u = k (x' - shift) and
    p = e^{u - log_norm} (g = 0 where p = 0); grad_x = +-k w g on included elements, grad_weight
    = g where the mask keeps the element; grad_weight is empty unless weight_grad."""
    xs, k, w, keep, inc = _partition_elements(x, weight, mask, scale, negate)
    o, _, i = x.shape
    acc = xs.dtype
    sh = shift.to(acc).reshape(o, 1, i)
    ln = log_norm.to(acc).reshape(o, 1, i)
    u = k * (xs - sh)
    p = torch.exp(u - ln)
    dead = (p == 0) | torch.isnan(p)
    u = _zero_where(dead, u)
    c = coef.to(acc).reshape(o, i, -1).permute(0, 2, 1)  # (O, n, I)
    poly = c[:, 0:1]
    if c.shape[1] >= 2:
        poly = poly + c[:, 1:2] * u
    if c.shape[1] >= 3:
        poly = poly + c[:, 2:3] * u * u
    g = torch.where(dead & ~torch.isnan(p), torch.zeros_like(p), p * poly)
    sign = -1.0 if negate else 1.0
    grad_x = torch.where(inc, sign * k * w * g, torch.zeros_like(g)).to(x.dtype)
    if not weight_grad:
        return grad_x, x.new_empty((0,))
    return grad_x, torch.where(keep, g, torch.zeros_like(g)).to(x.dtype)


# ----------------------------------------------------------------------------- langevin
def langevin_step(x, grad, seed, offset, step_size, noise_std, grad_clip=None, clamp_lo=None, clamp_hi=None):
    """The step, contiguous in x's dtype (spec.langevin_step with noise_scale = noise_std)."""
    return spec.langevin_step(
        x, grad, step_size=step_size, noise_scale=noise_std, grad_clip=grad_clip, clamp=(clamp_lo, clamp_hi),
        seed=seed, offset=offset,
    ).contiguous()  # fmt: skip


def langevin_step_(x, grad, seed, offset, step_size, noise_std, grad_clip=None, clamp_lo=None, clamp_hi=None):
    """The step written into x (computed out of place first: grad may be x)."""
    x.copy_(langevin_step(x, grad, seed, offset, step_size, noise_std, grad_clip, clamp_lo, clamp_hi))


def langevin_step_bwd(
    grad_out, x, grad, seed, offset, step_size, noise_std, grad_clip=None, clamp_lo=None, clamp_hi=None
):
    """(grad_x, grad_grad): grad_out and -step_size grad_out where lo < v < hi (and, for the
    latter, |grad| < grad_clip), 0 elsewhere; v is the unclamped step, noise included, in the
    accumulation dtype (the value the forward clamps, before any rounding to a 16-bit x)."""
    acc = acc_dtype(x.dtype)
    v = langevin_step(x.to(acc), grad.to(acc), seed, offset, step_size, noise_std, grad_clip)
    active = ~torch.isnan(v)
    if clamp_lo is not None:
        active &= v > clamp_lo
    if clamp_hi is not None:
        active &= v < clamp_hi
    go = grad_out.to(x.dtype).to(acc)
    grad_x = torch.where(active, go, torch.zeros_like(go))
    through = active
    if grad_clip is not None:
        g = grad.to(acc)
        through = through & (g > -grad_clip) & (g < grad_clip)
    grad_grad = torch.where(through, -step_size * go, torch.zeros_like(go))
    return grad_x.to(x.dtype).contiguous(), grad_grad.to(x.dtype).contiguous()


# ----------------------------------------------------------------------------- mala
def mala_accept(
    x, x_prop, grad, grad_prop, energy, energy_prop, seed, offset, step_size, temperature,
    chain_step_size=None, chain_temperature=None,
):  # fmt: skip
    """(x_new, accepted, log_alpha) of a MALA step (spec.mala_accept), with the per-chain
    parameters in place of the numbers where given."""
    return spec.mala_accept(
        x, x_prop, grad, grad_prop, energy, energy_prop,
        step_size=step_size if chain_step_size is None else chain_step_size,
        temperature=temperature if chain_temperature is None else chain_temperature,
        seed=seed, offset=offset,
    )  # fmt: skip


def mala_proposal(x, grad, seed, offset, step_size, temperature):
    """x - eta_c grad + sigma_c n per chain c (dim 0), sigma_c = sqrt(2 eta_c T_c) in float64,
    n spec.langevin_noise; in the accumulation dtype, returned contiguous in x's dtype."""
    acc = acc_dtype(x.dtype)
    view = (x.shape[0],) + (1,) * (x.dim() - 1)
    eta, t = (v.double().expand(x.shape[0]).reshape(view) for v in (step_size, temperature))
    n = spec.langevin_noise(x.numel(), seed, offset, x.device).to(acc).reshape(x.shape)
    v = x.to(acc) + (-eta).to(acc) * grad.to(acc)
    return (v + (2.0 * eta * t).sqrt().to(acc) * n).to(x.dtype).contiguous()


# ----------------------------------------------------------------------------- sgld
def sgld_step_(params, grads, seed, offset, counter_starts, lr, noise_std, weight_decay=0.0):
    """Per tensor: spec.langevin_step with grad + weight_decay * param (accumulation dtype) at
    counter offset + counter_starts[i], written into the param."""
    for p, g, start in zip(params, grads, counter_starts, strict=True):
        acc = acc_dtype(p.dtype)
        gd = g.to(acc)
        if weight_decay != 0.0:
            gd = gd + weight_decay * p.to(acc)
        p.copy_(
            spec.langevin_step(p, gd, step_size=lr, noise_scale=noise_std, seed=seed, offset=offset + start)
        )

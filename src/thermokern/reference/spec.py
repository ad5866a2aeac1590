"""The public-level specification: every thermokern op in plain PyTorch.

These are what the tests compare the ops against (in float64), and what a public function
runs with ``backend="reference"``. They favour clarity and numerical safety over speed, but
stay differentiable with PyTorch's own autograd.
"""

from __future__ import annotations

import math

import torch

from thermokern._dtypes import acc_dtype


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


# ----------------------------------------------------------------------------- language-model heads
def token_logprobs(logits, target, *, temperature=1.0, ignore_index: int = -100, with_entropy: bool = False):
    """log softmax(logits / T)[target] over the last dim (and, with ``with_entropy``, the entropy
    of each row), in float32 (float64 for float64); rows whose target is ignore_index give 0 for
    both."""
    acc = acc_dtype(logits.dtype)
    last = logits.dim() - 1
    z = logits.to(acc) / _temperature_along(temperature, logits, last)
    valid = target != ignore_index
    safe = torch.where(valid, target, torch.zeros_like(target)).long()
    logp = torch.log_softmax(z, dim=-1).gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    logp = torch.where(valid, logp, torch.zeros_like(logp))
    if not with_entropy:
        return logp
    h = softmax_entropy(logits.to(acc), -1, temperature=temperature)
    return logp, torch.where(valid, h, torch.zeros_like(h))


def _linear_logits(hidden, weight, bias):
    """F.linear in the accumulation dtype of hidden."""
    acc = acc_dtype(hidden.dtype)
    return torch.nn.functional.linear(hidden.to(acc), weight.to(acc), None if bias is None else bias.to(acc))


def linear_cross_entropy(hidden, weight, target, *, bias=None, **kwargs):
    """entropy_regularized_cross_entropy(F.linear(hidden, weight, bias), target, **kwargs)."""
    return entropy_regularized_cross_entropy(_linear_logits(hidden, weight, bias), target, **kwargs)


def linear_token_logprobs(hidden, weight, target, *, bias=None, **kwargs):
    """token_logprobs(F.linear(hidden, weight, bias), target, **kwargs)."""
    return token_logprobs(_linear_logits(hidden, weight, bias), target, **kwargs)


def linear_softmax_entropy(hidden, weight, *, bias=None, temperature=1.0):
    """softmax_entropy(F.linear(hidden, weight, bias)) over the vocabulary (last dim)."""
    return softmax_entropy(_linear_logits(hidden, weight, bias), -1, temperature=temperature)


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


# ----------------------------------------------------------------------------- Langevin
# Philox4x32-10 in int64 tensor arithmetic (every intermediate < 2^63), the specification of
# the noise stream of langevin_step; see [Note: Langevin noise layout] in
# csrc/include/thermokern/philox.h and thermokern.langevin_step's docstring.
_PHILOX_MUL = (0xD2511F53, 0xCD9E8D57)
_PHILOX_WEYL = (0x9E3779B9, 0xBB67AE85)
_MASK32 = 0xFFFFFFFF


def _as_int64_tensor(value, device) -> torch.Tensor:
    """An int (its 64-bit two's complement bits) or a 0-dim int64 tensor, as an int64 tensor."""
    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=torch.int64)
    v = int(value) % 2**64
    return torch.tensor(v - 2**64 if v >= 2**63 else v, dtype=torch.int64, device=device)


def _mulhilo32(a: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(high, low) 32-bit halves of a * m for uint32 values held in int64 (m split in 16-bit
    halves so that no product reaches 2^63)."""
    m_hi, m_lo = m >> 16, m & 0xFFFF
    p_lo = a * m_lo
    p_hi = a * m_hi
    hi = (p_hi + (p_lo >> 16)) >> 16
    lo = (((p_hi & 0xFFFF) << 16) + p_lo) & _MASK32
    return hi, lo


def philox_randint4x(seed, offset, n: int, device=None) -> torch.Tensor:
    """Philox4x32-10 words of counters ``offset .. offset + n - 1`` under key ``seed``: a (n, 4)
    int64 tensor of uint32 values, equal to Triton's ``tl.randint4x(seed, offset + i)``.

    ``seed`` and ``offset``: ints or 0-dim int64 tensors (their 64-bit patterns are used).
    """
    if device is None:
        device = seed.device if isinstance(seed, torch.Tensor) else torch.device("cpu")
    s = _as_int64_tensor(seed, device)
    ctr = _as_int64_tensor(offset, device) + torch.arange(n, dtype=torch.int64, device=device)
    k0, k1 = s & _MASK32, (s >> 32) & _MASK32
    c0, c1 = ctr & _MASK32, (ctr >> 32) & _MASK32
    c2 = torch.zeros_like(c0)
    c3 = torch.zeros_like(c0)
    for _ in range(10):
        hi_a, lo_a = _mulhilo32(c0, _PHILOX_MUL[0])
        hi_b, lo_b = _mulhilo32(c2, _PHILOX_MUL[1])
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0 = (k0 + _PHILOX_WEYL[0]) & _MASK32
        k1 = (k1 + _PHILOX_WEYL[1]) & _MASK32
    return torch.stack([c0, c1, c2, c3], dim=1)


def philox_uniform(words: torch.Tensor) -> torch.Tensor:
    """The uniforms u = ((w >> 8) + 1) * 2^-24 in (0, 1] of Philox words, as float64."""
    return ((words >> 8) + 1).to(torch.float64) * 2.0**-24


def langevin_noise(numel: int, seed, offset=0, device=None) -> torch.Tensor:
    """The standard normals of ``langevin_step`` for ``numel`` elements, float64, flat.

    Element e uses the words of counter ``offset + e // 4``; Box-Muller on the word pairs
    (0, 1) and (2, 3): n0 = sqrt(-2 ln u0) cos(2 pi u1), n1 = sqrt(-2 ln u0) sin(2 pi u1), and
    the same with u2, u3 for n2, n3.
    """
    u = philox_uniform(philox_randint4x(seed, offset, (numel + 3) // 4, device))
    r_a = torch.sqrt(-2.0 * torch.log(u[:, 0]))
    r_b = torch.sqrt(-2.0 * torch.log(u[:, 2]))
    a = 2.0 * torch.pi * u[:, 1]
    b = 2.0 * torch.pi * u[:, 3]
    n = torch.stack([r_a * torch.cos(a), r_a * torch.sin(a), r_b * torch.cos(b), r_b * torch.sin(b)], 1)
    return n.reshape(-1)[:numel]


def langevin_noise_std(step_size: float, temperature: float = 1.0, noise_scale: float | None = None) -> float:
    """sigma of a Langevin step: ``noise_scale`` when given, else sqrt(2 * step_size * T)."""
    if noise_scale is not None:
        return float(noise_scale)
    return math.sqrt(2.0 * step_size * temperature)


def langevin_step(
    x, grad, *, step_size, temperature=1.0, noise_scale=None, grad_clip=None, clamp=None, seed, offset=0
):
    """x - step_size * clip(grad) + sigma * n, clamped, in the accumulation dtype (float32 for
    16-bit inputs), returned in x's dtype; n from :func:`langevin_noise` (a constant for
    autograd). Differentiable by PyTorch's autograd, with the gradient passing the clamp only
    where lo < v < hi and the clip only where |grad| < grad_clip (values on a bound count as
    clamped, as in torch.clamp's backward; spelled out here so as not to depend on it)."""
    acc = acc_dtype(x.dtype)
    sigma = langevin_noise_std(step_size, temperature, noise_scale)
    g = grad.to(acc)
    if grad_clip is not None:
        g = _clamp_strict(g, -grad_clip, grad_clip)
    v = x.to(acc) - step_size * g
    if sigma != 0.0:
        n = langevin_noise(x.numel(), seed, offset, x.device).to(acc).reshape(x.shape)
        v = v + sigma * n
    if clamp is not None and (clamp[0] is not None or clamp[1] is not None):
        v = _clamp_strict(v, clamp[0], clamp[1])
    return v.to(x.dtype)


def _clamp_strict(t: torch.Tensor, lo: float | None, hi: float | None) -> torch.Tensor:
    """t.clamp(lo, hi) (NaN stays NaN) whose gradient passes only strictly inside (lo, hi)."""
    inside = torch.ones_like(t, dtype=torch.bool)
    if lo is not None:
        inside &= t > lo
    if hi is not None:
        inside &= t < hi
    return torch.where(inside, t, t.detach().clamp(min=lo, max=hi))


# ----------------------------------------------------------------------------- MALA
# The accept/reject of thermokern.mala_step; see [Note: MALA acceptance] in
# csrc/include/thermokern/mala.h and thermokern.mala_step's docstring.
def mala_counters(numel: int, chains: int) -> int:
    """Philox counters one MALA step uses: ceil(numel / 4) for the proposal's noise, then
    ceil(chains / 4) for the chains' uniforms."""
    return (numel + 3) // 4 + (chains + 3) // 4


def mala_uniform(chains: int, numel: int, seed, offset=0, device=None) -> torch.Tensor:
    """The uniforms u in (0, 1] of a MALA step's accept tests, float64 (chains,): chain c
    takes word c % 4 of counter offset + ceil(numel / 4) + c // 4."""
    words = philox_randint4x(seed, offset + (numel + 3) // 4, (chains + 3) // 4, device)
    return philox_uniform(words).reshape(-1)[:chains]


def mala_accept(
    x, x_prop, grad, grad_prop, energy, energy_prop, *, step_size, temperature=1.0, seed, offset=0
):
    """(x_new, accepted, log_alpha) of a MALA step, by the textbook formula in float64:
    log alpha = -(E' - E) / T + log q(x | x') - log q(x' | x) with
    log q(a | b) = -|a - b + eta grad E(b)|^2 / (4 eta T) over each chain's elements (dim 0
    indexes chains; eta and T numbers or one value per chain); accepted where
    log u <= log alpha (u from :func:`mala_uniform`); x_new[c] = x_prop[c] if accepted else
    x[c], contiguous in x's dtype; log_alpha in the accumulation dtype."""
    chains, row = x.shape[0], math.prod(x.shape[1:])

    def rows(t):
        return t.detach().to(torch.float64).reshape(chains, row)

    xs, xps, gs, gps = rows(x), rows(x_prop), rows(grad), rows(grad_prop)
    eta, t = (
        torch.as_tensor(v, dtype=torch.float64, device=x.device).expand(chains)
        for v in (step_size, temperature)
    )
    e = eta.unsqueeze(1)
    log_q_fwd = -(xps - xs + e * gs).square().sum(1) / (4.0 * eta * t)  # log q(x' | x)
    log_q_bwd = -(xs - xps + e * gps).square().sum(1) / (4.0 * eta * t)  # log q(x | x')
    log_alpha = -(energy_prop.double() - energy.double()) / t + log_q_bwd - log_q_fwd
    u = mala_uniform(chains, x.numel(), seed, offset, x.device)
    accepted = torch.log(u) <= log_alpha  # NaN rejects
    keep = accepted.reshape((chains,) + (1,) * (x.dim() - 1))
    x_new = torch.where(keep, x_prop.detach(), x.detach()).contiguous()
    return x_new, accepted, log_alpha.to(acc_dtype(x.dtype))

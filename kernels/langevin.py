"""Triton kernel for langevin_step and its backward, with their launchers.

One program owns BLOCK_C Philox counters, i.e. the 4 * BLOCK_C elements 4c .. 4c + 3 of a
contiguous tensor, handled as a (BLOCK_C, 4) block. The noise follows [Note: Langevin noise
layout] in csrc/include/thermokern/philox.h, formula for formula: ``tl.randint4x(seed, offset +
c)``, uniforms ``((w >> 8) + 1) * 2^-24``, and Box-Muller with -2 ln u and sin/cos(2 pi u)
evaluated by the same exact range reductions and Taylor series as the C++ kernels (not
``tl.log``/``tl.cos``, which lower to approximate instructions on the GPU and lose the relative
accuracy of -2 ln u near u = 1), with correctly rounded division and square root. float64
inputs evaluate the longer double series.

seed and offset are read from 0-dim int64 tensors (CUDA-graph replays see in-place updates).
The five float parameters travel as the int64 bit patterns of doubles: a Python float would
reach the kernel as fp32 and cost float64 inputs their precision, and a parameter tensor would
need a host-to-device copy per call, which a CUDA-graph capture does not allow.
"""

from __future__ import annotations

import math
import struct

import torch
import triton
import triton.language as tl

from ._common import _empty, _interpreting, _wrap_triton, in_place_twin, launcher

# Series coefficients (Taylor, as doubles; rounded to the accumulation dtype in the kernel),
# the ones of NoiseSeries in philox.h: atanh(s)/s = sum z^i / (2i + 1) with z = s^2,
# sin(t)/t = sum (-1)^i t^2i / (2i + 1)!, cos(t) = sum (-1)^i t^2i / (2i)!.
_LOG_C = tl.constexpr(tuple(1.0 / (2 * i + 1) for i in range(10)))
_SIN_C = tl.constexpr(tuple((-1.0) ** i / math.factorial(2 * i + 1) for i in range(8)))
_COS_C = tl.constexpr(tuple((-1.0) ** i / math.factorial(2 * i) for i in range(9)))
_TWO_LN2 = tl.constexpr(2.0 * math.log(2.0))
_TURN = tl.constexpr(2.0 * math.pi / 2**24)  # 2 pi 2^-24: one step of the 24-bit uniform

# ----------------------------------------------------------------------------- device helpers


@triton.jit
def _horner(z, C: tl.constexpr, N: tl.constexpr, ACC: tl.constexpr):
    """sum_{i < N} C[i] z^i by Horner's rule, coefficients rounded to ACC."""
    p = tl.full(z.shape, C[N - 1], ACC)
    for i in tl.static_range(N - 2, -1, -1):
        p = p * z + tl.full(z.shape, C[i], ACC)
    return p


@triton.jit
def _div_rn(a, b, ACC: tl.constexpr):
    """a / b correctly rounded (float '/' is approximate on the GPU; double '/' is IEEE)."""
    if ACC == tl.float64:
        return a / b
    else:
        return tl.math.div_rn(a, b)


@triton.jit
def _sqrt_rn(a, ACC: tl.constexpr):
    """Correctly rounded square root (tl.sqrt may be approximate for float on the GPU)."""
    if ACC == tl.float64:
        return tl.sqrt(a)
    else:
        return tl.math.sqrt_rn(a)


@triton.jit
def _neg2_log_u(k, ACC: tl.constexpr):
    """-2 ln(k 2^-24) for uint32 k in [1, 2^24] (noise_neg2_log_u of philox.h)."""
    bits = k.to(tl.float32).to(tl.uint32, bitcast=True)  # exact: k < 2^25
    j = (bits >> 23).to(tl.int32) - 127
    mbits = (bits & 0x007FFFFF) | 0x3F800000  # m in [1, 2)
    big = mbits >= 0x3FB504F3  # m >= sqrt(2): halve it
    mbits = tl.where(big, mbits - 0x00800000, mbits)
    j = tl.where(big, j + 1, j)
    f = mbits.to(tl.float32, bitcast=True).to(ACC) - 1.0  # exact
    s = _div_rn(f, f + 2.0, ACC)  # ln m = 2 atanh(s)
    z = s * s
    if ACC == tl.float64:
        p = _horner(z, _LOG_C, 10, ACC)
    else:
        p = _horner(z, _LOG_C, 5, ACC)
    two_ln2 = tl.full(k.shape, _TWO_LN2, ACC)
    return (24 - j).to(ACC) * two_ln2 - 4.0 * s * p


@triton.jit
def _sincos_2pi_u(k, ACC: tl.constexpr):
    """(sin, cos) of 2 pi k 2^-24 for uint32 k in [1, 2^24] (noise_sincos_2pi_u of philox.h)."""
    q = (k + (1 << 21)) >> 22  # nearest quarter turn, 0..4
    r = k.to(tl.int32, bitcast=True) - (q << 22).to(tl.int32, bitcast=True)  # [-2^21, 2^21]
    t = r.to(ACC) * tl.full(k.shape, _TURN, ACC)  # |t| <= pi/4
    t2 = t * t
    if ACC == tl.float64:
        st = t * _horner(t2, _SIN_C, 8, ACC)
        ct = _horner(t2, _COS_C, 9, ACC)
    else:
        st = t * _horner(t2, _SIN_C, 5, ACC)
        ct = _horner(t2, _COS_C, 5, ACC)
    odd = (q & 1) != 0
    a = tl.where(odd, ct, st)
    b = tl.where(odd, st, ct)
    s = tl.where((q & 2) != 0, -a, a)
    c = tl.where(((q + 1) & 2) != 0, -b, b)
    return s, c


@triton.jit
def _normal4(seed, ctr, ACC: tl.constexpr):
    """The four standard normals of counters ``ctr`` (int64) under key ``seed``."""
    w0, w1, w2, w3 = tl.randint4x(seed, ctr)
    ra = _sqrt_rn(_neg2_log_u((w0 >> 8) + 1, ACC), ACC)
    rb = _sqrt_rn(_neg2_log_u((w2 >> 8) + 1, ACC), ACC)
    sa, ca = _sincos_2pi_u((w1 >> 8) + 1, ACC)
    sb, cb = _sincos_2pi_u((w3 >> 8) + 1, ACC)
    return ra * ca, ra * sa, rb * cb, rb * sb


@triton.jit
def _as_block(n0, n1, n2, n3):
    """(BLOCK_C,) x 4 -> (BLOCK_C, 4) in element order (column j = word j)."""
    j = tl.arange(0, 4)[None, :]
    return tl.where(
        j == 0, n0[:, None], tl.where(j == 1, n1[:, None], tl.where(j == 2, n2[:, None], n3[:, None]))
    )


@triton.jit
def _counters(first, BLOCK_C: tl.constexpr):
    """(c, offs): the BLOCK_C counters c = first, first + 1, ... (int64) and the (BLOCK_C, 4)
    offsets 4c + j of the elements they own (element 4c + j takes word j of counter c)."""
    c = first + tl.arange(0, BLOCK_C)
    return c, c[:, None] * 4 + tl.arange(0, 4)[None, :]


@triton.jit
def _noise(seed_ptr, offset_ptr, ctr, ACC: tl.constexpr):
    """The (BLOCK_C, 4) standard normals of Philox counters offset + ctr under key seed, in
    element order (row i: the four normals of counter offset + ctr[i]; see :func:`_counters`)."""
    n0, n1, n2, n3 = _normal4(tl.load(seed_ptr), tl.load(offset_ptr) + ctr, ACC)
    return _as_block(n0, n1, n2, n3)


@triton.jit
def _param(bits, ACC: tl.constexpr):
    """A double passed as its int64 bit pattern, rounded to ACC."""
    return tl.cast(bits, tl.int64).to(tl.float64, bitcast=True).to(ACC)


@triton.jit
def _value(
    x, g, c, seed_ptr, offset_ptr, neg_step, sigma, clip,
    HAS_NOISE: tl.constexpr, HAS_CLIP: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    """v = x - eta clip(g) + sigma n before the clamp, n the noise of counters c (NaN propagates
    through the clip)."""
    noise = x  # unused without HAS_NOISE
    if HAS_NOISE:
        noise = _noise(seed_ptr, offset_ptr, c, ACC)
    if HAS_CLIP:
        g = tl.where(g < -clip, -clip, tl.where(g > clip, clip, g))
    v = x + neg_step * g
    if HAS_NOISE:
        v = v + sigma * noise
    return v


@triton.jit
def _langevin_step_kernel(
    grad_out_ptr,  # (n,) contiguous upstream gradient, x's dtype (read only with BACKWARD)
    x_ptr,  # (n,) contiguous input
    grad_ptr,  # (n,) contiguous energy gradient, x's dtype
    out_ptr,  # (n,) out, x's dtype: the step (may be x_ptr: in place), or with BACKWARD d loss / d x
    grad_grad_ptr,  # (n,) out with BACKWARD: d loss / d grad, x's dtype
    seed_ptr,  # 0-dim int64: Philox key
    offset_ptr,  # 0-dim int64: counter of element 0
    n,  # number of elements
    step_bits,  # step_size as float64 bits (int64)
    sigma_bits,  # noise_std as float64 bits
    clip_bits,  # grad_clip as float64 bits (HAS_CLIP)
    lo_bits,  # lower clamp bound as float64 bits (HAS_LO)
    hi_bits,  # upper clamp bound as float64 bits (HAS_HI)
    HAS_NOISE: tl.constexpr,  # sigma != 0
    HAS_CLIP: tl.constexpr,  # grad_clip given
    HAS_LO: tl.constexpr,  # lower bound given
    HAS_HI: tl.constexpr,  # upper bound given
    BACKWARD: tl.constexpr,  # the step's backward instead of the step
    ACC: tl.constexpr,  # accumulation dtype (float32, or float64 for float64 input)
    BLOCK_C: tl.constexpr,  # counters (4 elements each) per program
):
    c, offs = _counters(tl.program_id(0).to(tl.int64) * BLOCK_C, BLOCK_C)
    mask = offs < n
    g = tl.load(grad_ptr + offs, mask=mask, other=0.0).to(ACC)
    neg_step, sigma, clip = -_param(step_bits, ACC), _param(sigma_bits, ACC), _param(clip_bits, ACC)
    if BACKWARD:
        go = tl.load(grad_out_ptr + offs, mask=mask, other=0.0).to(ACC)
        keep = mask
        if HAS_LO or HAS_HI:  # recompute v to see where the clamp was inactive
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(ACC)
            v = _value(x, g, c, seed_ptr, offset_ptr, neg_step, sigma, clip, HAS_NOISE, HAS_CLIP, ACC)
            # (a NaN v fails every comparison: no gradient, as in torch.clamp's backward)
            if HAS_LO:
                keep = keep & (v > _param(lo_bits, ACC))
            if HAS_HI:
                keep = keep & (v < _param(hi_bits, ACC))
        gx = tl.where(keep, go, 0.0)
        if HAS_CLIP:
            keep = keep & (g > -clip) & (g < clip)
        gg = tl.where(keep, neg_step * go, 0.0)
        tl.store(out_ptr + offs, gx.to(out_ptr.dtype.element_ty), mask=mask)
        tl.store(grad_grad_ptr + offs, gg.to(grad_grad_ptr.dtype.element_ty), mask=mask)
    else:
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(ACC)
        v = _value(x, g, c, seed_ptr, offset_ptr, neg_step, sigma, clip, HAS_NOISE, HAS_CLIP, ACC)
        if HAS_LO:
            lo = _param(lo_bits, ACC)
            v = tl.where(v < lo, lo, v)
        if HAS_HI:
            hi = _param(hi_bits, ACC)
            v = tl.where(v > hi, hi, v)
        tl.store(out_ptr + offs, v.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _philox_words_kernel(
    out_ptr,  # (4 * n_ctr,) int32 out: the words of each counter, in order
    seed_ptr,  # 0-dim int64: Philox key
    offset_ptr,  # 0-dim int64: first counter
    n_ctr,  # number of counters
    BLOCK_C: tl.constexpr,  # counters per program
):
    c, offs = _counters(tl.program_id(0).to(tl.int64) * BLOCK_C, BLOCK_C)
    w0, w1, w2, w3 = tl.randint4x(tl.load(seed_ptr), tl.load(offset_ptr) + c)
    words = _as_block(w0, w1, w2, w3).to(tl.int32, bitcast=True)
    tl.store(out_ptr + offs, words, mask=offs < 4 * n_ctr)


# ----------------------------------------------------------------------------- launchers


def _f64_bits(value: float | None) -> int:
    return struct.unpack("<q", struct.pack("<d", 0.0 if value is None else float(value)))[0]


def _block_c() -> tuple[int, int]:
    # The interpreter runs each program as numpy calls: few large programs are fastest.
    return (4096, 4) if _interpreting() else (256, 4)


def _launch(x, tensors, seed, offset, step_size, noise_std, grad_clip, lo, hi, backward=False) -> None:
    """Launch :func:`_langevin_step_kernel` over the elements of ``x``: ``tensors`` are its
    (grad_out, x, grad, out, grad_grad), one program per BLOCK_C counters."""
    n = x.numel()
    if n == 0:
        return
    block_c, warps = _block_c()
    _wrap_triton(_langevin_step_kernel)[(triton.cdiv((n + 3) // 4, block_c),)](
        *tensors,
        seed,
        offset,
        n,
        *[_f64_bits(v) for v in (step_size, noise_std, grad_clip, lo, hi)],
        HAS_NOISE=noise_std != 0.0,
        HAS_CLIP=grad_clip is not None,
        HAS_LO=lo is not None,
        HAS_HI=hi is not None,
        BACKWARD=backward,
        ACC=tl.float64 if x.dtype == torch.float64 else tl.float32,
        BLOCK_C=block_c,
        num_warps=warps,
    )


def _launch_fwd(x, grad, out, seed, offset, step_size, noise_std, grad_clip, lo, hi) -> None:
    """Write the step of contiguous ``x`` into contiguous ``out`` (may be ``x``); grad_out and
    grad_grad are never touched without BACKWARD (x stands in for them)."""
    tensors = (x, x, grad.contiguous(), out, x)
    _launch(x, tensors, seed, offset, step_size, noise_std, grad_clip, lo, hi)


@launcher
def langevin_step(
    x: torch.Tensor,
    grad: torch.Tensor,
    seed: torch.Tensor,
    offset: torch.Tensor,
    step_size: float,
    noise_std: float,
    grad_clip: float | None,
    lo: float | None,
    hi: float | None,
    in_place: bool = False,
) -> torch.Tensor:
    """The step of ``x`` as a new contiguous tensor of x's shape and dtype.

    ``seed``/``offset``: 0-dim int64 tensors on x's device; ``grad``: x's shape and dtype.
    Non-contiguous inputs are read through contiguous copies (the noise follows the logical
    row-major index either way).
    ``in_place``: write the step into ``x`` instead (through a contiguous copy when ``x`` is
    not contiguous); that is :func:`langevin_step_`.
    """
    xc = x.contiguous()
    out = xc if in_place else _empty(x.shape, x.dtype, x.device)
    _launch_fwd(xc, grad, out, seed, offset, step_size, noise_std, grad_clip, lo, hi)
    if in_place and xc is not x:
        x.copy_(xc)
    return out


langevin_step_ = in_place_twin(langevin_step)


@launcher
def langevin_step_bwd(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    grad: torch.Tensor,
    seed: torch.Tensor,
    offset: torch.Tensor,
    step_size: float,
    noise_std: float,
    grad_clip: float | None,
    lo: float | None,
    hi: float | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_x, grad_grad) of langevin_step, contiguous, x's dtype (see the schema's note)."""
    grad_x = _empty(x.shape, x.dtype, x.device)
    grad_grad = _empty(x.shape, x.dtype, x.device)
    tensors = (grad_out.to(x.dtype).contiguous(), x.contiguous(), grad.contiguous(), grad_x, grad_grad)
    _launch(x, tensors, seed, offset, step_size, noise_std, grad_clip, lo, hi, backward=True)
    return grad_x, grad_grad


@launcher
def philox_words(seed: torch.Tensor, offset: torch.Tensor, n_ctr: int) -> torch.Tensor:
    """The Philox words of counters offset .. offset + n_ctr - 1 as this module's kernels draw
    them, (n_ctr, 4) int64 holding uint32 values (for the tests)."""
    out = torch.empty(4 * n_ctr, dtype=torch.int32, device=seed.device)
    if n_ctr:
        block_c, warps = _block_c()
        _philox_words_kernel[(triton.cdiv(n_ctr, block_c),)](
            out, seed, offset, n_ctr, BLOCK_C=block_c, num_warps=warps
        )
    return out.to(torch.int64).reshape(n_ctr, 4) & 0xFFFFFFFF

"""Triton kernels for partition_fwd / partition_bwd, with their launchers.

Semantics: csrc/thermokern.cpp, [Note: partition statistics]. x is a contiguous (O, R, I)
tensor reduced over dim 1; output j = o * I + i describes x[o, :, i], with k = scale[j] and
x' = -x when ``negate``. An element is *included* when the mask keeps it and its weight (if
any) is != 0.

Forward: online statistics over the included elements, per output,
    m = max x' over the finite (or -inf) included x',  d = sum w e^u,
    m1 = sum w u e^u,  m2 = sum w u^2 e^u,  u = k (x' - m).
When the running maximum grows from m to m' (delta = k (m - m') <= 0, r = e^delta), the
sums seen so far become
    d' = r d,  m1' = r (m1 + delta d),  m2' = r (m2 + 2 delta m1 + delta^2 d),
and are 0 while m is -inf (nothing finite seen yet: -inf - -inf and 0 * -inf never appear).
Included +inf and NaN elements are kept out of those sums and only flagged; at the end a NaN
gives (NaN, NaN, NaN, NaN), and a +inf gives shift +inf, sum = the sum of w over the included
+inf elements (a second pass, taken only by outputs holding a +inf), m1 = m2 = NaN. The shift
is the exact maximum.

Backward: per element, u = k (x' - shift), p = e^{u - log_norm},
    g = p (c0 + c1 u + c2 u^2), 0 where p == 0 or x' == -inf (e^{z} = 0 exactly there),
    grad_x = (-k if negate else k) w g on included elements, 0 elsewhere;
    grad_weight = g where the mask keeps the element (zero weights included), 0 elsewhere.

Two layouts, without any transposing copy:
  * rows (I == 1): one program per output, walking R in 1-D blocks of BLOCK_R;
  * columns (I > 1): one program per (o, block of BLOCK_I consecutive i), walking r with a
    [BLOCK_R, BLOCK_I] tile (loads contiguous along i) and per-column statistics.
The backward has no reduction, so it also splits R into chunks over a second grid axis when
there would otherwise be too few programs to fill the GPU.

weight and mask may have any strides (a broadcast one has stride 0 in its broadcast dims):
element (o, r, i) sits at o * S0 + r * S1 + i * S2 in their own strides, while x, grad_x and
grad_weight are contiguous. Offsets are int64 (O * R * I can pass 2^31); the column kernels
keep an int64 scalar base per block of rows and int32 offsets inside the tile (int64 tiles of
4096 elements took every register and spilled), int64 ones only when a tile itself spans 2^31
elements. Optional tensors that
are None reach the kernels as a dummy pointer (x) with zero strides and their HAS_* flag off;
the bool mask is read as uint8 (a view).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import _acc, _block_and_warps, _empty, _interpreting, _wrap_triton, launcher

# ----------------------------------------------------------------------------- device helpers


@triton.jit
def _load_elements(
    x_ptr,
    w_ptr,
    mask_ptr,
    offs,  # element offsets of x from x_ptr
    w_offs,  # element offsets of the weight from w_ptr
    m_offs,  # element offsets of the mask from mask_ptr
    valid,  # in bounds
    NEGATE: tl.constexpr,
    HAS_WEIGHT: tl.constexpr,
    HAS_MASK: tl.constexpr,
    ACC: tl.constexpr,
):
    """(x', w, keep, inc): x' in ACC; w (1.0 without weight); keep: in bounds and kept by the
    mask; inc: kept and w != 0 (the element is included)."""
    x = tl.load(x_ptr + offs, mask=valid, other=0.0).to(ACC)
    if NEGATE:
        x = -x
    keep = valid
    if HAS_MASK:
        keep = keep & (tl.load(mask_ptr + m_offs, mask=valid, other=0) != 0)
    if HAS_WEIGHT:
        w = tl.load(w_ptr + w_offs, mask=valid, other=0.0).to(ACC)
        inc = keep & (w != 0.0)
    else:
        w = tl.full((), 1.0, ACC)
        inc = keep
    return x, w, keep, inc


@triton.jit
def _online_update(
    m,  # running max of the finite included x' (-inf: none yet)
    d,  # sum w e^u, u = k (x' - m)
    s1,  # sum w u e^u
    s2,  # sum w u^2 e^u
    flag,  # 0: finite so far; 1: an included +inf; 2: an included NaN
    x,  # x' of the block (ACC), [BLOCK_R] or [BLOCK_R, BLOCK_I]
    w,  # weights of the block (ACC) or the scalar 1.0 without weight
    inc,  # included elements
    k,  # scale, a scalar or [BLOCK_I]
    HAS_WEIGHT: tl.constexpr,
    MOMENTS: tl.constexpr,
    ACC: tl.constexpr,
):
    """Merge one block into the per-output statistics (reductions over axis 0)."""
    inf = float("inf")
    code = tl.where(inc & (x != x), 2, tl.where(inc & (x == inf), 1, 0))  # noqa: PLR0124 (NaN)
    flag = tl.maximum(flag, tl.max(code, axis=0))
    xf = tl.where(inc & (x < inf), x, -inf).to(ACC)  # NaN < inf is false
    m_new = tl.maximum(m, tl.max(xf, axis=0))
    # Shift by 0 while everything seen is -inf, so that -inf - -inf never appears.
    m_safe = tl.where(m_new == -inf, 0.0, m_new).to(ACC)
    empty = m == -inf  # the sums so far are 0
    delta = (m - m_safe) * k
    r = tl.exp(delta)
    u = (xf - m_safe) * k  # subtract first: exact for x' near the max
    e = tl.exp(u)  # 0 for xf = -inf (excluded elements included)
    if HAS_WEIGHT:
        we = tl.where(inc, w, 0.0) * e  # a NaN weight of an excluded element must not leak
    else:
        we = e
    if MOMENTS:
        us = tl.where(xf == -inf, 0.0, u).to(ACC)  # u e^u = 0 there, not -inf * 0
        t1 = we * us
        s2 = tl.where(empty, 0.0, r * (s2 + delta * (2.0 * s1 + delta * d))).to(ACC)
        s2 += tl.sum(t1 * us, axis=0)
        s1 = tl.where(empty, 0.0, r * (s1 + delta * d)).to(ACC)
        s1 += tl.sum(t1, axis=0)
    d = tl.where(empty, 0.0, r * d).to(ACC)
    d += tl.sum(we, axis=0)
    return m_new, d, s1, s2, flag


@triton.jit
def _inf_weight(x, w, inc, HAS_WEIGHT: tl.constexpr):
    """Per element: w on the included x' = +inf, else 0."""
    hit = inc & (x == float("inf"))
    if HAS_WEIGHT:
        return tl.where(hit, w, 0.0)
    else:
        return tl.where(hit, 1.0, 0.0)


@triton.jit
def _finish(m, d, s1, s2, flag, winf):
    """(shift, sum, m1, m2) from the online statistics and the +inf/NaN flag."""
    nan = float("nan")
    bad = flag != 0
    shift = tl.where(flag == 2, nan, tl.where(flag == 1, float("inf"), m))
    total = tl.where(flag == 2, nan, tl.where(flag == 1, winf, d))
    return shift, total, tl.where(bad, nan, s1), tl.where(bad, nan, s2)


@triton.jit
def _store_stats(
    shift_ptr, sum_ptr, m1_ptr, m2_ptr, j0, lanes, ok, m, d, s1, s2, flag, winf, MOMENTS: tl.constexpr
):  # fmt: skip
    """Write the (shift, sum, m1, m2) of outputs j0 + lanes where ``ok`` from their online
    statistics (see :func:`_finish`); m1 and m2 only with MOMENTS. A single output: lanes 0, ok
    True. (The scalar int64 j0 is added to the pointers first: the lanes stay int32.)"""
    shift, total, m1, m2 = _finish(m, d, s1, s2, flag, winf)
    tl.store(shift_ptr + j0 + lanes, shift, mask=ok)
    tl.store(sum_ptr + j0 + lanes, total, mask=ok)
    if MOMENTS:
        tl.store(m1_ptr + j0 + lanes, m1, mask=ok)
        tl.store(m2_ptr + j0 + lanes, m2, mask=ok)


@triton.jit
def _output_consts(
    scale_ptr, shift_ptr, log_norm_ptr, coef_ptr, j, ok,
    SCALE_STRIDE: tl.constexpr, NEGATE: tl.constexpr, NCOEF: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    """What the backward needs of outputs j where ``ok`` (True for a single output), in ACC:
    (k, k_x, shift, log_norm, c0, c1, c2), k_x = -k when NEGATE (the factor of grad_x), the
    forward's shift and log_norm, the NCOEF coefficients (c1, c2 are c0 beyond NCOEF, unused)."""
    k = tl.load(scale_ptr + j * SCALE_STRIDE, mask=ok, other=1.0).to(ACC)
    k_x = -k if NEGATE else k
    shift = tl.load(shift_ptr + j, mask=ok, other=0.0).to(ACC)
    log_norm = tl.load(log_norm_ptr + j, mask=ok, other=0.0).to(ACC)
    c0 = tl.load(coef_ptr + j * NCOEF, mask=ok, other=0.0).to(ACC)
    c1 = c0
    c2 = c0
    if NCOEF >= 2:
        c1 = tl.load(coef_ptr + j * NCOEF + 1, mask=ok, other=0.0).to(ACC)
    if NCOEF >= 3:
        c2 = tl.load(coef_ptr + j * NCOEF + 2, mask=ok, other=0.0).to(ACC)
    return k, k_x, shift, log_norm, c0, c1, c2


@triton.jit
def _grads(
    x, w, keep, inc, k_x, k, shift, log_norm, c0, c1, c2, NCOEF: tl.constexpr, HAS_WEIGHT: tl.constexpr
):
    """(grad_x, g) of a block; g is 0 wherever p == 0 or x' == -inf; grad_x is 0 off inc,
    g is 0 off keep."""
    u = (x - shift) * k
    p = tl.exp(u - log_norm)
    poly = c0
    if NCOEF >= 2:
        poly = poly + c1 * u
    if NCOEF >= 3:
        poly = poly + c2 * u * u
    g = tl.where((p == 0.0) | (x == float("-inf")), 0.0, p * poly)
    if HAS_WEIGHT:
        gx = tl.where(inc, k_x * w * g, 0.0)
    else:
        gx = tl.where(inc, k_x * g, 0.0)
    return gx, tl.where(keep, g, 0.0)


# ----------------------------------------------------------------------------- layouts


@triton.jit
def _row_offsets(r0, R, base, w_base, m_base, W_S1, M_S1, BLOCK_R: tl.constexpr):
    """(valid, offs, w_offs, m_offs) of the block of elements r0 .. r0 + BLOCK_R - 1 of a row
    (rows layout): in bounds, and their int64 offsets in x, the weight and the mask from the
    row's first element of each (base, w_base, m_base)."""
    rr = tl.arange(0, BLOCK_R)
    r = (r0 + rr).to(tl.int64)
    return r0 + rr < R, base + r, w_base + r * W_S1, m_base + r * M_S1


@triton.jit
def _column_block(I, BLOCK_I: tl.constexpr):
    """(o, i0, ci, col_ok) of this program of a column kernel (grid axis 0: o * cdiv(I, BLOCK_I)
    + block): its outer index o, its first column i0 (int64), the column lanes ci and which of
    i0 + ci exist."""
    pid = tl.program_id(0).to(tl.int64)
    n_ib = tl.cdiv(I, BLOCK_I)
    o = pid // n_ib
    i0 = (pid % n_ib) * BLOCK_I
    ci = tl.arange(0, BLOCK_I)
    return o, i0, ci, i0 + ci < I


@triton.jit
def _tile_steps(I, W_S1, M_S1, BLOCK_R: tl.constexpr):
    """int64 scalar advances of the x, weight and mask offsets from one block of BLOCK_R rows to
    the next."""
    rows = tl.full((), BLOCK_R, tl.int64)
    return rows * I, rows * W_S1, rows * M_S1


@triton.jit
def _tile_offsets(
    I, W_S1, W_S2, M_S1, M_S2, TILE_IDX: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_I: tl.constexpr
):
    """In-tile element offsets of a [BLOCK_R, BLOCK_I] tile of x, the weight and the mask,
    relative to the tile's first element, in TILE_IDX: int32 (half the registers of int64
    tiles), int64 only when a tile spans 2^31 elements (see _tile_idx)."""
    rr = tl.arange(0, BLOCK_R)[:, None].to(TILE_IDX)
    ci = tl.arange(0, BLOCK_I)[None, :].to(TILE_IDX)
    return rr * I + ci, rr * W_S1 + ci * W_S2, rr * M_S1 + ci * M_S2


# ----------------------------------------------------------------------------- forward kernels


@triton.jit
def _partition_fwd_rows_kernel(
    x_ptr,  # (O, R) contiguous
    w_ptr,  # (O, R) weights (read only with HAS_WEIGHT)
    mask_ptr,  # (O, R) uint8 mask (read only with HAS_MASK)
    scale_ptr,  # (1,) or (O,) scale k, accumulation dtype
    shift_ptr,  # (O,) out
    sum_ptr,  # (O,) out
    m1_ptr,  # (O,) out (written only with MOMENTS)
    m2_ptr,  # (O,) out (written only with MOMENTS)
    R,  # reduced length
    W_S0,  # weight strides over (O, R)
    W_S1,
    M_S0,  # mask strides over (O, R)
    M_S1,
    SCALE_STRIDE: tl.constexpr,  # 0: one scale for every output; 1: one per output
    NEGATE: tl.constexpr,
    HAS_WEIGHT: tl.constexpr,
    HAS_MASK: tl.constexpr,
    MOMENTS: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_R: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    base = row * R
    w_base = row * W_S0
    m_base = row * M_S0
    k = tl.load(scale_ptr + row * SCALE_STRIDE).to(ACC)
    m = tl.full((), float("-inf"), ACC)
    d = tl.zeros((), ACC)
    s1 = tl.zeros((), ACC)
    s2 = tl.zeros((), ACC)
    flag = tl.zeros((), tl.int32)
    for r0 in range(0, R, BLOCK_R):
        valid, offs, w_offs, m_offs = _row_offsets(r0, R, base, w_base, m_base, W_S1, M_S1, BLOCK_R)
        x, w, _, inc = _load_elements(
            x_ptr, w_ptr, mask_ptr, offs, w_offs, m_offs, valid, NEGATE, HAS_WEIGHT, HAS_MASK, ACC
        )
        m, d, s1, s2, flag = _online_update(m, d, s1, s2, flag, x, w, inc, k, HAS_WEIGHT, MOMENTS, ACC)
    winf = tl.zeros((), ACC)
    if flag == 1:  # rare: an included +inf and no NaN; sum the weights of the +inf elements
        for r0 in range(0, R, BLOCK_R):
            valid, offs, w_offs, m_offs = _row_offsets(r0, R, base, w_base, m_base, W_S1, M_S1, BLOCK_R)
            x, w, _, inc = _load_elements(
                x_ptr, w_ptr, mask_ptr, offs, w_offs, m_offs, valid, NEGATE, HAS_WEIGHT, HAS_MASK, ACC
            )
            winf += tl.sum(_inf_weight(x, w, inc, HAS_WEIGHT), axis=0)
    _store_stats(shift_ptr, sum_ptr, m1_ptr, m2_ptr, row, 0, True, m, d, s1, s2, flag, winf, MOMENTS)


@triton.jit
def _partition_fwd_cols_kernel(
    x_ptr,  # (O, R, I) contiguous
    w_ptr,  # (O, R, I) weights (read only with HAS_WEIGHT)
    mask_ptr,  # (O, R, I) uint8 mask (read only with HAS_MASK)
    scale_ptr,  # (1,) or (O * I,) scale k, accumulation dtype
    shift_ptr,  # (O * I,) out
    sum_ptr,  # (O * I,) out
    m1_ptr,  # (O * I,) out (written only with MOMENTS)
    m2_ptr,  # (O * I,) out (written only with MOMENTS)
    R,  # reduced length
    I,  # inner length
    W_S0,  # weight strides over (O, R, I)
    W_S1,
    W_S2,
    M_S0,  # mask strides over (O, R, I)
    M_S1,
    M_S2,
    SCALE_STRIDE: tl.constexpr,
    NEGATE: tl.constexpr,
    HAS_WEIGHT: tl.constexpr,
    HAS_MASK: tl.constexpr,
    MOMENTS: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_I: tl.constexpr,
    TILE_IDX: tl.constexpr,  # int32, or int64 when a tile spans 2^31 elements (_tile_idx)
):
    o, i0, ci, col_ok = _column_block(I, BLOCK_I)
    j0 = o * I + i0  # first output of this program
    k = tl.load(scale_ptr + (j0 + ci) * SCALE_STRIDE, mask=col_ok, other=1.0).to(ACC)
    tile, w_tile, m_tile = _tile_offsets(I, W_S1, W_S2, M_S1, M_S2, TILE_IDX, BLOCK_R, BLOCK_I)
    rr = tl.arange(0, BLOCK_R)[:, None]
    m = tl.full((BLOCK_I,), float("-inf"), ACC)
    d = tl.zeros((BLOCK_I,), ACC)
    s1 = tl.zeros((BLOCK_I,), ACC)
    s2 = tl.zeros((BLOCK_I,), ACC)
    flag = tl.zeros((BLOCK_I,), tl.int32)
    # Scalar int64 bases of the current block of rows; in-tile offsets stay int32.
    step, w_step, m_step = _tile_steps(I, W_S1, M_S1, BLOCK_R)
    x_blk = x_ptr + (o * R * I + i0)
    w_blk = w_ptr + (o * W_S0 + i0 * W_S2)
    m_blk = mask_ptr + (o * M_S0 + i0 * M_S2)
    for r0 in range(0, R, BLOCK_R):
        valid = (r0 + rr < R) & col_ok[None, :]
        x, w, _, inc = _load_elements(
            x_blk, w_blk, m_blk, tile, w_tile, m_tile, valid, NEGATE, HAS_WEIGHT, HAS_MASK, ACC,
        )  # fmt: skip
        m, d, s1, s2, flag = _online_update(m, d, s1, s2, flag, x, w, inc, k, HAS_WEIGHT, MOMENTS, ACC)
        x_blk += step
        w_blk += w_step
        m_blk += m_step
    winf = tl.zeros((BLOCK_I,), ACC)
    if tl.sum((flag == 1).to(tl.int32), axis=0) > 0:  # rare: a column with a +inf, no NaN
        x_blk = x_ptr + (o * R * I + i0)
        w_blk = w_ptr + (o * W_S0 + i0 * W_S2)
        m_blk = mask_ptr + (o * M_S0 + i0 * M_S2)
        for r0 in range(0, R, BLOCK_R):
            valid = (r0 + rr < R) & col_ok[None, :]
            x, w, _, inc = _load_elements(
                x_blk, w_blk, m_blk, tile, w_tile, m_tile, valid, NEGATE, HAS_WEIGHT, HAS_MASK, ACC,
            )  # fmt: skip
            winf += tl.sum(_inf_weight(x, w, inc, HAS_WEIGHT), axis=0)
            x_blk += step
            w_blk += w_step
            m_blk += m_step
    _store_stats(shift_ptr, sum_ptr, m1_ptr, m2_ptr, j0, ci, col_ok, m, d, s1, s2, flag, winf, MOMENTS)


# ----------------------------------------------------------------------------- backward kernels


@triton.jit
def _partition_bwd_rows_kernel(
    x_ptr,  # (O, R) contiguous
    w_ptr,  # (O, R) weights (read only with HAS_WEIGHT)
    mask_ptr,  # (O, R) uint8 mask (read only with HAS_MASK)
    scale_ptr,  # (1,) or (O,) scale k
    shift_ptr,  # (O,) shift from the forward
    log_norm_ptr,  # (O,) log_norm
    coef_ptr,  # (O, NCOEF) contiguous
    gx_ptr,  # (O, R) out, x's dtype
    gw_ptr,  # (O, R) out, x's dtype (written only with WEIGHT_GRAD)
    R,
    W_S0,  # weight strides over (O, R)
    W_S1,
    M_S0,  # mask strides over (O, R)
    M_S1,
    CHUNK_R,  # rows of R per program along grid axis 1 (a multiple of BLOCK_R)
    SCALE_STRIDE: tl.constexpr,
    NEGATE: tl.constexpr,
    HAS_WEIGHT: tl.constexpr,
    HAS_MASK: tl.constexpr,
    WEIGHT_GRAD: tl.constexpr,
    NCOEF: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_R: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    r_start = tl.program_id(1) * CHUNK_R
    r_end = tl.minimum(r_start + CHUNK_R, R)
    base = row * R
    w_base = row * W_S0
    m_base = row * M_S0
    k, k_x, shift, log_norm, c0, c1, c2 = _output_consts(
        scale_ptr, shift_ptr, log_norm_ptr, coef_ptr, row, True, SCALE_STRIDE, NEGATE, NCOEF, ACC
    )
    out_t = gx_ptr.dtype.element_ty
    for r0 in range(r_start, r_end, BLOCK_R):
        valid, offs, w_offs, m_offs = _row_offsets(r0, R, base, w_base, m_base, W_S1, M_S1, BLOCK_R)
        x, w, keep, inc = _load_elements(
            x_ptr, w_ptr, mask_ptr, offs, w_offs, m_offs, valid, NEGATE, HAS_WEIGHT, HAS_MASK, ACC
        )
        gx, g = _grads(x, w, keep, inc, k_x, k, shift, log_norm, c0, c1, c2, NCOEF, HAS_WEIGHT)
        tl.store(gx_ptr + offs, gx.to(out_t), mask=valid)
        if WEIGHT_GRAD:
            tl.store(gw_ptr + offs, g.to(out_t), mask=valid)


@triton.jit
def _partition_bwd_cols_kernel(
    x_ptr,  # (O, R, I) contiguous
    w_ptr,  # (O, R, I) weights (read only with HAS_WEIGHT)
    mask_ptr,  # (O, R, I) uint8 mask (read only with HAS_MASK)
    scale_ptr,  # (1,) or (O * I,) scale k
    shift_ptr,  # (O * I,)
    log_norm_ptr,  # (O * I,)
    coef_ptr,  # (O * I, NCOEF) contiguous
    gx_ptr,  # (O, R, I) out, x's dtype
    gw_ptr,  # (O, R, I) out (written only with WEIGHT_GRAD)
    R,
    I,
    W_S0,  # weight strides over (O, R, I)
    W_S1,
    W_S2,
    M_S0,  # mask strides over (O, R, I)
    M_S1,
    M_S2,
    CHUNK_R,  # rows of R per program along grid axis 1 (a multiple of BLOCK_R)
    SCALE_STRIDE: tl.constexpr,
    NEGATE: tl.constexpr,
    HAS_WEIGHT: tl.constexpr,
    HAS_MASK: tl.constexpr,
    WEIGHT_GRAD: tl.constexpr,
    NCOEF: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_I: tl.constexpr,
    TILE_IDX: tl.constexpr,  # int32, or int64 when a tile spans 2^31 elements (_tile_idx)
):
    r_start = tl.program_id(1) * CHUNK_R
    r_end = tl.minimum(r_start + CHUNK_R, R)
    o, i0, ci, col_ok = _column_block(I, BLOCK_I)
    j = o * I + i0 + ci
    k, k_x, shift, log_norm, c0, c1, c2 = _output_consts(
        scale_ptr, shift_ptr, log_norm_ptr, coef_ptr, j, col_ok, SCALE_STRIDE, NEGATE, NCOEF, ACC
    )
    tile, w_tile, m_tile = _tile_offsets(I, W_S1, W_S2, M_S1, M_S2, TILE_IDX, BLOCK_R, BLOCK_I)
    rr = tl.arange(0, BLOCK_R)[:, None]
    # Scalar int64 offsets of the first row of this chunk; in-tile offsets stay int32.
    r_start64 = r_start.to(tl.int64)
    x_off = o * R * I + r_start64 * I + i0  # x, grad_x and grad_weight share the layout
    w_off = o * W_S0 + r_start64 * W_S1 + i0 * W_S2
    m_off = o * M_S0 + r_start64 * M_S1 + i0 * M_S2
    step, w_step, m_step = _tile_steps(I, W_S1, M_S1, BLOCK_R)
    out_t = gx_ptr.dtype.element_ty
    for r0 in range(r_start, r_end, BLOCK_R):
        valid = (r0 + rr < R) & col_ok[None, :]
        x, w, keep, inc = _load_elements(
            x_ptr + x_off, w_ptr + w_off, mask_ptr + m_off, tile, w_tile, m_tile, valid,
            NEGATE, HAS_WEIGHT, HAS_MASK, ACC,
        )  # fmt: skip
        gx, g = _grads(x, w, keep, inc, k_x, k, shift, log_norm, c0, c1, c2, NCOEF, HAS_WEIGHT)
        tl.store(gx_ptr + x_off + tile, gx.to(out_t), mask=valid)
        if WEIGHT_GRAD:
            tl.store(gw_ptr + x_off + tile, g.to(out_t), mask=valid)
        x_off += step
        w_off += w_step
        m_off += m_step


# ----------------------------------------------------------------------------- launchers


def _check_inputs(x, weight, mask, scale) -> tuple[int, int, int, torch.dtype, int]:
    """Argument contract of check_partition_inputs (csrc/include/thermokern/checks.h).

    Returns (O, R, I, accumulation torch dtype, SCALE_STRIDE)."""
    if x.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        raise TypeError(
            f"input: expected a floating tensor (float32, float64, float16, bfloat16), got {x.dtype}"
        )
    if x.dim() != 3 or x.shape[1] == 0 or not x.is_contiguous():
        raise ValueError(
            "input: expected a contiguous 3-D (outer, reduced, inner) tensor with a non-empty "
            f"reduced dimension, got shape {tuple(x.shape)}"
        )
    for name, t in (("weight", weight), ("mask", mask)):
        if t is None:
            continue
        if t.shape != x.shape:  # any strides (a broadcast view has stride 0)
            raise ValueError(f"{name}: expected a tensor of shape {tuple(x.shape)}, got {tuple(t.shape)}")
        want = x.dtype if name == "weight" else torch.bool
        if t.dtype != want:
            raise TypeError(f"{name}: expected dtype {want}, got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"{name}: expected device {x.device}, got {t.device}")
    O, R, I = x.shape
    n = O * I
    acc_t, _ = _acc(x.dtype)
    if scale.dim() != 1 or scale.shape[0] not in (1, n):
        raise ValueError(f"temperature: expected 1 or {n} scale values, got shape {tuple(scale.shape)}")
    if not scale.is_contiguous() or scale.device != x.device:
        raise ValueError(f"temperature: expected a contiguous scale tensor on {x.device}")
    if scale.dtype != acc_t:
        raise TypeError(f"temperature: expected the scale as {acc_t}, got {scale.dtype}")
    return O, R, I, acc_t, 0 if scale.shape[0] == 1 else 1


def _cols_tile(dtype: torch.dtype, backward: bool) -> int:
    """Elements per column-kernel tile on a GPU. Sized so that no configuration spills
    registers on sm_90 (tests/test_partition.py compiles them all): the backward keeps more
    per element than the forward (with 4096 it needed all 255 registers per thread for a
    weight and a mask), and float64 accumulates in register pairs."""
    tile = 2048 if backward else 4096
    return tile // 2 if dtype == torch.float64 else tile


def _cols_blocks(O: int, R: int, I: int, tile: int) -> tuple[int, int, int]:
    """(BLOCK_R, BLOCK_I, num_warps) of the column kernels for tiles of about ``tile``
    elements on a GPU (see _cols_tile)."""
    if _interpreting():  # few, large programs: each one is a series of numpy calls
        tile = 16384
        block_i = min(triton.next_power_of_2(I), tile)
    else:
        block_i = min(triton.next_power_of_2(I), 128)
        # Narrower column blocks when there would be too few programs to fill the GPU; 16
        # columns still read 64 contiguous bytes of float32 per row.
        while block_i > 16 and O * triton.cdiv(I, block_i) < 264:
            block_i //= 2
    block_r = max(1, min(triton.next_power_of_2(R), tile // block_i))
    warps = 4 if block_r * block_i <= 1024 else 8
    return block_r, block_i, warps


def _bwd_min_programs() -> int:
    """Programs the backward aims for before it splits R over a second grid axis."""
    return 1 if _interpreting() else 1024


def _r_chunks(R: int, block_r: int, programs: int) -> tuple[int, int]:
    """(CHUNK_R, number of chunks) splitting R over grid axis 1 (at most 65535 chunks)."""
    blocks = triton.cdiv(R, block_r)
    splits = max(1, min(blocks, triton.cdiv(_bwd_min_programs(), max(programs, 1)), 65535))
    chunk = triton.cdiv(blocks, splits) * block_r
    return chunk, triton.cdiv(R, chunk)


def _tile_idx(I: int, w_s, m_s, block_r: int, block_i: int):
    """The index type of a [block_r, block_i] tile's offsets (x, weight, mask): int32, or
    int64 when they can reach 2^31."""
    span = max(
        block_r * I + block_i,
        block_r * abs(w_s[1]) + block_i * abs(w_s[2]),
        block_r * abs(m_s[1]) + block_i * abs(m_s[2]),
    )
    return tl.int64 if span >= 2**31 else tl.int32


def _optional_args(x, weight, mask):
    """Kernel pointers (a dummy x when absent), their strides ((0, 0, 0) when absent) and the
    HAS_* flags of weight and mask."""
    w_arg = weight if weight is not None else x
    m_arg = mask.view(torch.uint8) if mask is not None else x
    w_s = weight.stride() if weight is not None else (0, 0, 0)
    m_s = mask.stride() if mask is not None else (0, 0, 0)
    return w_arg, m_arg, w_s, m_s, {"HAS_WEIGHT": weight is not None, "HAS_MASK": mask is not None}


@launcher
def partition_fwd(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    mask: torch.Tensor | None,
    scale: torch.Tensor,
    negate: bool,
    moments: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(shift, sum, m1, m2), each 1-D (O * I) in the accumulation dtype; m1 and m2 are empty
    (shape (0,)) when ``moments == 0``. See [Note: partition statistics]."""
    O, R, I, acc_t, scale_stride = _check_inputs(x, weight, mask, scale)
    if moments not in (0, 2):
        raise ValueError(f"moments: expected 0 or 2, got {moments}")
    n = O * I
    shift = _empty(n, acc_t, x.device)
    total = _empty(n, acc_t, x.device)
    m1 = _empty(n if moments else 0, acc_t, x.device)
    m2 = _empty(n if moments else 0, acc_t, x.device)
    if n == 0:
        return shift, total, m1, m2
    w_arg, m_arg, w_s, m_s, flags = _optional_args(x, weight, mask)
    meta = dict(
        SCALE_STRIDE=scale_stride, NEGATE=bool(negate), MOMENTS=moments == 2, ACC=_acc(x.dtype)[1], **flags
    )
    m1_arg = m1 if moments else shift
    m2_arg = m2 if moments else shift
    if I == 1:
        block_r, warps = _block_and_warps(R)
        _wrap_triton(_partition_fwd_rows_kernel)[(O,)](
            x, w_arg, m_arg, scale, shift, total, m1_arg, m2_arg, R, *w_s[:2], *m_s[:2],
            BLOCK_R=block_r, num_warps=warps, **meta,
        )  # fmt: skip
    else:
        block_r, block_i, warps = _cols_blocks(O, R, I, _cols_tile(x.dtype, backward=False))
        grid = (O * triton.cdiv(I, block_i),)
        _wrap_triton(_partition_fwd_cols_kernel)[grid](
            x, w_arg, m_arg, scale, shift, total, m1_arg, m2_arg, R, I, *w_s, *m_s,
            BLOCK_R=block_r, BLOCK_I=block_i, TILE_IDX=_tile_idx(I, w_s, m_s, block_r, block_i),
            num_warps=warps, **meta,
        )  # fmt: skip
    return shift, total, m1, m2


@launcher
def partition_bwd(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    mask: torch.Tensor | None,
    scale: torch.Tensor,
    negate: bool,
    shift: torch.Tensor,
    log_norm: torch.Tensor,
    coef: torch.Tensor,
    weight_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_x, grad_weight) in x's dtype and shape (contiguous); grad_weight is empty
    (shape (0,)) unless ``weight_grad``. See [Note: partition statistics]."""
    O, R, I, acc_t, scale_stride = _check_inputs(x, weight, mask, scale)
    n = O * I
    for name, t in (("shift", shift), ("log_norm", log_norm)):
        if t.dim() != 1 or t.shape[0] != n or not t.is_contiguous():
            raise ValueError(
                f"{name}: expected a contiguous 1-D tensor of {n} values, got shape {tuple(t.shape)}"
            )
        if t.dtype != acc_t:
            raise TypeError(f"{name}: expected dtype {acc_t}, got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"{name}: expected device {x.device}")
    if coef.dim() != 2 or coef.shape[0] != n or not 1 <= coef.shape[1] <= 3 or not coef.is_contiguous():
        raise ValueError(f"coef: expected a contiguous ({n}, 1..3) tensor, got shape {tuple(coef.shape)}")
    if coef.dtype != acc_t:
        raise TypeError(f"coef: expected dtype {acc_t}, got {coef.dtype}")
    if coef.device != x.device:
        raise ValueError(f"coef: expected device {x.device}")
    if weight_grad and weight is None:
        raise ValueError("weight_grad: needs a weight tensor")
    grad_x = _empty(x.shape, x.dtype, x.device)
    grad_w = _empty(x.shape if weight_grad else 0, x.dtype, x.device)
    if x.numel() == 0:
        return grad_x, grad_w
    w_arg, m_arg, w_s, m_s, flags = _optional_args(x, weight, mask)
    meta = dict(
        SCALE_STRIDE=scale_stride,
        NEGATE=bool(negate),
        WEIGHT_GRAD=bool(weight_grad),
        NCOEF=coef.shape[1],
        ACC=_acc(x.dtype)[1],
        **flags,
    )
    gw_arg = grad_w if weight_grad else grad_x
    if I == 1:
        block_r, warps = _block_and_warps(R)
        chunk, splits = _r_chunks(R, block_r, O)
        _wrap_triton(_partition_bwd_rows_kernel)[(O, splits)](
            x, w_arg, m_arg, scale, shift, log_norm, coef, grad_x, gw_arg, R, *w_s[:2], *m_s[:2], chunk,
            BLOCK_R=block_r, num_warps=warps, **meta,
        )  # fmt: skip
    else:
        block_r, block_i, warps = _cols_blocks(O, R, I, _cols_tile(x.dtype, backward=True))
        programs = O * triton.cdiv(I, block_i)
        chunk, splits = _r_chunks(R, block_r, programs)
        _wrap_triton(_partition_bwd_cols_kernel)[(programs, splits)](
            x, w_arg, m_arg, scale, shift, log_norm, coef, grad_x, gw_arg, R, I, *w_s, *m_s, chunk,
            BLOCK_R=block_r, BLOCK_I=block_i, TILE_IDX=_tile_idx(I, w_s, m_s, block_r, block_i),
            num_warps=warps, **meta,
        )  # fmt: skip
    return grad_x, grad_w

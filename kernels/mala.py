"""Triton kernels for mala_accept (the fused accept/reject of a MALA step) and mala_proposal
(the proposal with per-chain step sizes and temperatures), with their launchers.

A program owns BLOCK_N chains (rows of a contiguous (chains, D) view) and walks their D
elements in (BLOCK_N, BLOCK_D) tiles: the first sweep accumulates, per chain,
``S = sum (2 (x - x') + eta (g' - g)) (g + g')``; then ``log alpha = -((E' - E) + S / 4) / T``,
the chain's uniform (word ``c % 4`` of ``tl.randint4x(seed, offset + ceil(numel / 4) + c // 4)``,
after the proposal's counters) and the decision ``log u <= log alpha``; the second sweep copies
x' or x (only that one is read) into x_new. See [Note: MALA acceptance] in
csrc/include/thermokern/mala.h; log u is ``-1/2`` times the same ``-2 ln u`` series as the
Langevin noise (kernels/langevin.py), so every backend sees the same uniforms. BLOCK_N is 1
for long chains (one program per chain) and grows for short ones (2-D toy samples), so that a
program still has work for its lanes.
Per-chain parameters ([Note: per-chain MALA parameters] in csrc/thermokern.cpp) are read at
``chain * STRIDE`` (STRIDE 0: one value for every chain).

mala_proposal is the Langevin step kernel's layout (kernels/langevin.py: one program per
BLOCK_C Philox counters) with each element's chain's -eta and sigma = sqrt(2 eta T), the
latter evaluated in float64.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import _empty, _interpreting, _wrap_triton, launcher
from .langevin import _block_c, _counters, _div_rn, _f64_bits, _neg2_log_u, _noise, _param


@triton.jit
def _mala_accept_kernel(
    x_ptr,  # (chains, D) contiguous current states
    xp_ptr,  # (chains, D) contiguous proposals, x's dtype
    g_ptr,  # (chains, D) contiguous dE/dx at x
    gp_ptr,  # (chains, D) contiguous dE/dx at the proposals
    e_ptr,  # (chains,) energies at x, accumulation dtype
    ep_ptr,  # (chains,) energies at the proposals, accumulation dtype
    out_ptr,  # (chains, D) out: x_new, x's dtype
    accepted_ptr,  # (chains,) out: bool
    log_alpha_ptr,  # (chains,) out: accumulation dtype
    seed_ptr,  # 0-dim int64: Philox key
    offset_ptr,  # 0-dim int64: the step's first counter (the proposal's)
    chains,  # number of chains
    D,  # elements per chain
    prop_counters,  # ceil(chains * D / 4): counters the proposal used
    step_bits,  # step_size as float64 bits (int64)
    temp_bits,  # temperature as float64 bits (int64)
    chain_step_ptr,  # per-chain step sizes, accumulation dtype (read only with HAS_CHAIN_STEP)
    chain_temp_ptr,  # per-chain temperatures (read only with HAS_CHAIN_TEMP)
    HAS_CHAIN_STEP: tl.constexpr,
    HAS_CHAIN_TEMP: tl.constexpr,
    CHAIN_STEP_STRIDE: tl.constexpr,  # 0: one value for every chain; 1: one per chain
    CHAIN_TEMP_STRIDE: tl.constexpr,
    ACC: tl.constexpr,  # accumulation dtype
    BLOCK_N: tl.constexpr,  # chains per program
    BLOCK_D: tl.constexpr,  # elements per chain per tile
):
    c = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    cmask = c < chains
    rows = c[:, None] * D
    cols = tl.arange(0, BLOCK_D)[None, :]
    if HAS_CHAIN_STEP:
        step = tl.load(chain_step_ptr + c * CHAIN_STEP_STRIDE, mask=cmask, other=0.0).to(ACC)[:, None]
    else:
        step = _param(step_bits, ACC)
    temperature = tl.zeros((BLOCK_N,), ACC) + _param(temp_bits, ACC)
    if HAS_CHAIN_TEMP:
        temperature = tl.load(chain_temp_ptr + c * CHAIN_TEMP_STRIDE, mask=cmask, other=1.0).to(ACC)
    s = tl.zeros((BLOCK_N, BLOCK_D), ACC)
    for d0 in range(0, D, BLOCK_D):
        m = cmask[:, None] & (d0 + cols < D)
        offs = rows + d0 + cols
        x = tl.load(x_ptr + offs, mask=m, other=0.0).to(ACC)
        xp = tl.load(xp_ptr + offs, mask=m, other=0.0).to(ACC)
        g = tl.load(g_ptr + offs, mask=m, other=0.0).to(ACC)
        gp = tl.load(gp_ptr + offs, mask=m, other=0.0).to(ACC)
        s += (2.0 * (x - xp) + step * (gp - g)) * (g + gp)
    total = tl.sum(s, axis=1)
    e = tl.load(e_ptr + c, mask=cmask, other=0.0).to(ACC)
    ep = tl.load(ep_ptr + c, mask=cmask, other=0.0).to(ACC)
    la = -_div_rn((ep - e) + 0.25 * total, temperature, ACC)
    w0, w1, w2, w3 = tl.randint4x(tl.load(seed_ptr), tl.load(offset_ptr) + prop_counters + c // 4)
    j = c % 4
    w = tl.where(j == 0, w0, tl.where(j == 1, w1, tl.where(j == 2, w2, w3)))
    log_u = -0.5 * _neg2_log_u((w >> 8) + 1, ACC)
    ok = log_u <= la  # a NaN log alpha rejects
    tl.store(log_alpha_ptr + c, la, mask=cmask)
    tl.store(accepted_ptr + c, ok, mask=cmask)
    take = ok[:, None]
    for d0 in range(0, D, BLOCK_D):
        m = cmask[:, None] & (d0 + cols < D)
        offs = rows + d0 + cols
        # Each chain reads only what it writes: two predicated loads (a pointer select would
        # lose the vector loads of aligned rows).
        xp = tl.load(xp_ptr + offs, mask=m & take)
        x = tl.load(x_ptr + offs, mask=m & ~take)
        tl.store(out_ptr + offs, tl.where(take, xp, x), mask=m)


def _blocks(D: int) -> tuple[int, int, int]:
    """(BLOCK_N, BLOCK_D, num_warps): ~2K elements per tile on a GPU (more under the
    interpreter, whose cost is per program), one chain per program once a chain fills a tile."""
    tile = 16384 if _interpreting() else 2048
    block_d = min(triton.next_power_of_2(max(D, 1)), tile)
    block_n = max(1, min(256, tile // block_d))
    warps = 4 if block_n * block_d <= 1024 else 8
    return block_n, block_d, warps


@launcher
def mala_accept(
    x: torch.Tensor,
    x_prop: torch.Tensor,
    grad: torch.Tensor,
    grad_prop: torch.Tensor,
    energy: torch.Tensor,
    energy_prop: torch.Tensor,
    seed: torch.Tensor,
    offset: torch.Tensor,
    step_size: float,
    temperature: float,
    chain_step_size: torch.Tensor | None = None,
    chain_temperature: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_new, accepted, log_alpha) as the C++ op ``thermokern::mala_accept`` (see its schema).

    ``x``, ``x_prop``, ``grad``, ``grad_prop``: one shape (dim 0: chains) and dtype;
    ``energy``/``energy_prop``: (chains,) in the accumulation dtype; ``seed``/``offset``: 0-dim
    int64 tensors on x's device; ``chain_step_size``/``chain_temperature``: None or 1 or
    ``chains`` accumulation-dtype values.
    """
    chains = x.shape[0]
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    x_new = _empty(x.shape, x.dtype, x.device)
    accepted = torch.empty(chains, dtype=torch.bool, device=x.device)
    log_alpha = _empty((chains,), acc, x.device)
    if chains == 0:
        return x_new, accepted, log_alpha
    numel = x.numel()
    D = numel // chains
    block_n, block_d, warps = _blocks(D)
    grid = (triton.cdiv(chains, block_n),)
    chain_params = ((chain_step_size, "chain_step_size"), (chain_temperature, "chain_temperature"))
    _wrap_triton(_mala_accept_kernel)[grid](
        x.contiguous(),
        x_prop.contiguous(),
        grad.contiguous(),
        grad_prop.contiguous(),
        energy.contiguous(),
        energy_prop.contiguous(),
        x_new,
        accepted,
        log_alpha,
        seed,
        offset,
        chains,
        D,
        (numel + 3) // 4,
        _f64_bits(step_size),
        _f64_bits(temperature),
        *(log_alpha if t is None else _chain_param(t, chains, acc, name) for t, name in chain_params),
        HAS_CHAIN_STEP=chain_step_size is not None,
        HAS_CHAIN_TEMP=chain_temperature is not None,
        CHAIN_STEP_STRIDE=_stride(chain_step_size),
        CHAIN_TEMP_STRIDE=_stride(chain_temperature),
        ACC=tl.float64 if acc == torch.float64 else tl.float32,
        BLOCK_N=block_n,
        BLOCK_D=block_d,
        num_warps=warps,
    )
    return x_new, accepted, log_alpha


def _chain_param(t: torch.Tensor, chains: int, acc: torch.dtype, name: str) -> torch.Tensor:
    """A per-chain parameter as the kernels read it (see the schema's Note): 1 or ``chains``
    values of the accumulation dtype, contiguous."""
    if t.dim() != 1 or t.numel() not in (1, chains):
        raise ValueError(f"{name}: expected 1 or {chains} (one per chain) values, got shape {tuple(t.shape)}")
    if t.dtype != acc:
        raise TypeError(f"{name}: expected dtype {acc}, got {t.dtype}")
    return t.contiguous()


def _stride(t: torch.Tensor | None) -> int:
    return 0 if t is None or t.numel() == 1 else 1


@triton.jit
def _mala_proposal_kernel(
    x_ptr,  # (n,) contiguous current states
    grad_ptr,  # (n,) contiguous dE/dx, x's dtype
    out_ptr,  # (n,) out: the proposals, x's dtype
    seed_ptr,  # 0-dim int64: Philox key
    offset_ptr,  # 0-dim int64: counter of element 0
    step_ptr,  # per-chain step sizes, accumulation dtype
    temp_ptr,  # per-chain temperatures, accumulation dtype
    n,  # number of elements
    row,  # elements per chain
    STEP_STRIDE: tl.constexpr,  # 0: one value for every chain; 1: one per chain
    TEMP_STRIDE: tl.constexpr,
    ACC: tl.constexpr,  # accumulation dtype
    BLOCK_C: tl.constexpr,  # counters (4 elements each) per program
):
    c, offs = _counters(tl.program_id(0).to(tl.int64) * BLOCK_C, BLOCK_C)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(ACC)
    g = tl.load(grad_ptr + offs, mask=mask, other=0.0).to(ACC)
    chain = offs // row
    eta = tl.load(step_ptr + chain * STEP_STRIDE, mask=mask, other=0.0).to(tl.float64)
    t = tl.load(temp_ptr + chain * TEMP_STRIDE, mask=mask, other=0.0).to(tl.float64)
    v = x + (-eta).to(ACC) * g
    v = v + tl.sqrt(2.0 * eta * t).to(ACC) * _noise(seed_ptr, offset_ptr, c, ACC)
    tl.store(out_ptr + offs, v.to(out_ptr.dtype.element_ty), mask=mask)


@launcher
def mala_proposal(
    x: torch.Tensor,
    grad: torch.Tensor,
    seed: torch.Tensor,
    offset: torch.Tensor,
    step_size: torch.Tensor,
    temperature: torch.Tensor,
) -> torch.Tensor:
    """The proposals as the C++ op ``thermokern::mala_proposal`` (see its schema): contiguous, x's
    shape and dtype."""
    chains = x.shape[0]
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    step = _chain_param(step_size, chains, acc, "step_size")
    temp = _chain_param(temperature, chains, acc, "temperature")
    out = _empty(x.shape, x.dtype, x.device)
    n = x.numel()
    if n == 0:
        return out
    block_c, warps = _block_c()
    _wrap_triton(_mala_proposal_kernel)[(triton.cdiv((n + 3) // 4, block_c),)](
        x.contiguous(),
        grad.contiguous(),
        out,
        seed,
        offset,
        step,
        temp,
        n,
        n // chains,
        STEP_STRIDE=_stride(step),
        TEMP_STRIDE=_stride(temp),
        ACC=tl.float64 if acc == torch.float64 else tl.float32,
        BLOCK_C=block_c,
        num_warps=warps,
    )
    return out

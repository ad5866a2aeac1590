"""Triton kernel for mala_accept (the fused accept/reject of a MALA step), with its launcher.

A program owns BLOCK_N chains (rows of a contiguous (chains, D) view) and walks their D
elements in (BLOCK_N, BLOCK_D) tiles: the first sweep accumulates, per chain,
``S = sum (2 (x - x') + eta (g' - g)) (g + g')``; then ``log alpha = -((E' - E) + S / 4) / T``,
the chain's uniform (word ``c % 4`` of ``tl.randint4x(seed, offset + ceil(numel / 4) + c // 4)``,
after the proposal's counters) and the decision ``log u <= log alpha``; the second sweep writes
x' or x into x_new. See [Note: MALA acceptance] in csrc/include/thermokern/mala.h; log u is
``-1/2`` times the same ``-2 ln u`` series as the Langevin noise (kernels/langevin.py), so
every backend sees the same uniforms. BLOCK_N is 1 for long chains (one program per chain)
and grows for short ones (2-D toy samples), so that a program still has work for its lanes.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import _empty, _interpreting, _wrap_triton, launcher
from .langevin import _div_rn, _f64_bits, _neg2_log_u, _param


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
    ACC: tl.constexpr,  # accumulation dtype
    BLOCK_N: tl.constexpr,  # chains per program
    BLOCK_D: tl.constexpr,  # elements per chain per tile
):
    c = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    cmask = c < chains
    rows = c[:, None] * D
    cols = tl.arange(0, BLOCK_D)[None, :]
    step = _param(step_bits, ACC)
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
    la = -_div_rn((ep - e) + 0.25 * total, tl.zeros_like(total) + _param(temp_bits, ACC), ACC)
    w0, w1, w2, w3 = tl.randint4x(tl.load(seed_ptr), tl.load(offset_ptr) + prop_counters + c // 4)
    j = c % 4
    w = tl.where(j == 0, w0, tl.where(j == 1, w1, tl.where(j == 2, w2, w3)))
    log_u = -0.5 * _neg2_log_u((w >> 8) + 1, ACC)
    ok = log_u <= la  # a NaN log alpha rejects
    tl.store(log_alpha_ptr + c, la, mask=cmask)
    tl.store(accepted_ptr + c, ok, mask=cmask)
    for d0 in range(0, D, BLOCK_D):
        m = cmask[:, None] & (d0 + cols < D)
        offs = rows + d0 + cols
        x = tl.load(x_ptr + offs, mask=m, other=0.0)
        xp = tl.load(xp_ptr + offs, mask=m, other=0.0)
        tl.store(out_ptr + offs, tl.where(ok[:, None], xp, x), mask=m)


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
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_new, accepted, log_alpha) as the C++ op ``thermokern::mala_accept`` (see its schema).

    ``x``, ``x_prop``, ``grad``, ``grad_prop``: one shape (dim 0: chains) and dtype;
    ``energy``/``energy_prop``: (chains,) in the accumulation dtype; ``seed``/``offset``: 0-dim
    int64 tensors on x's device.
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
        ACC=tl.float64 if acc == torch.float64 else tl.float32,
        BLOCK_N=block_n,
        BLOCK_D=block_d,
        num_warps=warps,
    )
    return x_new, accepted, log_alpha

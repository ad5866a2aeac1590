"""Triton kernel for sgld_step_ (thermokern.optim.SGLD), with its launcher.

[Note: the SGLD Triton launch]
One launch updates every tensor of a call, all of one dtype. The launcher packs a table with
one int64 row per non-empty tensor,
    (param address, grad address, numel, counter_start, first program),
and each tensor owns ceil(ceil(numel / 4) / BLOCK_C) consecutive programs, so no program
straddles two tensors. A program finds its row by a binary search over the first-program
column (``search_steps`` = ceil(log2(rows)) halvings of scalar loads), turns the addresses into
typed pointers with ``.to(tl.pointer_type(DTYPE))``, and then does langevin_step's work on its
BLOCK_C counters (4 elements each): the same noise functions (kernels/langevin.py, i.e.
[Note: Langevin noise layout] in csrc/include/thermokern/philox.h) at counter offset +
counter_start + c, and the same operation order, plus the weight decay:
    g' = grad + lambda * param (HAS_WD),  param = param - eta g' + sigma n.
The kernel writes through addresses that are not kernel arguments, so it is called from an
opaque ``torch.library.custom_op`` (src/thermokern/ops/sgld.py) that declares the mutation,
not from a ``triton_op``, whose tracing would not see the writes.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import _interpreting, launcher
from .langevin import _counters, _f64_bits, _noise, _param

_TL_DTYPES = {
    torch.float32: tl.float32,
    torch.float64: tl.float64,
    torch.float16: tl.float16,
    torch.bfloat16: tl.bfloat16,
}


@triton.jit
def _sgld_step_kernel(
    table_ptr,  # (rows, 5) int64: param address, grad address, numel, counter_start, first program
    n_rows,  # number of table rows
    search_steps,  # ceil(log2(n_rows)): halvings of the binary search
    seed_ptr,  # 0-dim int64: Philox key
    offset_ptr,  # 0-dim int64: base counter of the step
    lr_bits,  # lr as float64 bits (int64)
    sigma_bits,  # noise_std as float64 bits
    wd_bits,  # weight_decay as float64 bits (HAS_WD)
    DTYPE: tl.constexpr,  # element type of every param and grad
    HAS_NOISE: tl.constexpr,  # noise_std != 0
    HAS_WD: tl.constexpr,  # weight_decay != 0
    ACC: tl.constexpr,  # accumulation dtype (float32, or float64 for float64 params)
    BLOCK_C: tl.constexpr,  # counters (4 elements each) per program
):
    pid = tl.program_id(0).to(tl.int64)
    # The row of this program: table[lo].first <= pid < table[hi].first (hi = n_rows: the end).
    lo = pid * 0
    hi = lo + n_rows
    for _ in range(search_steps):
        mid = (lo + hi) // 2
        go = tl.load(table_ptr + mid * 5 + 4) <= pid
        lo = tl.where(go, mid, lo)
        hi = tl.where(go, hi, mid)
    row = table_ptr + lo * 5
    p_ptr = tl.load(row).to(tl.pointer_type(DTYPE))
    g_ptr = tl.load(row + 1).to(tl.pointer_type(DTYPE))
    n = tl.load(row + 2)
    start = tl.load(row + 3)
    first = tl.load(row + 4)
    c, offs = _counters((pid - first) * BLOCK_C, BLOCK_C)
    mask = offs < n
    x = tl.load(p_ptr + offs, mask=mask, other=0.0).to(ACC)
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(ACC)
    if HAS_WD:
        g = g + _param(wd_bits, ACC) * x
    v = x + -_param(lr_bits, ACC) * g
    if HAS_NOISE:
        v = v + _param(sigma_bits, ACC) * _noise(seed_ptr, offset_ptr, start + c, ACC)
    tl.store(p_ptr + offs, v.to(DTYPE), mask=mask)


def _block_c(max_counters: int) -> tuple[int, int]:
    if _interpreting():
        # numpy per program: one program per small tensor, as large as the largest needs
        return min(4096, max(16, triton.next_power_of_2(max_counters))), 4
    return 256, 4


@launcher
def sgld_step_(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    seed: torch.Tensor,
    offset: torch.Tensor,
    counter_starts: list[int],
    lr: float,
    noise_std: float,
    weight_decay: float,
) -> None:
    """One SGLD step over ``params`` (one dtype and device) in one launch; see the module note.

    Non-contiguous params are updated through contiguous copies that are written back;
    non-contiguous grads are read through contiguous copies.
    """
    rows: list[list[int]] = []
    keep: list[torch.Tensor] = []  # alive until the launch is queued
    write_back: list[tuple[torch.Tensor, torch.Tensor]] = []
    counters = []
    for p, g, start in zip(params, grads, counter_starts, strict=True):
        numel = p.numel()
        if numel == 0:
            continue
        pc = p
        if not p.is_contiguous():
            pc = p.contiguous()
            write_back.append((p, pc))
        gc = pc if g is p else g.contiguous()
        keep += (pc, gc)
        rows.append([pc.data_ptr(), gc.data_ptr(), numel, int(start), 0])
        counters.append((numel + 3) // 4)
    if not rows:
        return
    block_c, warps = _block_c(max(counters))
    programs = 0
    for r, nc in zip(rows, counters, strict=True):
        r[4] = programs
        programs += triton.cdiv(nc, block_c)
    device = params[0].device
    table = torch.tensor(rows, dtype=torch.int64)
    if device.type != "cpu":
        table = table.pin_memory().to(device, non_blocking=True)
    dtype = params[0].dtype
    _sgld_step_kernel[(programs,)](
        table,
        len(rows),
        (len(rows) - 1).bit_length(),  # ceil(log2(rows))
        seed,
        offset,
        _f64_bits(lr),
        _f64_bits(noise_std),
        _f64_bits(weight_decay),
        DTYPE=_TL_DTYPES[dtype],
        HAS_NOISE=noise_std != 0.0,
        HAS_WD=weight_decay != 0.0,
        ACC=tl.float64 if dtype == torch.float64 else tl.float32,
        BLOCK_C=block_c,
        num_warps=warps,
    )
    for p, pc in write_back:
        p.copy_(pc)

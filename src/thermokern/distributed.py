"""Vocabulary-parallel entropy, cross-entropy and logsumexp over ``torch.distributed``, and the
tensor-parallel LM heads built on them.

Every rank of a process group holds a contiguous slice (a *shard*) of the last, vocabulary,
dimension of one logical ``(..., C)`` tensor, ranks in order; shard widths may differ and may
be 0. The results equal the single-device ops on the concatenated tensor and are replicated
on every rank; the gradient autograd gives each rank is the local slice of the single-device
gradient. :func:`linear_cross_entropy` and :func:`linear_token_logprobs` take the hidden
states and each rank's rows of the output layer instead of logits (see [Note: tensor-parallel
heads]).

Also :func:`gather_samples`, the all-gather (uneven batch sizes) of sharded sampling's samples:
see :mod:`thermokern.sampling` for the per-rank noise streams.

[Note: distributed statistics]
Forward: each rank runs the single-device kernel on its shard for per-row statistics (a few
numbers per row in the accumulation dtype: float32, float64 for float64 input), packs them
into one ``(k, N)`` tensor and all-gathers it: one collective of ``k * N * world`` numbers per
call, never anything of size N x C. Every rank then merges the ``world`` sets in float64 the
way csrc/include/thermokern/row_stats.h merges two chunks of a row (the n-way form of
``row_stats_merge``: rescale each part by ``e^{k (m_r - M)}`` with M the largest shift; parts
with shift -inf contribute nothing; NaN, or +inf in the softmax ops, makes the row NaN):

    op                      k  statistics per row and rank
    softmax_entropy         3  shift m_r, log_norm log d_r, entropy H_r (softmax_entropy_fwd)
    logsumexp               2  shift m_r, sum_j e^{x_j - m_r}             (partition_fwd)
    cross-entropy           4  m_r, log d_r, H_r, the target logit (0 on ranks without it)
      + label smoothing     5  ... and sum_j (x_j - m_r) (one more read of the shard)
    token_logprobs          4  the cross-entropy's (log p = -CE; the merged H is its entropy)

The cross-entropy also needs the shard layout (where the target column lives, and C for the
smoothing term). With ``vocab_start`` given, every rank's (vocab_start, width) travels in one
extra column of the same collective; with ``vocab_start=None`` one small all_gather of the
layout (two int64 per rank) comes first, so that call makes two collectives. The layout is
then read on the host (one synchronisation on CUDA, as the single-device op's target check).

Backward: no communication. The outputs are replicated, so the upstream gradient is the same
on every rank, and the gradient w.r.t. the local shard is a function of the local logits, the
merged per-row statistics saved in forward and that gradient only: the existing backward
kernels run on the shard with the global statistics in place of the local ones
(``softmax_entropy_bwd(g, shard, 1/T, H, M, log D)`` *is* the local slice of the global
gradient). This assumes the upstream gradient really is replicated (every rank computes the
same loss from the outputs); a rank-dependent downstream loss needs its gradient all-reduced
before it reaches these ops.

Not checked (it would cost another collective): every rank must pass the same leading shape,
target, temperature and keyword arguments, in the same order of calls. Row counts that differ
between ranks make the all_gather fail on gloo and may hang or corrupt results on NCCL.

[Note: tensor-parallel heads]
``linear_cross_entropy`` / ``linear_token_logprobs`` take ``hidden`` (N, D), the same on every
rank, and this rank's rows W_r (V_r, D) (and b_r) of the output layer (Megatron's
vocabulary-parallel layout). First one all_gather of every rank's (vocab_start or -1, V_r)
(int64): the layout, checked as above, against which the targets are checked on every rank.
Then ops/linear.py's chunk sweep (``head_chunks``) over the tokens, cut alike on every rank
(sized for the widest shard, so that no rank holds more than one chunk of its logits): per
chunk, the local logits h W_r^T + b_r, their cross-entropy statistics (the 4 or 5 numbers per
row above; the log-probs are -CE without smoothing, and their entropy is the merged H), one
all_gather of those and the float64 merge. So a forward makes 1 + (number of chunks)
collectives, each of k x rows x world numbers.

Gradients: a chunk's local logit gradient is the cross-entropy backward on the shard with the
merged statistics (no communication, as above). It gives this rank's rows of the weight and
bias gradients (``HeadGrads``: fp32 sums) and this rank's part g_r W_r of the gradient w.r.t.
``hidden``; the full one is the sum of the parts: one all_reduce over the group in the
backward (in fp32 for 16-bit hidden), and one more of N numbers for a temperature that
requires grad (dL/dT is a sum over the vocabulary). As on one device, a "mean" or "sum" loss
computes the gradients in the forward while each chunk is at hand; "none" and the log-probs
save the merged statistics (3 numbers per token) and recompute each chunk's logits in the
backward. The all_reduce is a collective: every rank must agree on whether ``hidden`` (and the
temperature) require grad, and run the backward.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch.autograd.function import once_differentiable

from thermokern import _backend
from thermokern._checks import (
    check_cross_entropy_args,
    check_float_tensor,
    check_int,
    check_target,
    check_target_values,
    check_temperature,
    inverse_temperature,
)
from thermokern._dtypes import FLOAT_DTYPES, acc_dtype
from thermokern.ops.cross_entropy import cross_entropy_bwd, reduce_loss
from thermokern.ops.linear import (
    HeadGrads,
    as_logits_view,
    check_head,
    head_chunks,
    head_inputs,
    ignore_index_of,
    logit_grad,
)
from thermokern.ops.partition import partition_bwd, partition_fwd
from thermokern.ops.softmax_entropy import softmax_entropy_bwd, softmax_entropy_fwd
from thermokern.ops.token_logprobs import token_logprobs_bwd

__all__ = [
    "entropy_regularized_cross_entropy",
    "gather_samples",
    "linear_cross_entropy",
    "linear_token_logprobs",
    "logsumexp",
    "softmax_entropy",
    "token_logprobs",
]
_INF = math.inf
# Integers (shard starts and widths) travel in float statistics as two base-2^20 digits, each
# exact in float32: any value below 2^44.
_DIGIT = 1 << 20


# ----------------------------------------------------------------------------- group and layout
def group_rank_world(group) -> tuple[int, int]:
    """This process's rank in ``group`` and the group's size; errors name ``group``. Shared
    with thermokern.sampling (per-rank noise streams)."""
    if not dist.is_available():
        raise RuntimeError("group: torch.distributed is not available in this build of PyTorch")
    if not dist.is_initialized():
        raise RuntimeError(
            "group: the default process group is not initialised; call "
            "torch.distributed.init_process_group(...) first"
        )
    rank = dist.get_rank(group)
    world = dist.get_world_size(group)
    if rank < 0 or world < 1:
        raise ValueError(f"group: this process (global rank {dist.get_rank()}) is not a member of the group")
    return rank, world


def _all_gather(local: torch.Tensor, group, world: int) -> torch.Tensor:
    """All ranks' ``local`` (same shape everywhere) stacked along a new dim 0, in rank order."""
    local = local.contiguous()
    out = local.new_empty((world * local.shape[0],) + tuple(local.shape[1:]))
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    gather(out, local, group=group)  # the concatenation form: gloo and NCCL both take it
    return out.view((world,) + tuple(local.shape))


def _rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Size]:
    """``x`` as (rows, width) with unit stride along the width (also for width 0)."""
    out_shape = x.shape[:-1]
    rows = x.reshape(math.prod(out_shape), x.shape[-1])
    if rows.shape[1] > 1 and rows.stride(1) != 1:
        rows = rows.contiguous()
    return rows, out_shape


def _split_int(v: int) -> tuple[int, int]:
    return v // _DIGIT, v % _DIGIT


def _check_layout(starts: list[int], widths: list[int], what: str = "logits_shard") -> int:
    """The total width C, after checking that the shards tile [0, C) exactly."""
    end = 0
    for start, width, rank in sorted((s, w, r) for r, (s, w) in enumerate(zip(starts, widths))):
        if start != end:
            raise ValueError(
                f"vocab_start: the shards do not tile the vocabulary: rank {rank} starts at {start} "
                f"where the shards before it end at {end} (starts {starts}, widths {widths})"
            )
        end += width
    if end == 0:
        raise ValueError(f"{what}: the vocabulary (the sum of the shard widths) is empty")
    return end


def _check_vocab_start(vocab_start) -> int | None:
    if vocab_start is None:
        return None
    if isinstance(vocab_start, bool) or not isinstance(vocab_start, numbers.Integral):
        raise TypeError(f"vocab_start: expected an int or None, got {type(vocab_start).__name__}")
    vocab_start = int(vocab_start)
    if not 0 <= vocab_start < 2**44:
        raise ValueError(f"vocab_start: expected a value >= 0, got {vocab_start}")
    return vocab_start


def _gather_layout(width: int, vocab_start: int | None, group, world: int, rank: int, device, what: str):
    """(this shard's start, every rank's width, C) from one all_gather of each rank's
    (vocab_start or -1, width) as int64; checked as :func:`_check_layout` does."""
    local = torch.tensor(
        [-1 if vocab_start is None else vocab_start, width], dtype=torch.int64, device=device
    )
    layout = _all_gather(local, group, world).tolist()
    widths = [w for _, w in layout]
    if vocab_start is None:
        starts = [sum(widths[:r]) for r in range(world)]
    else:
        starts = [s for s, _ in layout]
    return starts[rank], widths, _check_layout(starts, widths, what)


# ----------------------------------------------------------------------------- merges (float64)
def _merge_softmax(m: torch.Tensor, log_d: torch.Tensor, h: torch.Tensor, k: torch.Tensor):
    """Merge (R, N) per-rank softmax statistics into per-row (M, log D, H).

    The n-way ``row_stats_merge``: with M = max_r m_r and delta_r = k (m_r - M) <= 0,
    D = sum_r d_r e^{delta_r} and S = sum_r (s_r + delta_r d_r) e^{delta_r}, where s_r / d_r =
    log d_r - H_r (row_stats.h: H = log d - s / d); then H = log D - S / D. Parts with
    m_r = -inf (all -inf, or an empty shard) contribute nothing; an all-empty row gives
    (-inf, -inf, NaN) like the single-device kernel; NaN or +inf in any part gives NaN.
    """
    big = m.amax(dim=0)  # NaN wins, as in row_stats_merge
    empty = m == -_INF
    delta = (m - big) * k
    zero = torch.zeros_like(delta)
    w = torch.where(empty, zero, torch.exp(delta + log_d))  # d_r e^{delta_r}
    y_mean = torch.where(empty, zero, log_d - h + delta)  # (s_r / d_r + delta_r)
    d = w.sum(dim=0)
    log_dd = torch.log(d)
    entropy = log_dd - (w * y_mean).sum(dim=0) / d
    return big, log_dd, entropy


def _merge_lse(m: torch.Tensor, total: torch.Tensor):
    """Merge (R, N) per-rank (shift, sum e^{x - shift}) of partition_fwd into per-row
    (lse, shift, log_norm) for the value and for partition_bwd.

    torch.logsumexp's edge cases: NaN anywhere gives NaN; else +inf anywhere gives +inf (the
    backward shift +inf then makes the gradient NaN at the +inf entries and 0 elsewhere, as
    on one device); an all -inf (or empty) row gives -inf, and (shift 0, log_norm +inf) so
    that its gradient is 0.
    """
    big = m.amax(dim=0)
    finite = torch.isfinite(big)
    inf_row = big == _INF
    ref = torch.where(finite, big, torch.zeros_like(big))
    w = torch.where(m == -_INF, torch.zeros_like(total), total * torch.exp(m - ref))
    inf_count = torch.where(m == _INF, total, torch.zeros_like(total)).sum(dim=0)
    d = torch.where(inf_row, inf_count, w.sum(dim=0))
    log_d = torch.log(d)
    lse = torch.where(finite, ref + log_d, big)  # -inf, +inf and NaN rows: the shift itself
    empty = big == -_INF
    shift_b = torch.where(empty, torch.zeros_like(big), big)
    log_norm_b = torch.where(empty, torch.full_like(log_d, _INF), log_d)
    return lse, shift_b, log_norm_b


# ----------------------------------------------------------------------------- local statistics
def _softmax_stats(rows: torch.Tensor, inv_t: torch.Tensor, name: str):
    """(entropy, shift, log_norm) of each row of the shard, in the accumulation dtype."""
    n, c = rows.shape
    if c == 0:  # an empty shard: nothing to merge (the kernels need C >= 1)
        full = rows.new_full((n,), -_INF, dtype=acc_dtype(rows.dtype))
        return torch.full_like(full, math.nan), full, full.clone()
    return softmax_entropy_fwd(name, rows, inv_t)


# ----------------------------------------------------------------------------- softmax_entropy
class _DistSoftmaxEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rows, inv_t, group, world, name):
        entropy, shift, log_norm = _softmax_stats(rows, inv_t, name)
        stats = _all_gather(torch.stack([shift, log_norm, entropy]), group, world).double()
        big, log_d, h = _merge_softmax(stats[:, 0], stats[:, 1], stats[:, 2], inv_t.double())
        acc = entropy.dtype
        h, big, log_d = h.to(acc), big.to(acc), log_d.to(acc)
        ctx.save_for_backward(rows, inv_t, h, big, log_d)
        ctx.name = name
        return h

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        rows, inv_t, h, big, log_d = ctx.saved_tensors
        if rows.shape[1] == 0:
            return torch.zeros_like(rows), None, None, None, None
        g = grad.to(h.dtype).contiguous()
        return softmax_entropy_bwd(ctx.name, g, rows, inv_t, h, big, log_d), None, None, None, None


def softmax_entropy(
    logits_shard: torch.Tensor,
    *,
    group: dist.ProcessGroup | None = None,
    temperature: float | torch.Tensor = 1.0,
    backend: str = "auto",
) -> torch.Tensor:
    """Entropy of ``softmax(logits / T)`` over a vocabulary split across ranks.

    Equals :func:`thermokern.softmax_entropy` (``dim=-1``) on the concatenation of every
    rank's ``logits_shard`` along the last dimension, in rank order; replicated on every rank.
    One all_gather of 3 numbers per row and rank (shift, log-normaliser, entropy of the
    shard); the backward needs no communication (see [Note: distributed statistics]).

    Args:
        logits_shard: this rank's ``(..., C_rank)`` slice of the logits (float32, float64,
            float16 or bfloat16; C_rank may differ between ranks and may be 0). The leading
            shape must be the same on every rank (not checked).
        group: the process group across which the vocabulary is split (None: the default).
        temperature: a finite float > 0, or a tensor broadcastable to the output shape
            (per-row T), the same on every rank.
        backend: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"triton"`` or ``"reference"`` for the
            per-shard kernels.

    Returns:
        The entropy, shaped like ``logits_shard`` without its last dimension, in its dtype.

    Raises:
        RuntimeError: no process group is initialised (the message names ``group``).
        TypeError / ValueError: bad arguments, each naming the argument, as the
            single-device op; an empty vocabulary on every rank gives NaN, not an error.
    """
    check_float_tensor(logits_shard, "logits_shard")
    if logits_shard.dim() == 0:
        raise ValueError("logits_shard: expected at least 1 dimension (vocabulary last), got a 0-d tensor")
    temperature = check_temperature(temperature)
    _, world = group_rank_world(group)
    name = _backend.resolve_backend(backend, logits_shard)
    rows, out_shape = _rows(logits_shard)
    inv_t = inverse_temperature(temperature, out_shape, logits_shard.dtype, logits_shard.device)
    h = _DistSoftmaxEntropy.apply(rows, inv_t, group, world, name)
    return h.to(logits_shard.dtype).reshape(out_shape)


# ----------------------------------------------------------------------------- logsumexp
def _lse_stats(x3: torch.Tensor, name: str):
    """(shift, sum e^{x - shift}) per row of the (N, C_rank, 1) shard (partition_fwd's contract)."""
    acc = acc_dtype(x3.dtype)
    n, c = x3.shape[0], x3.shape[1]
    if c == 0:
        return x3.new_full((n,), -_INF, dtype=acc), x3.new_zeros((n,), dtype=acc)
    scale = torch.ones((1,), dtype=acc, device=x3.device)
    shift, total, _, _ = partition_fwd(name, x3, None, None, scale, False, 0)
    return shift, total


class _DistLogsumexp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rows, group, world, name):
        x3 = rows.contiguous().view(rows.shape[0], rows.shape[1], 1)
        shift, total = _lse_stats(x3, name)
        stats = _all_gather(torch.stack([shift, total]), group, world).double()
        lse, shift_b, log_norm_b = _merge_lse(stats[:, 0], stats[:, 1])
        acc = shift.dtype
        ctx.save_for_backward(x3, shift_b.to(acc), log_norm_b.to(acc))
        ctx.name = name
        return lse.to(acc)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x3, shift, log_norm = ctx.saved_tensors
        n, c = x3.shape[0], x3.shape[1]
        if c == 0:
            return x3.new_zeros((n, 0)), None, None, None
        g = grad.to(shift.dtype)
        # partition_bwd with one coefficient per row: d lse / d x_j = p_j (k = 1, no weight).
        coef = g.reshape(n, 1).contiguous()
        scale = torch.ones((1,), dtype=shift.dtype, device=x3.device)
        gx, _ = partition_bwd(ctx.name, x3, None, None, scale, False, shift, log_norm, coef, False)
        return gx.view(n, c), None, None, None


def logsumexp(
    input_shard: torch.Tensor,
    *,
    group: dist.ProcessGroup | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """``log sum_j exp(x_j)`` over a last dimension split across ranks.

    Equals ``torch.logsumexp(full, -1)`` (and :func:`thermokern.logsumexp`) on the
    concatenation of every rank's ``input_shard`` in rank order, with its -inf / +inf / NaN
    semantics; replicated on every rank. One all_gather of 2 numbers per row and rank
    (the shard's shift and sum e^{x - shift}); no communication in the backward. The
    gradient of an all -inf row is 0, not NaN.

    Args:
        input_shard: this rank's ``(..., C_rank)`` slice (integer and bool inputs are promoted
            to the default float dtype; C_rank may be 0). The leading shape must be the same
            on every rank (not checked).
        group: the process group across which the last dimension is split (None: the default).
        backend: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"triton"`` or ``"reference"``.

    Returns:
        The result shaped like ``input_shard`` without its last dimension, in its dtype.

    Raises:
        RuntimeError: no process group is initialised; TypeError: non-tensor or complex input.
    """
    if not isinstance(input_shard, torch.Tensor):
        raise TypeError(f"input_shard: expected a torch.Tensor, got {type(input_shard).__name__}")
    if input_shard.is_complex():
        raise TypeError(f"input_shard: complex tensors are not supported, got {input_shard.dtype}")
    if input_shard.dim() == 0:
        raise ValueError("input_shard: expected at least 1 dimension (the split one last), got a 0-d tensor")
    x = input_shard if input_shard.dtype in FLOAT_DTYPES else input_shard.to(torch.get_default_dtype())
    _, world = group_rank_world(group)
    name = _backend.resolve_backend(backend, x)
    rows, out_shape = _rows(x)
    lse = _DistLogsumexp.apply(rows, group, world, name)
    return lse.to(x.dtype).reshape(out_shape)


# ----------------------------------------------------------------------------- cross-entropy
def _ce_fields(rows, tgt, inv_t, start: int, eps: float, ignore_index: int, name: str) -> torch.Tensor:
    """This shard's per-row cross-entropy statistics, (4, N) (5 with label smoothing) in the
    accumulation dtype: shift, log_norm, entropy, the target logit where this shard holds the
    target (else 0) and, with smoothing, sum_j (x_j - shift)."""
    width = rows.shape[1]
    entropy, shift, log_norm = _softmax_stats(rows, inv_t, name)
    acc = entropy.dtype
    valid = tgt != ignore_index
    owned = valid & (tgt >= start) & (tgt < start + width)
    local = torch.where(owned, tgt - start, torch.zeros_like(tgt))
    if width > 0:
        x_y = rows.gather(1, local.unsqueeze(1)).squeeze(1).to(acc)
        x_y = torch.where(owned, x_y, torch.zeros_like(x_y))
    else:
        x_y = torch.zeros_like(entropy)
    fields = [shift, log_norm, entropy, x_y]
    if eps > 0.0:
        # sum_j (x_j - ref), ref the shard's (finite) shift, accumulated in float64: a
        # difference-sized number that float32 carries without the rounding a plain
        # sum_j x_j of large logits would suffer (one more read of the shard).
        ref = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift)).double()
        diff = rows.sum(dim=1, dtype=torch.float64) - width * ref
        fields.append(diff.to(acc))
    return torch.stack(fields)


def _ce_merge(stats, tgt, inv_t, widths: list[int], total: int, params):
    """Every rank's :func:`_ce_fields`, (R, k, N) in float64, merged into the per-row loss and
    the global (H, M, log D), all float64. Ignored rows give 0; a target outside [0, C) that
    got past the value check (see check_target_values) gives NaN."""
    beta, eps, ignore_index, zw = params
    k = inv_t.double()
    big, log_d, h = _merge_softmax(stats[:, 0], stats[:, 1], stats[:, 2], k)
    x_y = stats[:, 3].sum(dim=0)  # only the owner contributes
    gap = (1.0 - eps) * (big - x_y)  # CE = log D + k (M - (1 - eps) x_y - eps mean x)
    if eps > 0.0:
        ref = torch.where(torch.isfinite(stats[:, 0]), stats[:, 0], torch.zeros_like(stats[:, 0]))
        w = torch.tensor(widths, dtype=torch.float64, device=stats.device).unsqueeze(1)
        mean_minus_big = (stats[:, 4] + w * (ref - big)).sum(dim=0) / total
        gap = gap - eps * mean_minus_big
    lse = big * k + log_d
    loss = log_d + k * gap
    if beta != 0.0:
        loss = loss - beta * h
    if zw != 0.0:
        loss = loss + zw * lse * lse
    valid = tgt != ignore_index
    bad = valid & ((tgt < 0) | (tgt >= total))  # only where the value check was skipped
    loss = torch.where(valid, loss, torch.zeros_like(loss))
    loss = torch.where(bad, torch.full_like(loss, math.nan), loss)
    return loss, h, big, log_d


def _shard_grad(
    name, g, g_entropy, rows, tgt, inv_t, h, big, log_d, layout, params, logprobs=False, in_place=False
):
    """The gradient w.r.t. the shard ``rows`` (N, C_rank): the local slice of the gradient of
    the full-vocabulary loss, from the merged statistics (h, big, log_d: accumulation dtype)
    and no communication; with ``in_place`` (the heads' chunks), written over ``rows``.

    Cross-entropy (``logprobs=False``): ``g`` is the upstream gradient of each row's loss,
    ``params`` (beta, eps, ignore_index, zw), ``g_entropy`` None. Log-probs: ``g`` and
    ``g_entropy`` (or None) are those of logp and of the entropy, ``params`` (ignore_index,).
    """
    start, width, total = layout
    if width == 0:
        return torch.zeros_like(rows)
    if logprobs:
        beta, eps, ignore_index, zw = 0.0, 0.0, params[0], 0.0
    else:
        beta, eps, ignore_index, zw = params
    g = g.to(h.dtype).contiguous()
    valid = tgt != ignore_index
    bad = valid & ((tgt < 0) | (tgt >= total))
    owned = valid & (tgt >= start) & (tgt < start + width)
    live = valid & ~bad
    # [Note: cross-entropy backward on a shard]
    # dL/dx_j = g k [p_j (1 + beta H + 2 zw lse) + beta p_j log p_j - eps / C - (1 - eps) [j = y]]
    # with p, H, lse global. The fused cross_entropy_bwd kernel computes exactly this on the
    # shard from the global statistics, except for two things it takes from the shard:
    # its smoothing term is eps' / C_rank (so eps' = eps C_rank / C gives eps / C), and it
    # puts the one-hot term -(1 - eps') at its target column on every live row. So it gets
    # the local target column where this rank owns the target and column 0 otherwise
    # (ignored rows: -1 = its ignore_index, a zero row; out-of-range targets: width, a NaN
    # row), and afterwards that one element per row is overwritten with the exact value,
    # computed in float64 by cheap O(N) torch code (no cancellation for 16-bit gradients,
    # which adding a correction to the rounded kernel value would suffer). The log-probs
    # (token_logprobs_bwd: k [g_l ([j = y] - p_j) - g_H p_j (log p_j + H)]) are the same with
    # g = -g_l, beta = eps = zw = 0, plus the entropy term.
    col = torch.where(owned, tgt - start, torch.zeros_like(tgt))
    kernel_tgt = torch.where(live, col, torch.full_like(col, -1))
    kernel_tgt = torch.where(bad, torch.full_like(col, width), kernel_tgt)
    x_t = rows.gather(1, col.unsqueeze(1)).squeeze(1).double()  # before an in-place kernel
    if logprobs:
        g_ent = None if g_entropy is None else g_entropy.to(h.dtype).contiguous()
        args = (g, g_ent, rows, kernel_tgt, inv_t, h, big, log_d, -1)
        gx = logit_grad(token_logprobs_bwd, in_place, name, rows, args)
        g = -g
    else:
        eps_local = eps * width / total
        args = (g, rows, kernel_tgt, inv_t, h, big, log_d, beta, eps_local, -1, zw)
        gx = logit_grad(cross_entropy_bwd, in_place, name, rows, args)
    k = inv_t.double()
    big64, log_d64, h64 = big.double(), log_d.double(), h.double()
    log_p = (x_t - big64) * k - log_d64
    p = torch.exp(log_p)
    p_log_p = torch.where(p == 0, torch.zeros_like(p), p * log_p)
    lse = big64 * k + log_d64
    gk = g.double() * k
    exact = gk * (p * (1.0 + beta * h64 + 2.0 * zw * lse) + beta * p_log_p - eps / total)
    exact = exact - torch.where(owned, gk * (1.0 - eps), torch.zeros_like(gk))
    if logprobs and g_entropy is not None:
        exact = exact - g_entropy.double() * k * (p_log_p + p * h64)
    current = gx.gather(1, col.unsqueeze(1)).squeeze(1)
    value = torch.where(live, exact.to(gx.dtype), current)
    gx.scatter_(1, col.unsqueeze(1), value.unsqueeze(1))
    return gx


class _DistEntropyCE(torch.autograd.Function):
    """The distributed cross-entropy per row and the merged entropy H, from one all_gather.
    ``logprobs=True`` (params (0, 0, ignore_index, 0)): the outputs are log p of the target
    (= -CE) and H, both differentiable; else the loss (H is returned without a gradient)."""

    @staticmethod
    def forward(ctx, rows, tgt, inv_t, group, world, rank, vocab_start, params, name, logprobs):
        eps, ignore_index = params[1], params[2]
        n, width = rows.shape
        dev = rows.device
        if vocab_start is None:  # one small collective for the layout (see the Note)
            start, widths, total = _gather_layout(width, None, group, world, rank, dev, "logits_shard")
        else:
            start = vocab_start
        local_stats = _ce_fields(rows, tgt, inv_t, start, eps, ignore_index, name)
        acc = local_stats.dtype
        if vocab_start is not None:  # the layout rides in one extra column
            layout = torch.zeros((local_stats.shape[0], 1), dtype=acc, device=dev)
            layout[:4, 0] = torch.tensor([*_split_int(start), *_split_int(width)], dtype=acc)
            local_stats = torch.cat([local_stats, layout], dim=1)
        stats = _all_gather(local_stats, group, world).double()
        if vocab_start is not None:
            digits = [[int(v) for v in row] for row in stats[:, :4, n].tolist()]
            starts = [hi * _DIGIT + lo for hi, lo, _, _ in digits]
            widths = [hi * _DIGIT + lo for _, _, hi, lo in digits]
            total = _check_layout(starts, widths)
            stats = stats[:, :, :n]
        check_target_values(tgt, total, ignore_index)  # the same error on every rank
        loss, h, big, log_d = _ce_merge(stats, tgt, inv_t, widths, total, params)
        h, big, log_d = h.to(acc), big.to(acc), log_d.to(acc)
        ctx.save_for_backward(rows, tgt, inv_t, h, big, log_d)
        ctx.layout = (start, width, total)
        ctx.params = (ignore_index,) if logprobs else params
        ctx.name, ctx.logprobs = name, logprobs
        ctx.set_materialize_grads(False)
        h_out = torch.where(tgt != ignore_index, h, torch.zeros_like(h))
        if not logprobs:
            ctx.mark_non_differentiable(h_out)
        out = -loss if logprobs else loss
        return out.to(acc), h_out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad, grad_h):
        rows, tgt, inv_t, h, big, log_d = ctx.saved_tensors
        if grad is None:  # (only H was used)
            grad = torch.zeros_like(h)
        gx = _shard_grad(
            ctx.name, grad, grad_h if ctx.logprobs else None, rows, tgt, inv_t, h, big, log_d,
            ctx.layout, ctx.params, logprobs=ctx.logprobs,
        )  # fmt: skip
        return (gx, *(None,) * 9)


def entropy_regularized_cross_entropy(
    logits_shard: torch.Tensor,
    target: torch.Tensor,
    *,
    group: dist.ProcessGroup | None = None,
    vocab_start: int | None = None,
    entropy_weight: float = 0.0,
    temperature: float | torch.Tensor = 1.0,
    label_smoothing: float = 0.0,
    ignore_index: int = -100,
    reduction: str = "mean",
    z_loss_weight: float = 0.0,
    backend: str = "auto",
) -> torch.Tensor:
    """Vocabulary-parallel :func:`thermokern.entropy_regularized_cross_entropy`.

    Per row, with z = logits / T over the full vocabulary (split across ranks)::

        loss = CE(z, target; label_smoothing) - entropy_weight * H(softmax(z))
               + z_loss_weight * logsumexp(z)**2

    equal to the single-device op on the concatenation of every rank's ``logits_shard``;
    replicated on every rank. The gradient w.r.t. ``logits_shard`` is the local slice of the
    single-device gradient, computed without communication. Forward: one all_gather of 4
    numbers per row and rank (5 with label smoothing), plus one all_gather of the shard
    widths when ``vocab_start`` is None (see [Note: distributed statistics]).

    Args:
        logits_shard: this rank's ``(..., C_rank)`` slice of the logits (C_rank may differ
            between ranks and may be 0); the leading shape must be the same on every rank.
        target: global class indices in [0, C) (or ``ignore_index``), shaped like
            ``logits_shard`` without its last dimension, the same on every rank.
        group: the process group across which the vocabulary is split (None: the default).
        vocab_start: the global index of this shard's first column. None: the sum of the
            lower ranks' shard widths (ranks in order; costs one extra small collective).
            Given, the shards may be in any order but must tile [0, C) (checked).
        entropy_weight, temperature, label_smoothing, ignore_index, reduction, z_loss_weight:
            as in :func:`thermokern.entropy_regularized_cross_entropy`.
        backend: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"triton"`` or ``"reference"``.

    Returns:
        The loss in float32 (float64 for float64 logits).

    Raises:
        RuntimeError: no process group is initialised (the message names ``group``).
        TypeError / ValueError: bad arguments, each naming the argument: target shape or
            dtype, a target outside [0, C) that is not ``ignore_index`` (checked on the host
            after the collective, so every rank raises), ``vocab_start`` negative or shards
            that do not tile the vocabulary.
    """
    entropy_weight, label_smoothing, ignore_index, z_loss_weight = check_cross_entropy_args(
        logits_shard, target, entropy_weight, label_smoothing, ignore_index, reduction, z_loss_weight,
        name="logits_shard", classes="vocabulary last", class_dim="the vocabulary dim",
    )  # fmt: skip
    params = (entropy_weight, label_smoothing, ignore_index, z_loss_weight)
    args = (logits_shard, target, temperature, group, vocab_start, backend)
    (loss, _), out_shape, tgt = _run_entropy_ce(*args, params, logprobs=False)
    return reduce_loss(loss, out_shape, tgt, ignore_index, reduction)


def _run_entropy_ce(logits_shard, target, temperature, group, vocab_start, backend, params, logprobs):
    """The rest of the checks and _DistEntropyCE (shared by entropy_regularized_cross_entropy and
    token_logprobs): ((loss or logp, H) per row, the output shape, the flat targets)."""
    vocab_start = _check_vocab_start(vocab_start)
    temperature = check_temperature(temperature)
    rank, world = group_rank_world(group)
    name = _backend.resolve_backend(backend, logits_shard)
    rows, out_shape = _rows(logits_shard)
    tgt = target.reshape(-1).long()
    inv_t = inverse_temperature(temperature, out_shape, logits_shard.dtype, logits_shard.device)
    out = _DistEntropyCE.apply(rows, tgt, inv_t, group, world, rank, vocab_start, params, name, logprobs)
    return out, out_shape, tgt


# ----------------------------------------------------------------------------- tensor-parallel LM heads
class _HeadConfig(NamedTuple):
    kind: str  # "ce" or "logprobs"
    params: tuple  # ce: (beta, eps, ignore_index, zw); logprobs: (ignore_index, with_entropy)
    reduction: str | None
    name: str  # the backend of the row kernels
    group: object
    world: int
    layout: tuple  # (this shard's start, every rank's width, C)


def _sum_over_group(t: torch.Tensor | None, group) -> torch.Tensor | None:
    """``t`` summed over the ranks (all_reduce), in the accumulation dtype for 16-bit ``t``."""
    if t is None:
        return None
    buf = t.to(acc_dtype(t.dtype)).contiguous()
    dist.all_reduce(buf, group=group)
    return buf.to(t.dtype)


class _DistLinearHead(torch.autograd.Function):
    """The tensor-parallel head over flattened tokens: hidden (N, D) (the same on every rank),
    weight (V_r, D) and bias (V_r,) or None (this rank's rows), T per row (N,) when it requires
    grad (else None), target (N,) int64, inv_t (1 or N). See [Note: tensor-parallel heads]."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, temperature, target, inv_t, cfg):
        start, widths, total = cfg.layout
        logprobs = cfg.kind == "logprobs"
        params = (0.0, 0.0, cfg.params[0], 0.0) if logprobs else cfg.params  # logp = -CE
        eps, ignore_index = params[1], params[2]
        acc = acc_dtype(hidden.dtype)
        needs = ctx.needs_input_grad[:3]
        learn_t = temperature is not None and ctx.needs_input_grad[3]
        # ops/linear.py's [Note: when the gradient is computed]: now for a scalar loss.
        scalar = not logprobs and cfg.reduction != "none"
        now = scalar and (any(needs) or learn_t)
        grads = HeadGrads(hidden, weight, bias, needs, learn_t) if now else None
        if scalar:
            count = (target != ignore_index).sum().to(acc) if cfg.reduction == "mean" else None
            row_g = torch.ones((), dtype=acc, device=hidden.device)
            row_g = row_g / count if count is not None else row_g
        layout = (start, weight.shape[0], total)
        outs, saved = [], []
        # Every rank cuts the same chunks (sized for the widest shard): one collective each.
        in_place = not (now and learn_t)  # as in ops/linear.py: T's gradient reads both
        for rows, h, k, logits in head_chunks(hidden, weight, bias, inv_t, max(widths), in_place):
            tgt = target[rows]
            fields = _ce_fields(logits, tgt, k, start, eps, ignore_index, cfg.name)
            stats = _all_gather(fields, group=cfg.group, world=cfg.world).double()
            loss, ent, big, log_d = _ce_merge(stats, tgt, k, widths, total, params)
            if logprobs:
                outs.append(torch.stack([torch.zeros_like(loss) - loss, ent]).to(acc))
            else:
                outs.append(loss.to(acc))
            ent, big, log_d = ent.to(acc), big.to(acc), log_d.to(acc)
            if now:
                g = row_g.expand(logits.shape[0])
                gx = _shard_grad(
                    cfg.name, g, None, logits, tgt, k, ent, big, log_d, layout, params, in_place=in_place
                )
                grads.add(rows, h, weight, logits, gx, k)
                del gx
            elif not scalar:  # the backward recomputes the logits, not the statistics
                saved.append(torch.stack([ent, big, log_d]))
            del logits
        if outs:
            out = torch.cat(outs, dim=-1)
        else:
            out = hidden.new_empty((2, 0) if logprobs else (0,), dtype=acc)
        if scalar:  # "mean" counts the rows not ignored (on the device): NaN when there are none
            out = out.sum() if count is None else out.sum() / count
        ctx.cfg, ctx.layout, ctx.grads = cfg, layout, grads
        ctx.weight_dtype = weight.dtype
        ctx.bias_dtype = None if bias is None else bias.dtype
        if not scalar:
            row_stats = torch.cat(saved, dim=1) if saved else hidden.new_empty((3, 0), dtype=acc)
            ctx.save_for_backward(hidden, weight, bias, target, inv_t, row_stats)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        cfg = ctx.cfg
        if ctx.grads is not None:  # computed in the forward for an upstream gradient of 1
            gh, gw, gb, gt = ctx.grads.scaled(grad_out.reshape(()), ctx.weight_dtype, ctx.bias_dtype)
        else:
            hidden, weight, bias, target, inv_t, row_stats = ctx.saved_tensors
            logprobs = cfg.kind == "logprobs"
            with_entropy = logprobs and cfg.params[1]
            grads = HeadGrads(hidden, weight, bias, ctx.needs_input_grad[:3], ctx.needs_input_grad[3])
            in_place = not ctx.needs_input_grad[3]
            for rows, h, k, logits in head_chunks(hidden, weight, bias, inv_t, max(cfg.layout[1]), in_place):
                ent, big, log_d = row_stats[0, rows], row_stats[1, rows], row_stats[2, rows]
                g = grad_out[0, rows] if logprobs else grad_out[rows]
                g_ent = grad_out[1, rows] if with_entropy else None
                gx = _shard_grad(
                    cfg.name, g, g_ent, logits, target[rows], k, ent, big, log_d, ctx.layout,
                    cfg.params, logprobs=logprobs, in_place=in_place,
                )  # fmt: skip
                grads.add(rows, h, weight, logits, gx, k)
                del logits, gx
            gh, gw, gb, gt = grads.scaled(None, weight.dtype, ctx.bias_dtype)
        # hidden and T are the same on every rank: their gradients are the sums of the ranks' parts.
        gh, gt = _sum_over_group(gh, cfg.group), _sum_over_group(gt, cfg.group)
        return gh, gw, gb, gt, None, None, None


def _check_shards(hidden, weight_shard, bias_shard, vocab_start):
    check_head(
        hidden, weight_shard, bias_shard, weight_name="weight_shard", bias_name="bias_shard", allow_empty=True
    )
    return _check_vocab_start(vocab_start)


def _run_head(kind, hidden, weight_shard, bias_shard, target, temperature, params, reduction, group, vocab_start, backend):  # fmt: skip
    """The checked head: the layout collective, the target check, _DistLinearHead."""
    rank, world = group_rank_world(group)
    name = _backend.resolve_backend(backend, hidden)
    h2, tgt, inv_t, t_rows, out_shape = head_inputs(hidden, target, temperature)
    start, widths, total = _gather_layout(
        weight_shard.shape[0], vocab_start, group, world, rank, hidden.device, "weight_shard"
    )
    check_target_values(tgt, total, ignore_index_of(kind, params))  # on every rank
    cfg = _HeadConfig(kind, params, reduction, name, group, world, (start, widths, total))
    out = _DistLinearHead.apply(h2, weight_shard, bias_shard, t_rows, tgt, inv_t, cfg)
    return out, out_shape, tgt


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight_shard: torch.Tensor,
    target: torch.Tensor,
    *,
    group: dist.ProcessGroup | None = None,
    vocab_start: int | None = None,
    bias_shard: torch.Tensor | None = None,
    entropy_weight: float = 0.0,
    temperature: float | torch.Tensor = 1.0,
    label_smoothing: float = 0.0,
    ignore_index: int = -100,
    reduction: str = "mean",
    z_loss_weight: float = 0.0,
    backend: str = "auto",
) -> torch.Tensor:
    """Tensor-parallel :func:`thermokern.linear_cross_entropy`: the language-model loss from the
    last hidden states and a vocabulary-parallel output layer, without the logits in full on any
    rank.

    Equals the single-device op with the concatenation of every rank's ``weight_shard`` (and
    ``bias_shard``) in rank order; replicated on every rank. The gradient w.r.t.
    ``weight_shard`` and ``bias_shard`` is this rank's rows of the single-device gradient; the
    gradient w.r.t. ``hidden`` (and a learnable temperature) is the full one on every rank
    (summed over the group inside the backward). See [Note: tensor-parallel heads] for the
    communication.

    Args:
        hidden: (..., D) float32/float64/float16/bfloat16, the same on every rank.
        weight_shard: (V_rank, D), hidden's dtype and device: this rank's rows of the output
            layer (V_rank may differ between ranks and may be 0).
        target: global token indices in [0, V) (or ``ignore_index``) shaped like ``hidden``
            without its last dimension, the same on every rank.
        group: the process group across which the vocabulary is split (None: the default).
        vocab_start: the global index of this shard's first row. None: the sum of the lower
            ranks' widths (ranks in order). Given, the shards may be in any order but must
            tile [0, V) (checked).
        bias_shard: optional (V_rank,), this rank's slice of the bias.
        entropy_weight, temperature, label_smoothing, ignore_index, reduction, z_loss_weight:
            as :func:`thermokern.linear_cross_entropy` (per-row and learnable temperatures
            included).
        backend: the backend of the row kernels (``"auto"``, ``"cpu"``, ``"cuda"``,
            ``"triton"``, ``"reference"``).

    Returns:
        The loss in float32 (float64 for float64), shaped like ``target`` for ``"none"``.

    Raises:
        RuntimeError: no process group is initialised (the message names ``group``).
        TypeError / ValueError: bad arguments, each naming the argument, on every rank: as the
            single-device op, plus ``vocab_start`` negative or shards that do not tile the
            vocabulary, and a target outside [0, V) (checked after the layout collective).
    """
    vocab_start = _check_shards(hidden, weight_shard, bias_shard, vocab_start)
    params = check_cross_entropy_args(
        as_logits_view(hidden, weight_shard), target, entropy_weight, label_smoothing, ignore_index,
        reduction, z_loss_weight, name="hidden", classes="hidden size last", class_dim="its last dim",
    )  # fmt: skip
    loss, out_shape, _ = _run_head(
        "ce", hidden, weight_shard, bias_shard, target, temperature, params, reduction, group, vocab_start,
        backend,
    )  # fmt: skip
    return loss.reshape(out_shape) if reduction == "none" else loss


def linear_token_logprobs(
    hidden: torch.Tensor,
    weight_shard: torch.Tensor,
    target: torch.Tensor,
    *,
    group: dist.ProcessGroup | None = None,
    vocab_start: int | None = None,
    bias_shard: torch.Tensor | None = None,
    temperature: float | torch.Tensor = 1.0,
    ignore_index: int = -100,
    with_entropy: bool = False,
    backend: str = "auto",
):
    """Tensor-parallel :func:`thermokern.linear_token_logprobs`: the log-probs of the sampled
    tokens (and the entropy) from the last hidden states and a vocabulary-parallel output layer.

    Equals the single-device op with the concatenated ``weight_shard`` (and ``bias_shard``);
    replicated on every rank; gradients as :func:`linear_cross_entropy` (this rank's rows for
    the weight and bias, the full gradient for ``hidden`` and a learnable temperature). Both
    outputs come from the same per-chunk collective. Arguments as
    :func:`linear_cross_entropy` here and :func:`thermokern.linear_token_logprobs`.
    """
    vocab_start = _check_shards(hidden, weight_shard, bias_shard, vocab_start)
    check_target(target, as_logits_view(hidden, weight_shard), "hidden", "its last dim")
    ignore_index = check_int(ignore_index, "ignore_index")
    if not isinstance(with_entropy, bool):
        raise TypeError(f"with_entropy: expected a bool, got {type(with_entropy).__name__}")
    out, out_shape, tgt = _run_head(
        "logprobs", hidden, weight_shard, bias_shard, target, temperature, (ignore_index, with_entropy),
        None, group, vocab_start, backend,
    )  # fmt: skip
    logp = out[0].reshape(out_shape)
    if not with_entropy:
        return logp
    entropy = torch.where(tgt != ignore_index, out[1], torch.zeros_like(out[1]))
    return logp, entropy.reshape(out_shape)


# ----------------------------------------------------------------------------- sharded sampling
_MAX_DIMS = 64
_GATHER_DTYPES = (
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.int32,
    torch.bool,
)


def token_logprobs(
    logits_shard: torch.Tensor,
    target: torch.Tensor,
    *,
    group: dist.ProcessGroup | None = None,
    vocab_start: int | None = None,
    temperature: float | torch.Tensor = 1.0,
    ignore_index: int = -100,
    with_entropy: bool = False,
    backend: str = "auto",
):
    """Vocabulary-parallel :func:`thermokern.token_logprobs`: log softmax(z)[target] (and the
    entropy) over a vocabulary split across ranks, replicated on every rank; the gradient
    w.r.t. ``logits_shard`` is the local slice of the single-device gradient.

    The distributed cross-entropy's statistics (logp = -CE without smoothing, entropy or z-loss)
    give both outputs: one all_gather of per-row statistics (plus the shard layout when
    ``vocab_start`` is None), never the logits; the backward takes both upstream gradients at
    once. Arguments as :func:`entropy_regularized_cross_entropy` here and
    :func:`thermokern.token_logprobs`.
    """
    if not isinstance(with_entropy, bool):
        raise TypeError(f"with_entropy: expected a bool, got {type(with_entropy).__name__}")
    _, _, ignore_index, _ = check_cross_entropy_args(
        logits_shard, target, 0.0, 0.0, ignore_index, "none", 0.0,
        name="logits_shard", classes="vocabulary last", class_dim="the vocabulary dim",
    )  # fmt: skip
    args = (logits_shard, target, temperature, group, vocab_start, backend)
    (logp, h), out_shape, _ = _run_entropy_ce(*args, (0.0, 0.0, ignore_index, 0.0), logprobs=True)
    logp = logp.reshape(out_shape)
    return (logp, h.reshape(out_shape)) if with_entropy else logp


def gather_samples(x: torch.Tensor, *, group=None) -> torch.Tensor:
    """All ranks' ``x`` concatenated along dim 0 in rank order, returned on every rank.

    For sharded sampling (each rank runs :func:`thermokern.sampling.langevin_sample` on its own
    chains): the batch sizes (dim 0) may differ between ranks and may be 0; the other dims and
    the dtype must agree (checked). Two collectives: an all_gather of each rank's dtype and shape
    (66 int64s), then one of the samples padded to the largest batch. Not differentiable (the samples are
    detached). ``group=None`` means the default process group.

    Raises:
        TypeError: ``x`` is not a tensor, or is 0-dim.
        ValueError: ranks disagree on the dtype, the number of dims or the trailing shape.
        RuntimeError: no process group is initialised.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x: expected a tensor, got {type(x).__name__}")
    if not 1 <= x.dim() <= _MAX_DIMS:
        raise TypeError(f"x: expected 1 to {_MAX_DIMS} dimensions (dim 0 is gathered), got {x.dim()}")
    _, world = group_rank_world(group)
    x = x.detach()
    # One collective for every rank's (dtype, ndim, *shape), padded to a fixed width.
    meta = torch.full((2 + _MAX_DIMS,), -1, dtype=torch.int64)
    code = _GATHER_DTYPES.index(x.dtype) if x.dtype in _GATHER_DTYPES else len(_GATHER_DTYPES)
    meta[0] = code
    meta[1] = x.dim()
    meta[2 : 2 + x.dim()] = torch.tensor(x.shape, dtype=torch.int64)
    shapes = _all_gather(meta.to(x.device), group, world).tolist()
    for r, m in enumerate(shapes):
        if m[0] != code or m[1] != x.dim() or m[3 : 2 + m[1]] != list(x.shape[1:]):
            raise ValueError(
                f"x: every rank must pass the same dtype and trailing shape; rank {r} has shape "
                f"{tuple(m[2 : 2 + m[1]])}, this rank {x.dtype} {tuple(x.shape)}"
            )
    sizes = [m[2] for m in shapes]
    n_max = max(sizes)
    padded = x.new_zeros((n_max,) + tuple(x.shape[1:]))
    padded[: x.shape[0]] = x
    everything = _all_gather(padded, group, world)
    return torch.cat([everything[r, : sizes[r]] for r in range(world)])

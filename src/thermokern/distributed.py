"""Vocabulary-parallel entropy, cross-entropy and logsumexp over ``torch.distributed``.

Every rank of a process group holds a contiguous slice (a *shard*) of the last, vocabulary,
dimension of one logical ``(..., C)`` tensor, ranks in order; shard widths may differ and may
be 0. The results equal the single-device ops on the concatenated tensor and are replicated
on every rank; the gradient autograd gives each rank is the local slice of the single-device
gradient.

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

The cross-entropy also needs the shard layout (where the target column lives, and C for the
smoothing term). With ``vocab_start`` given, every rank's (vocab_start, width) travels in one
extra column of the same collective; with ``vocab_start=None`` one small all_gather of the
``world`` shard widths (int64) comes first, so that call makes two collectives. The layout is
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
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.distributed as dist
from torch.autograd.function import once_differentiable

from thermokern import _backend
from thermokern._checks import (
    check_cross_entropy_args,
    check_float_tensor,
    check_target_values,
    check_temperature,
    inverse_temperature,
)
from thermokern._dtypes import FLOAT_DTYPES, acc_dtype
from thermokern.ops.cross_entropy import cross_entropy_bwd, reduce_loss
from thermokern.ops.partition import partition_bwd, partition_fwd
from thermokern.ops.softmax_entropy import softmax_entropy_bwd, softmax_entropy_fwd

__all__ = [
    "entropy_regularized_cross_entropy",
    "gather_samples",
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


def _check_layout(starts: list[int], widths: list[int]) -> int:
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
        raise ValueError("logits_shard: the vocabulary (the sum of the shard widths) is empty")
    return end


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
class _DistEntropyCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rows, tgt, inv_t, group, world, rank, vocab_start, params, name):
        beta, eps, ignore_index, zw = params
        n, width = rows.shape
        entropy, shift, log_norm = _softmax_stats(rows, inv_t, name)
        acc = entropy.dtype
        dev = rows.device
        if vocab_start is None:  # one small collective for the layout (see the Note)
            widths = _all_gather(torch.tensor([width], dtype=torch.int64, device=dev), group, world)
            widths = [int(w) for w in widths.view(-1).tolist()]
            start = sum(widths[:rank])
            total = sum(widths)
            if total == 0:
                raise ValueError("logits_shard: the vocabulary (the sum of the shard widths) is empty")
        else:
            start = vocab_start
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
        local_stats = torch.stack(fields)
        if vocab_start is not None:  # the layout rides in one extra column
            layout = torch.zeros((len(fields), 1), dtype=acc, device=dev)
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

        k = inv_t.double()
        big, log_d, h = _merge_softmax(stats[:, 0], stats[:, 1], stats[:, 2], k)
        x_y = stats[:, 3].sum(dim=0)  # only the owner contributes
        gap = (1.0 - eps) * (big - x_y)  # CE = log D + k (M - (1 - eps) x_y - eps mean x)
        if eps > 0.0:
            ref = torch.where(torch.isfinite(stats[:, 0]), stats[:, 0], torch.zeros_like(stats[:, 0]))
            w = torch.tensor(widths, dtype=torch.float64, device=dev).unsqueeze(1)
            mean_minus_big = (stats[:, 4] + w * (ref - big)).sum(dim=0) / total
            gap = gap - eps * mean_minus_big
        lse = big * k + log_d
        loss = log_d + k * gap
        if beta != 0.0:
            loss = loss - beta * h
        if zw != 0.0:
            loss = loss + zw * lse * lse
        bad = valid & ((tgt < 0) | (tgt >= total))  # only where the value check was skipped
        loss = torch.where(valid, loss, torch.zeros_like(loss))
        loss = torch.where(bad, torch.full_like(loss, math.nan), loss)

        h, big, log_d = h.to(acc), big.to(acc), log_d.to(acc)
        ctx.save_for_backward(rows, tgt, inv_t, h, big, log_d)
        ctx.layout = (start, width, total)
        ctx.params = params
        ctx.name = name
        return loss.to(acc)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        rows, tgt, inv_t, h, big, log_d = ctx.saved_tensors
        start, width, total = ctx.layout
        beta, eps, ignore_index, zw = ctx.params
        none = (None,) * 8
        if width == 0:
            return (torch.zeros_like(rows), *none)
        g = grad.to(h.dtype).contiguous()
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
        # which adding a correction to the rounded kernel value would suffer).
        col = torch.where(owned, tgt - start, torch.zeros_like(tgt))
        kernel_tgt = torch.where(live, col, torch.full_like(col, -1))
        kernel_tgt = torch.where(bad, torch.full_like(col, width), kernel_tgt)
        eps_local = eps * width / total
        args = (g, rows, kernel_tgt, inv_t, h, big, log_d, beta, eps_local, -1, zw)
        gx = cross_entropy_bwd(ctx.name, *args)
        k = inv_t.double()
        x_t = rows.gather(1, col.unsqueeze(1)).squeeze(1).double()
        big64, log_d64 = big.double(), log_d.double()
        log_p = (x_t - big64) * k - log_d64
        p = torch.exp(log_p)
        p_log_p = torch.where(p == 0, torch.zeros_like(p), p * log_p)
        lse = big64 * k + log_d64
        gk = g.double() * k
        exact = gk * (p * (1.0 + beta * h.double() + 2.0 * zw * lse) + beta * p_log_p - eps / total)
        exact = exact - torch.where(owned, gk * (1.0 - eps), torch.zeros_like(gk))
        current = gx.gather(1, col.unsqueeze(1)).squeeze(1)
        value = torch.where(live, exact.to(gx.dtype), current)
        gx.scatter_(1, col.unsqueeze(1), value.unsqueeze(1))
        return (gx, *none)


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
    if vocab_start is not None:
        if isinstance(vocab_start, bool) or not isinstance(vocab_start, numbers.Integral):
            raise TypeError(f"vocab_start: expected an int or None, got {type(vocab_start).__name__}")
        vocab_start = int(vocab_start)
        if not 0 <= vocab_start < 2**44:
            raise ValueError(f"vocab_start: expected a value >= 0, got {vocab_start}")
    temperature = check_temperature(temperature)
    rank, world = group_rank_world(group)
    name = _backend.resolve_backend(backend, logits_shard)

    rows, out_shape = _rows(logits_shard)
    tgt = target.reshape(-1).long()
    inv_t = inverse_temperature(temperature, out_shape, logits_shard.dtype, logits_shard.device)
    params = (entropy_weight, label_smoothing, ignore_index, z_loss_weight)
    loss = _DistEntropyCE.apply(rows, tgt, inv_t, group, world, rank, vocab_start, params, name)
    return reduce_loss(loss, out_shape, tgt, ignore_index, reduction)


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

    Composed of the distributed cross-entropy (logp = -CE without smoothing, entropy or
    z-loss) and, with ``with_entropy``, the distributed entropy: one all_gather of per-row
    statistics each (two with ``with_entropy``; plus the shard widths when ``vocab_start`` is
    None), never the logits. Arguments as :func:`entropy_regularized_cross_entropy` here and
    :func:`thermokern.token_logprobs`; the entropy of 16-bit logits is rounded to their dtype
    before it is returned in float32.
    """
    if not isinstance(with_entropy, bool):
        raise TypeError(f"with_entropy: expected a bool, got {type(with_entropy).__name__}")
    loss = entropy_regularized_cross_entropy(
        logits_shard, target, group=group, vocab_start=vocab_start, temperature=temperature,
        ignore_index=ignore_index, reduction="none", backend=backend,
    )  # fmt: skip
    logp = -loss
    if not with_entropy:
        return logp
    h = softmax_entropy(logits_shard, group=group, temperature=temperature, backend=backend).to(logp.dtype)
    return logp, torch.where(target != ignore_index, h, torch.zeros_like(h))


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

"""thermokern.distributed: vocabulary-parallel ops vs the single-device ops on the full tensor.

One start of the ranks per world size (2 and 3 ranks, gloo, CPU tensors; see ``_start``) runs
every check inside the ranks: process start-up dominates the runtime. Each rank builds the same
full logits from a shared seed, keeps its slice, and compares the distributed result and its
local gradient with the float64 reference on the full tensor (the local slice of the full
gradient). The merge itself is also checked in-process on 8 shards of a 131k vocabulary.

The NCCL path (CUDA tensors, the cuda and triton backends) runs only where several GPUs
exist: ``test_nccl_multi_gpu`` below (selected by bench/gpu_check.sh's "gpu" filter) and
``torchrun --nproc_per_node=<gpus> bench/distributed_check.py``, both calling ``check_all``.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.util
import math
import multiprocessing
import os
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from _util import LargestTensor
from _util import assert_close as _assert_close

import thermokern
from thermokern import distributed as td
from thermokern import reference
from thermokern.ops import linear


def assert_close(actual, expected, dtype, **kw):
    """_util.assert_close, plus: infinities must match exactly (there, its rtol * |inf| allows
    any value) and NaN must sit at the same places."""
    a, e = actual.detach().double(), expected.detach().double()
    assert torch.equal(torch.isnan(a), torch.isnan(e)), (a, e)
    inf = torch.isinf(e) | torch.isinf(a)
    assert torch.equal(a[inf], e[inf]), (a[inf], e[inf])
    _assert_close(actual, expected, dtype, **kw)


def splits_for(world: int) -> list[tuple[int, ...]]:
    """Uneven shard widths per world size (an empty shard included)."""
    if world == 1:
        return [(13,)]
    if world == 2:
        return [(20, 17), (1, 8)]
    if world == 3:
        return [(20, 10, 7), (12, 0, 5)]
    return [tuple(3 + 2 * r for r in range(world)), tuple(0 if r == 1 else 4 + r for r in range(world))]


def _bounds(widths, rank):
    start = sum(widths[:rank])
    return start, start + widths[rank]


def _full_logits(lead, c, dtype, seed, device, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*lead, c, generator=g, dtype=torch.float64) * scale
    return x.to(dtype).to(device)


def _randn(shape, seed, device):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(device)


def _local(x, widths, rank):
    s, e = _bounds(widths, rank)
    return x[..., s:e].detach().clone().requires_grad_(True)


def _grad_scale(g, temperature):
    t_min = temperature.min().item() if isinstance(temperature, torch.Tensor) else temperature
    return float(g.abs().max()) / t_min


def _check_entropy(rank, device, backend, widths, dtype, seed, temps=(1.0, 0.7, "per-row")):
    c = sum(widths)
    lead = (2, 3)
    x = _full_logits(lead, c, dtype, seed, device)
    for temperature in temps:
        if temperature == "per-row":
            temperature = (0.5 + _randn(lead, seed + 1, device).abs()).to(torch.float32)
        xl = _local(x, widths, rank)
        out = td.softmax_entropy(xl, temperature=temperature, backend=backend)
        assert out.dtype == dtype and out.shape == lead
        xr = x.detach().double().requires_grad_(True)
        ref = reference.softmax_entropy(xr, -1, temperature=temperature)
        assert_close(out, ref.detach(), dtype)
        g = _randn(lead, seed + 2, device)
        (gx,) = torch.autograd.grad(out, xl, g.to(dtype))
        (gr,) = torch.autograd.grad(ref, xr, g)
        s, e = _bounds(widths, rank)
        assert_close(gx, gr[..., s:e], dtype, grad=True, grad_scale=_grad_scale(g, temperature))


def _edge_logits(widths, device):
    """Rows: rank 0's shard all -inf, every entry -inf, +inf in the last shard, NaN, ordinary."""
    c = sum(widths)
    x = _full_logits((5,), c, torch.float64, 7, device)
    x[0, : widths[0] if len(widths) > 1 else c // 2] = -math.inf
    x[1] = -math.inf
    x[2, -1] = math.inf
    x[3, c // 2] = math.nan
    return x


def _check_edge_cases(rank, device, backend, widths):
    x = _edge_logits(widths, device)
    s, e = _bounds(widths, rank)
    g = _randn((5,), 3, device)
    # logsumexp: torch.logsumexp's values; gradient 0 (not NaN) for the all -inf row.
    xl = _local(x, widths, rank)
    out = td.logsumexp(xl, backend=backend)
    xr = x.detach().clone().requires_grad_(True)
    ref = reference.logsumexp(xr, -1)
    assert_close(out, torch.logsumexp(x, -1), torch.float64)
    (gx,) = torch.autograd.grad(out, xl, g)
    (gr,) = torch.autograd.grad(ref, xr, g)
    assert_close(gx, gr[..., s:e], torch.float64, grad=True)
    assert bool((gx[1] == 0).all())
    # entropy: NaN for the -inf, +inf and NaN rows; a fully -inf shard contributes nothing.
    xl = _local(x, widths, rank)
    out = td.softmax_entropy(xl, backend=backend)
    ref = reference.softmax_entropy(x, -1)
    assert_close(out, ref, torch.float64)
    assert torch.isnan(out[1:4]).all() and torch.isfinite(out[[0, 4]]).all()
    (gx,) = torch.autograd.grad(out[[0, 4]].sum(), xl)
    xr = x[[0, 4]].detach().clone().requires_grad_(True)
    (gr,) = torch.autograd.grad(reference.softmax_entropy(xr, -1).sum(), xr)
    assert_close(gx[[0, 4]], gr[..., s:e], torch.float64, grad=True)


def _check_logsumexp(rank, device, backend, widths, dtype, seed):
    c = sum(widths)
    lead = (4,)
    x = _full_logits(lead, c, dtype, seed, device, scale=30.0)
    xl = _local(x, widths, rank)
    out = td.logsumexp(xl, backend=backend)
    assert out.dtype == dtype and out.shape == lead
    xr = x.detach().double().requires_grad_(True)
    ref = torch.logsumexp(xr, -1)
    assert_close(out, ref.detach(), dtype)
    g = _randn(lead, seed + 1, device)
    (gx,) = torch.autograd.grad(out, xl, g.to(dtype))
    (gr,) = torch.autograd.grad(ref, xr, g)
    s, e = _bounds(widths, rank)
    assert_close(gx, gr[..., s:e], dtype, grad=True, grad_scale=_grad_scale(g, 1.0))


# (entropy_weight, label_smoothing, z_loss_weight, temperature, reduction, ignore_index, explicit vocab_start)
CE_CASES = [
    (0.0, 0.0, 0.0, 1.0, "mean", -100, False),  # plain cross-entropy
    (0.5, 0.1, 1e-2, 0.8, "none", -100, True),  # every term, the layout in the stats collective
    (-0.3, 0.2, 0.0, "per-row", "sum", 3, False),  # a class index as ignore_index; per-row T
    (1.0, 1.0, 0.0, 1.3, "mean", -100, True),  # label smoothing 1: no one-hot term
]


def _check_cross_entropy(rank, device, backend, widths, dtype, seed, cases=CE_CASES):
    c = sum(widths)
    lead = (3, 4)
    x = _full_logits(lead, c, dtype, seed, device)
    s, e = _bounds(widths, rank)
    for i, (beta, eps, zw, temperature, reduction, ignore_index, explicit) in enumerate(cases):
        gen = torch.Generator().manual_seed(seed + 10 + i)
        t = torch.randint(0, c, lead, generator=gen)
        t[0, ::3] = ignore_index
        t[1, 0] = c - 1  # targets in the first and the last shard
        t[1, 1] = 0
        t = t.to(device)
        if temperature == "per-row":
            temperature = (0.5 + _randn(lead, seed + 20 + i, device).abs()).to(torch.float32)
        kw = {
            "entropy_weight": beta,
            "label_smoothing": eps,
            "z_loss_weight": zw,
            "temperature": temperature,
            "ignore_index": ignore_index,
            "reduction": reduction,
        }
        xl = _local(x, widths, rank)
        vs = s if explicit else None
        out = td.entropy_regularized_cross_entropy(xl, t, vocab_start=vs, backend=backend, **kw)
        loss_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        assert out.dtype == loss_dtype
        xr = x.detach().double().requires_grad_(True)
        ref = reference.entropy_regularized_cross_entropy(xr, t, **kw)
        assert_close(out, ref.detach(), dtype)
        g = _randn(out.shape, seed + 30 + i, device)
        (gx,) = torch.autograd.grad(out, xl, g.to(out.dtype))
        (gr,) = torch.autograd.grad(ref, xr, g)
        assert_close(gx, gr[..., s:e], dtype, grad=True, grad_scale=_grad_scale(g, temperature))


def _check_token_logprobs(rank, device, backend, widths, dtype, seed):
    c = sum(widths)
    lead = (2, 3)
    x = _full_logits(lead, c, dtype, seed, device)
    t = (_randn(lead, seed + 3, device).abs() * 1000).long() % c
    t[0, 1] = -100
    xl = _local(x, widths, rank)
    logp, h = td.token_logprobs(xl, t, temperature=0.8, with_entropy=True, backend=backend)
    xr = x.detach().double().requires_grad_(True)
    rl, rh = reference.token_logprobs(xr, t, temperature=0.8, with_entropy=True)
    assert_close(logp, rl.detach(), dtype)
    assert_close(h, rh.detach(), dtype)
    gl, gh = _randn(lead, seed + 4, device), _randn(lead, seed + 5, device)
    (gx,) = torch.autograd.grad((logp * gl.to(logp.dtype)).sum() + (h * gh.to(h.dtype)).sum(), xl)
    (gr,) = torch.autograd.grad((rl * gl).sum() + (rh * gh).sum(), xr)
    s, e = _bounds(widths, rank)
    assert_close(gx, gr[..., s:e], dtype, grad=True, grad_scale=4.0)


def _check_errors(rank, device, widths):
    """Errors are raised identically on every rank (before the collective, or after it from
    replicated data), so the ranks stay in step."""
    c = sum(widths)
    s, _ = _bounds(widths, rank)
    x = _local(_full_logits((4,), c, torch.float32, 5, device), widths, rank)
    t = torch.zeros(4, dtype=torch.long, device=device)
    ce = td.entropy_regularized_cross_entropy
    with pytest.raises(ValueError, match="target: expected shape"):
        ce(x, t[:3])
    with pytest.raises(TypeError, match="target: expected an integer"):
        ce(x, t.float())
    with pytest.raises(ValueError, match="vocab_start: expected a value >= 0"):
        ce(x, t, vocab_start=-1)
    with pytest.raises(TypeError, match="vocab_start"):
        ce(x, t, vocab_start=1.5)
    with pytest.raises(ValueError, match="vocab_start: the shards do not tile"):
        ce(x, t, vocab_start=0 if len(widths) > 1 else 1)  # every rank claims column 0
    with pytest.raises(ValueError, match="vocab_start: the shards do not tile"):
        ce(x, t, vocab_start=s + 1)  # a gap before rank 0
    bad = t.clone()
    bad[2] = c  # one past the vocabulary (only the layout tells)
    with pytest.raises(ValueError, match=r"target: class index .* at row 2"):
        ce(x, bad)
    with pytest.raises(ValueError, match=r"target: class index .* at row 2"):
        ce(x, bad, vocab_start=s, label_smoothing=0.1)
    with pytest.raises(ValueError, match="reduction"):
        ce(x, t, reduction="avg")
    with pytest.raises(ValueError, match="temperature"):
        td.softmax_entropy(x, temperature=0.0)
    with pytest.raises(TypeError, match="logits_shard"):
        td.softmax_entropy(x.long())
    with pytest.raises(TypeError, match="input_shard"):
        td.logsumexp(torch.zeros(2, 3, dtype=torch.complex64))
    # Still in step after all of that:
    out = ce(x, t, vocab_start=s)
    assert torch.isfinite(out)


def _check_no_rows(rank, device, backend, widths):
    x = _local(torch.zeros(0, sum(widths), device=device), widths, rank)
    out = td.softmax_entropy(x, backend=backend)
    assert out.shape == (0,)
    (gx,) = torch.autograd.grad(out.sum(), x)
    assert gx.shape == x.shape
    t = torch.zeros(0, dtype=torch.long, device=device)
    loss = td.entropy_regularized_cross_entropy(x, t, reduction="sum", backend=backend)
    assert loss.item() == 0.0
    assert td.logsumexp(x, backend=backend).shape == (0,)


# ----------------------------------------------------------------------------- tensor-parallel heads
def linear_splits_for(world: int) -> list[tuple[int, ...]]:
    """Uneven vocabulary shards of the LM-head weight (an empty one in the second)."""
    return [(5, 7, 4), (6, 0, 5)] if world == 3 else splits_for(world)


@contextlib.contextmanager
def _small_chunks(nbytes=96):
    """Chunks of a few tokens (one to six here), so that every head call crosses chunks."""
    saved = linear.CHUNK_BYTES
    linear.CHUNK_BYTES = {"cpu": nbytes, "cuda": nbytes}
    try:
        yield
    finally:
        linear.CHUNK_BYTES = saved


def _head_full(c, dtype, seed, device, lead, d=8):
    """The same hidden (lead, d), full weight (c, d) and bias (c,) on every rank."""
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(*lead, d, generator=gen, dtype=torch.float64)
    w = torch.randn(c, d, generator=gen, dtype=torch.float64) * (3 / d**0.5)
    b = torch.randn(c, generator=gen, dtype=torch.float64) * 0.5
    return [x.to(dtype).to(device) for x in (h, w, b)]


def _leaves(*ts):
    return [None if t is None else t.detach().clone().requires_grad_(True) for t in ts]


def _head_targets(c, lead, ignore_index, seed, device):
    t = torch.randint(0, c, lead, generator=torch.Generator().manual_seed(seed))
    t[0, ::2] = ignore_index
    t[1, 0], t[1, 1] = c - 1, 0  # targets in the first and the last shard
    return t.to(device)


def _check_head_grads(got, want, sl, dtype):
    """got: (hidden, weight shard, bias shard, temperature) gradients; want: the single-device
    ones with the full weight and bias, of which this rank's rows ``sl`` are compared."""
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        if a is None:
            continue
        b = b[sl] if i in (1, 2) else b
        assert_close(a, b, dtype, grad=True, grad_scale=4.0)


# (entropy_weight, label_smoothing, z_loss_weight, temperature, reduction, ignore_index,
#  explicit vocab_start, bias)
LINEAR_CE_CASES = [
    (0.0, 0.0, 0.0, 1.0, "mean", -100, False, True),  # the plain LM loss
    (0.5, 0.1, 1e-2, 0.8, "none", -100, True, True),  # every term; the backward recomputes chunks
    (-0.3, 0.2, 0.0, "per-row", "sum", 3, False, False),  # a class index as ignore_index; no bias
    (0.2, 0.0, 1e-3, "learnable", "mean", -100, True, True),  # d/dT summed over the ranks
]


def _check_linear_cross_entropy(rank, device, backend, widths, dtype, seed, cases=LINEAR_CE_CASES):
    """td.linear_cross_entropy vs thermokern.linear_cross_entropy (float64, the full weight)."""
    c = sum(widths)
    lead = (3, 5)
    s, e = _bounds(widths, rank)
    hidden, weight, bias = _head_full(c, dtype, seed, device, lead)
    for i, (beta, eps, zw, temp, reduction, ignore_index, explicit, with_bias) in enumerate(cases):
        t = _head_targets(c, lead, ignore_index, seed + 10 + i, device)
        if temp == "per-row":
            temp = (0.5 + _randn(lead, seed + 20 + i, device).abs()).to(torch.float32)
        learnable = temp == "learnable"
        temp = torch.tensor([0.8], dtype=torch.float64, device=device) if learnable else temp
        kw = {
            "entropy_weight": beta,
            "label_smoothing": eps,
            "z_loss_weight": zw,
            "ignore_index": ignore_index,
            "reduction": reduction,
        }
        h, w, b, tt = _leaves(
            hidden, weight[s:e], bias[s:e] if with_bias else None, temp if learnable else None
        )
        out = td.linear_cross_entropy(
            h, w, t, bias_shard=b, vocab_start=s if explicit else None,
            temperature=tt if learnable else temp, backend=backend, **kw,
        )  # fmt: skip
        h64, w64, b64, t64 = _leaves(
            hidden.double(),
            weight.double(),
            bias.double() if with_bias else None,
            temp if learnable else None,
        )
        ref = thermokern.linear_cross_entropy(
            h64, w64, t, bias=b64, temperature=t64 if learnable else temp, backend=backend, **kw
        )
        assert out.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
        assert out.shape == ref.shape
        assert_close(out, ref.detach(), dtype)
        g = _randn(ref.shape, seed + 30 + i, device)
        got = _grads(out, [h, w, b, tt], g.to(out.dtype))
        want = _grads(ref, [h64, w64, b64, t64], g)
        _check_head_grads(got, want, slice(s, e), dtype)


def _grads(out, ins, g):
    live = [t for t in ins if t is not None]
    it = iter(torch.autograd.grad(out, live, g))
    return [None if t is None else next(it) for t in ins]


def _check_linear_token_logprobs(rank, device, backend, widths, dtype, seed):
    """td.linear_token_logprobs (with and without the entropy) vs the single-device op."""
    c = sum(widths)
    lead = (4, 3)
    s, e = _bounds(widths, rank)
    hidden, weight, bias = _head_full(c, dtype, seed, device, lead)
    t = _head_targets(c, lead, -100, seed + 1, device)
    temp = (0.5 + _randn(lead, seed + 2, device).abs()).to(torch.float32)
    for with_entropy in (True, False):
        h, w, b = _leaves(hidden, weight[s:e], bias[s:e])
        out = td.linear_token_logprobs(
            h, w, t, bias_shard=b, temperature=temp, with_entropy=with_entropy, backend=backend
        )
        h64, w64, b64 = _leaves(hidden.double(), weight.double(), bias.double())
        ref = thermokern.linear_token_logprobs(
            h64, w64, t, bias=b64, temperature=temp, with_entropy=with_entropy, backend=backend
        )
        outs, refs = (out, ref) if with_entropy else ((out,), (ref,))
        loss, ref_loss = 0, 0
        for j, (o, r) in enumerate(zip(outs, refs, strict=True)):
            assert o.shape == lead and o.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
            assert_close(o, r.detach(), dtype)
            assert bool((o[t == -100] == 0).all())
            g = _randn(lead, seed + 3 + j, device)
            loss, ref_loss = loss + (o * g.to(o.dtype)).sum(), ref_loss + (r * g).sum()
        got = _grads(loss, [h, w, b, None], None)
        want = _grads(ref_loss, [h64, w64, b64, None], None)
        _check_head_grads(got, want, slice(s, e), dtype)


def _check_linear_heads_misc(rank, world, device, backend):
    """The logits never exist in full on a rank (the kernel backends); no tokens; every
    target ignored."""
    widths = [300 - 50 * (r % 2) for r in range(world)]
    c, n, s = sum(widths), 64, sum(widths[:rank])
    hidden, weight, bias = _head_full(c, torch.float32, 4, device, (n,))
    t = _head_targets(c, (4, 16), -100, 5, device).reshape(n)
    for reduction in ("mean", "none") if backend != "reference" else ():
        h, w, b = _leaves(hidden, weight[s : s + widths[rank]], bias[s : s + widths[rank]])
        with _small_chunks(4096), LargestTensor() as probe:
            loss = td.linear_cross_entropy(h, w, t, bias_shard=b, reduction=reduction, backend=backend)
            loss.sum().backward()
        assert probe.largest < n * widths[rank] // 4, probe.largest  # the chunks: 4096 bytes
    h, w = _leaves(hidden[:0], weight[s : s + widths[rank]])
    loss = td.linear_cross_entropy(h, w, t[:0], reduction="sum", backend=backend)
    loss.backward()
    assert loss.item() == 0.0 and h.grad.shape == h.shape and bool((w.grad == 0).all())
    h, w = _leaves(hidden[:5], weight[s : s + widths[rank]])
    loss = td.linear_cross_entropy(h, w, torch.full_like(t[:5], -100), backend=backend)
    assert torch.isnan(loss)  # "mean" of no rows, as the single-device op
    loss.backward()
    assert bool((h.grad == 0).all()) and bool((w.grad == 0).all())


def _check_linear_errors(rank, device, widths):
    """Errors of the heads, raised on every rank alike (the ranks stay in step)."""
    c = sum(widths)
    s, e = _bounds(widths, rank)
    hidden, weight, bias = _head_full(c, torch.float32, 6, device, (4,))
    w = weight[s:e]
    t = torch.zeros(4, dtype=torch.long, device=device)
    ce = td.linear_cross_entropy
    with pytest.raises(ValueError, match=r"weight_shard: expected \(V, 8\)"):
        ce(hidden, w[:, :5], t)
    with pytest.raises(ValueError, match="bias_shard: expected shape"):
        ce(hidden, w, t, bias_shard=bias[:1] if e - s != 1 else bias[:2])
    with pytest.raises(TypeError, match="bias_shard: expected hidden's dtype"):
        ce(hidden, w, t, bias_shard=bias[s:e].double())
    with pytest.raises(ValueError, match="target: expected shape"):
        td.linear_token_logprobs(hidden, w, t[:3])
    with pytest.raises(ValueError, match="vocab_start: the shards do not tile"):
        ce(hidden, w, t, vocab_start=0 if len(widths) > 1 else 1)
    with pytest.raises(ValueError, match="vocab_start: expected a value >= 0"):
        ce(hidden, w, t, vocab_start=-1)
    bad = t.clone()
    bad[2] = c  # one past the vocabulary (only the layout tells)
    with pytest.raises(ValueError, match=r"target: class index .* at row 2"):
        ce(hidden, w, bad)
    with pytest.raises(ValueError, match=r"target: class index .* at row 2"):
        td.linear_token_logprobs(hidden, w, bad, vocab_start=s)
    with pytest.raises(ValueError, match="reduction"):
        ce(hidden, w, t, reduction="avg")
    with pytest.raises(TypeError, match="with_entropy"):
        td.linear_token_logprobs(hidden, w, t, with_entropy=1)
    assert torch.isfinite(ce(hidden, w, t, vocab_start=s))  # still in step


def check_linear_heads(rank, world, device, backend, slow=False):
    """The tensor-parallel heads on every split (float32 and float64), bfloat16 once, the
    scratch bound, no tokens. ``slow`` (the Triton interpreter): one case."""
    with _small_chunks():
        if slow:
            widths = linear_splits_for(world)[0]
            _check_linear_cross_entropy(rank, device, backend, widths, torch.float32, 1, LINEAR_CE_CASES[1:2])
            _check_linear_token_logprobs(rank, device, backend, widths, torch.float32, 1)
            return
        for k, widths in enumerate(linear_splits_for(world)):
            for dtype in (torch.float64, torch.float32):
                _check_linear_cross_entropy(rank, device, backend, widths, dtype, 100 * k + 1)
                _check_linear_token_logprobs(rank, device, backend, widths, dtype, 100 * k + 1)
        widths = linear_splits_for(world)[0]
        _check_linear_cross_entropy(rank, device, backend, widths, torch.bfloat16, 9, LINEAR_CE_CASES[1:2])
        _check_linear_token_logprobs(rank, device, backend, widths, torch.bfloat16, 9)
    _check_linear_heads_misc(rank, world, device, backend)


def check_all(rank: int, world: int, device: str, backends: list[str], slow: tuple[str, ...] = ()) -> None:
    """Every check on this rank (the process group is initialised). Backends in ``slow`` (the
    Triton interpreter) run one split, one dtype and one cross-entropy case."""
    for backend in backends:
        if backend in slow:
            widths = splits_for(world)[0]
            _check_entropy(rank, device, backend, widths, torch.float32, 1, temps=("per-row",))
            _check_logsumexp(rank, device, backend, widths, torch.float32, 1)
            _check_cross_entropy(rank, device, backend, widths, torch.float32, 1, CE_CASES[1:2])
            check_linear_heads(rank, world, device, backend, slow=True)
            continue
        for k, widths in enumerate(splits_for(world)):
            for dtype in (torch.float32, torch.float64):
                _check_entropy(rank, device, backend, widths, dtype, 100 * k + 1)
                _check_logsumexp(rank, device, backend, widths, dtype, 100 * k + 1)
                _check_cross_entropy(rank, device, backend, widths, dtype, 100 * k + 1)
                _check_token_logprobs(rank, device, backend, widths, dtype, 100 * k + 1)
            _check_edge_cases(rank, device, backend, widths)
        widths = splits_for(world)[0]
        _check_entropy(rank, device, backend, widths, torch.bfloat16, 9, temps=(0.7,))
        _check_cross_entropy(rank, device, backend, widths, torch.bfloat16, 9, CE_CASES[1:3])
        _check_no_rows(rank, device, backend, widths)
        check_linear_heads(rank, world, device, backend)
    _check_errors(rank, device, splits_for(world)[0])
    _check_linear_errors(rank, device, linear_splits_for(world)[0])


def _check_example(device):
    """examples/distributed_entropy.py's step agrees with one device (the README runs it)."""
    path = Path(__file__).resolve().parents[1] / "examples" / "distributed_entropy.py"
    spec = importlib.util.spec_from_file_location("distributed_entropy", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    errs = mod.run(device)
    assert max(errs["loss_err"], errs["entropy_err"], errs["log_z_err"], errs["grad_err"]) < 1e-5, errs


# ----------------------------------------------------------------------------- sharded sampling
def _energy(x):
    return 0.5 * x.square().sum(1)


def _sampling_runs(rank, **kw):
    """What every rank samples (uneven batches: 4 + rank chains): ULA, MALA and a buffer."""
    x0 = torch.linspace(-1, 1, 30).reshape(10, 3)[: 4 + rank]  # the same first rows everywhere
    ula = thermokern.sampling.langevin_sample(_energy, x0, n_steps=3, step_size=0.1, seed=7, **kw)
    mala = thermokern.sampling.langevin_sample(
        _energy, x0, n_steps=2, step_size=0.5, seed=7, metropolis=True, **kw
    )
    buf = thermokern.sampling.ReplayBuffer(6, 3, seed=5, reinit_prob=1.0, **kw)
    fresh, _ = buf.sample(2)
    return {"ula": ula, "mala": mala, "buffer": buf.buffer.clone(), "fresh": fresh}, buf


def _check_sampling(rank, world, out_dir):
    """Sharded sampling: per-rank streams (distinct across ranks, reproducible) and
    gather_samples; the results go to ``out_dir`` for the single-process comparison."""
    got, buf = _sampling_runs(rank)
    assert buf.stream == rank
    again, _ = _sampling_runs(rank)
    explicit, _ = _sampling_runs(rank, stream=rank)
    for key in got:
        assert torch.equal(got[key], again[key]), key  # reproducible
        assert torch.equal(got[key], explicit[key]), key  # = the documented stream r
        # distinct across ranks: compare everyone's first rows (MALA may reject some chains)
        rows = td.gather_samples(got[key][:2])
        for r in range(world):
            if r != rank:
                other = rows[2 * r : 2 * r + 2]
                if key == "mala":
                    assert not torch.equal(other, got[key][:2]), (key, r)
                else:
                    assert not torch.isclose(other, got[key][:2]).any(), (key, r)
    # gather_samples: the concatenation in rank order, uneven (and empty) batches
    sizes = [4 + r for r in range(world)]
    all_ula = td.gather_samples(got["ula"])
    assert all_ula.shape == (sum(sizes), 3)
    start = sum(sizes[:rank])
    assert torch.equal(all_ula[start : start + sizes[rank]], got["ula"])
    local = got["ula"][:0] if rank == 1 else got["ula"]
    part = td.gather_samples(local)
    assert part.shape[0] == sum(sizes) - sizes[1]
    assert torch.equal(part[: sizes[0]], all_ula[: sizes[0]])
    gathered = buf.gather()
    assert gathered.shape == (6 * world, 3) and torch.equal(gathered[6 * rank : 6 * rank + 6], buf.buffer)
    with pytest.raises(ValueError, match="same dtype and trailing shape"):
        td.gather_samples(torch.zeros(2, 3 + rank))
    torch.save(got, Path(out_dir) / f"sampling_{world}_{rank}.pt")


def _check_sampling_single_process(world, out_dir):
    """Rank r's samples equal a run without a process group on stream r (offsets
    r * 2**48 + k * counters, generator seed stream_seed(seed, r)); rank 0 = the plain run."""
    plain, _ = _sampling_runs(0)
    for rank in range(world):
        got = torch.load(Path(out_dir) / f"sampling_{world}_{rank}.pt")
        ref, _ = _sampling_runs(rank, stream=rank)
        for key in got:
            assert torch.equal(got[key], ref[key]), (rank, key)
            if rank == 0:
                assert torch.equal(got[key], plain[key]), key


def _worker(rank, world, init_file, device_kind, pg_backend):
    torch.set_num_threads(1)  # the ranks share the machine's cores
    # The Triton interpreter evaluates masked-off lanes too (as pyproject.toml's filter says).
    warnings.filterwarnings("ignore", category=RuntimeWarning, module="triton.runtime.interpreter")
    thermokern._C._set_poison_outputs(True)  # unwritten kernel outputs show up as NaN
    device = "cpu"
    if device_kind == "cuda":
        torch.cuda.set_device(rank)
        device = f"cuda:{rank}"
    dist.init_process_group(
        pg_backend,
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=120),
    )
    try:
        info = thermokern.available_backends()
        usable = [b for b in ("cpu", "cuda", "triton", "reference") if device_kind in info[b].devices]
        if device_kind == "cpu" and world != 2:  # the Triton interpreter: ~5 s a world size
            usable = [b for b in usable if b != "triton"]
        check_all(rank, world, device, usable, slow=("triton",) if device_kind == "cpu" else ())
        _check_example(device)
        if device_kind == "cpu":
            _check_sampling(rank, world, Path(init_file).parent)
    finally:
        dist.destroy_process_group()


def _start(world, tmp_path, device_kind="cpu", pg_backend="gloo"):
    """Start ``world`` ranks running every check; an exception in any rank fails the test (and
    torch.multiprocessing stops the others).

    CPU ranks fork from a forkserver that has imported torch and thermokern once (start-up of
    both world sizes here: ~5 s, against ~29 s for "spawn", where each rank imports torch on
    the 2 shared cores). It never touches CUDA; the GPU ranks use "spawn" all the same.
    """
    method = "spawn" if device_kind == "cuda" else "forkserver"
    if method == "forkserver":
        multiprocessing.set_forkserver_preload(["torch", "thermokern", "test_distributed"])
    args = (world, str(tmp_path / "init"), device_kind, pg_backend)
    mp.start_processes(_worker, args=args, nprocs=world, join=True, start_method=method)


@pytest.mark.parametrize("world", [2, 3])
def test_gloo_matches_single_device(world, tmp_path):
    _start(world, tmp_path)
    _check_sampling_single_process(world, tmp_path)


@pytest.mark.skipif(
    torch.cuda.device_count() < 2, reason="NCCL needs >= 2 GPUs (run by bench/gpu_check.sh there)"
)
def test_nccl_multi_gpu(tmp_path):
    _start(min(torch.cuda.device_count(), 3), tmp_path, "cuda", "nccl")


def test_errors_without_process_group():
    if dist.is_available() and dist.is_initialized():
        pytest.skip("a process group is initialised in this process")
    x = torch.zeros(2, 5)
    with pytest.raises(RuntimeError, match="group: the default process group is not initialised"):
        td.softmax_entropy(x)
    with pytest.raises(RuntimeError, match="group"):
        td.logsumexp(x)
    with pytest.raises(RuntimeError, match="group"):
        td.entropy_regularized_cross_entropy(x, torch.zeros(2, dtype=torch.long))
    with pytest.raises(RuntimeError, match="group"):
        td.linear_cross_entropy(x, torch.zeros(3, 5), torch.zeros(2, dtype=torch.long))
    with pytest.raises(RuntimeError, match="group"):
        td.linear_token_logprobs(x, torch.zeros(3, 5), torch.zeros(2, dtype=torch.long))
    assert thermokern.distributed is td
    assert os.environ.get("TRITON_INTERPRET") is not None  # conftest ran first (the ranks inherit it)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_merge_many_shards_large_vocab(dtype):
    """The float64 merge of 8 shards' kernel statistics (no process group needed) matches one
    device on a 131k vocabulary with large logits, within the single-device tolerances."""
    c, n = 131_072, 3
    x = (torch.randn(n, c, dtype=torch.float64) * 8 + 1e3).to(dtype)
    x[0, 5000:70000] = -math.inf  # whole shards masked
    widths = [16_384] * 8
    k = torch.tensor([1 / 0.7], dtype=torch.float32)
    parts = [td._softmax_stats(s, k, "cpu") for s in x.split(widths, dim=1)]
    h = torch.stack([p[0] for p in parts]).double()
    m = torch.stack([p[1] for p in parts]).double()
    log_d = torch.stack([p[2] for p in parts]).double()
    big, log_dd, entropy = td._merge_softmax(m, log_d, h, k.double())
    ref = reference.softmax_entropy(x.double(), -1, temperature=0.7)
    assert_close(entropy, ref, torch.float32)
    lse_ref = torch.logsumexp(x.double() / 0.7, -1)
    assert_close(big * k.double() + log_dd, lse_ref, torch.float32)
    x3 = x.unsqueeze(2)
    stats = [td._lse_stats(s.contiguous(), "cpu") for s in x3.split(widths, dim=1)]
    lse, _, _ = td._merge_lse(
        torch.stack([s[0] for s in stats]).double(), torch.stack([s[1] for s in stats]).double()
    )
    assert_close(lse, torch.logsumexp(x.double(), -1), torch.float32)
    # Merged in float64 from exact shifts: well inside one float32 ulp of lse ~ 1e3 (1.2e-4).
    assert float((lse - torch.logsumexp(x.double(), -1)).abs().max()) < 1e-5


def test_stream_layout_without_process_group():
    """The documented per-rank layout: offset r * 2**48 + k * counters; generator seeds."""
    sampling = thermokern.sampling
    assert sampling.step_rng(9, 3, 10) == (9, 30)
    assert sampling.step_rng(9, 3, 10, stream=0) == (9, 30)
    assert sampling.step_rng(9, 3, 10, stream=2) == (9, 2 * 2**48 + 30)
    with pytest.raises(ValueError, match="stream 1's block"):
        sampling.step_rng(9, 2**46, 4, stream=1)
    with pytest.raises(ValueError, match="stream"):
        sampling.step_rng(9, 0, 4, stream=2**15)
    assert sampling.stream_seed(5, None) == sampling.stream_seed(5, 0) == 5
    assert sampling.stream_seed(5, 3) == (5 + 3 * 0x9E3779B97F4A7C15) % 2**64
    with pytest.raises(TypeError, match="stream"):
        sampling.langevin_sample(_energy, torch.zeros(2, 3), n_steps=1, step_size=0.1, stream=1.0)
    with pytest.raises(RuntimeError, match="group"):
        sampling.ReplayBuffer(4, 3, group=object())
    with pytest.raises(RuntimeError, match="group"):
        td.gather_samples(torch.zeros(2, 3))

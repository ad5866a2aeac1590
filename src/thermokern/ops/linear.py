"""Language-model heads from hidden states: ``linear_cross_entropy``, ``linear_token_logprobs``
and ``linear_softmax_entropy``, without ever holding the (N, V) logits or their gradient.

They have no kernels of their own: the tokens are processed in chunks whose scratch is
bounded (independent of N); per chunk, the logits come from one matmul (the vendor BLAS, in
the input dtype with fp32 accumulation), the row statistics, loss and logit gradient from this
project's row kernels (the ``KernelOp``s of ops/cross_entropy.py, ops/token_logprobs.py and
ops/softmax_entropy.py; the gradient is written over the chunk's logits by the in-place twins
of the backward kernels, so that a chunk is one (rows, V) buffer), and the gradients w.r.t.
hidden, weight and bias from two more matmuls; the weight and bias gradients accumulate in
fp32. The chunk sweep (``head_chunks``),
the gradient buffers (``HeadGrads``) and the argument handling (``check_head``,
``head_inputs``) also serve thermokern.distributed's tensor-parallel heads.

[Note: when the gradient is computed]
A loss reduced to a scalar ("mean" or "sum") has one upstream gradient for every row, known
up to a factor: the forward computes the gradients with that factor 1 while each chunk's
logits are at hand, and the backward only scales them (three matmuls in all, as an eager
forward + backward). Outputs with a gradient per row (reduction "none", the log-probs and the
entropy) cannot be differentiated before the backward: there each chunk's logits are
recomputed (a fourth matmul), and only the inputs are saved.
"""

from __future__ import annotations

import torch

from thermokern import _backend, reference
from thermokern._checks import (
    check_cross_entropy_args,
    check_float_tensor,
    check_int,
    check_target,
    check_target_values,
    check_temperature,
    inverse_temperature,
)
from thermokern._dtypes import acc_dtype
from thermokern.ops.cross_entropy import cross_entropy_bwd, cross_entropy_fwd
from thermokern.ops.softmax_entropy import softmax_entropy_bwd, softmax_entropy_fwd
from thermokern.ops.token_logprobs import token_logprobs_bwd, token_logprobs_fwd

__all__ = ["linear_cross_entropy", "linear_softmax_entropy", "linear_token_logprobs"]

# Bytes of the (rows, V) buffers of one chunk: its logits, over which the row kernels write
# their gradient (the in-place backwards, [Note: in-place backward] in
# csrc/include/thermokern/softmax_entropy_plan.h); with a learnable temperature, whose
# gradient reads both, the logits, their gradient and the product of the two (a third of the
# rows). Small on the CPU, where (128, 32000) float32 keeps the matmuls efficient (each chunk's
# matmuls stream the whole weight: fewer chunks, fewer passes); larger on a GPU, whose matmuls
# need a few thousand rows to fill it. Tests lower them to force many chunks.
CHUNK_BYTES = {"cpu": 16 << 20, "cuda": 512 << 20}
# Bytes of the fp32 product of one slab of the weight gradient of 16-bit weights on CUDA
# (_addmm_fp32).
FP32_SLAB_BYTES = 128 << 20


def _chunk_rows(n: int, vocab: int, dtype: torch.dtype, device: torch.device, buffers: int) -> int:
    budget = CHUNK_BYTES.get(device.type, CHUNK_BYTES["cuda"]) // buffers
    elt = torch.empty((), dtype=dtype).element_size()
    return max(1, min(n, budget // max(vocab * elt, 1)))


def _logits(
    h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor
) -> torch.Tensor:
    """F.linear for a chunk into ``out``: contiguous (rows, V) in the input dtype."""
    torch.mm(h, weight.t(), out=out)
    if bias is not None:
        out += bias
    return out


def head_chunks(hidden, weight, bias, inv_t, vocab: int | None = None, in_place: bool = True):
    """The chunk sweep of the heads (shared with thermokern.distributed's tensor-parallel heads):
    yields ``(rows, h, k, logits)`` per chunk of tokens: the slice of rows, their hidden states,
    their 1/T (the single element, or one per row) and the chunk's contiguous logits. ``vocab``
    is the width the chunk size is computed for (default: the weight's rows; the distributed
    heads pass the widest shard so that every rank cuts the same chunks); ``in_place``: whether
    the caller writes the logits' gradient over them (:func:`logit_grad`), else the chunks are
    cut for three (rows, V) buffers (see CHUNK_BYTES). Every chunk's logits are written into
    the same buffer (no allocation, and no page faults on the CPU, per chunk): the caller is
    done with them, and with a gradient written over them, before it asks for the next chunk."""
    n = hidden.shape[0]
    vocab = weight.shape[0] if vocab is None else vocab
    step = _chunk_rows(n, vocab, hidden.dtype, hidden.device, 1 if in_place else 3)
    buffer = hidden.new_empty((min(step, n), weight.shape[0]))
    for start in range(0, n, step):
        rows = slice(start, min(start + step, n))
        h = hidden[rows]
        k = inv_t if inv_t.numel() == 1 else inv_t[rows]
        yield rows, h, k, _logits(h, weight, bias, buffer[: rows.stop - start])


def logit_grad(bwd, in_place: bool, name: str, logits: torch.Tensor, args: tuple) -> torch.Tensor:
    """A chunk's logit gradient from the row op's backward KernelOp ``bwd`` on backend ``name``
    with ``args``; with ``in_place``, its in-place twin writes it over the chunk's ``logits``
    (which are returned). Shared with thermokern.distributed."""
    if not in_place:
        return bwd(name, *args)
    bwd.twin(name, *args)
    return logits


def _addmm_fp32(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """acc += a @ b with acc in float32 (float64 for float64): 16-bit inputs go through the
    BLAS with an fp32 output where torch offers one (CUDA: ``torch.mm(out_dtype=)``, added a slab
    of acc's rows at a time, so that the fp32 product never exists whole: V x D fp32 is 2 GiB
    at V 128256, D 4096), else as fp32 copies of the chunk."""
    if a.dtype == acc.dtype:
        acc.addmm_(a, b)
    elif a.is_cuda:
        step = max(1, FP32_SLAB_BYTES // (acc.shape[1] * acc.element_size()))
        for start in range(0, acc.shape[0], step):
            rows = slice(start, start + step)
            acc[rows].add_(torch.mm(a[rows], b, out_dtype=acc.dtype))
    else:
        acc.addmm_(a.to(acc.dtype), b.to(acc.dtype))


class HeadGrads:
    """The gradients w.r.t. hidden (per row), weight and bias (fp32 sums) and, for a learnable
    temperature, the temperature per row, filled chunk by chunk (shared with
    thermokern.distributed, where each rank's are its partial sums)."""

    def __init__(self, hidden, weight, bias, needs, per_row_t: bool):
        acc = acc_dtype(weight.dtype)
        self.used = False
        self.hidden = torch.empty_like(hidden) if needs[0] else None
        self.weight = torch.zeros(weight.shape, dtype=acc, device=weight.device) if needs[1] else None
        self.bias = torch.zeros(weight.shape[0], dtype=acc, device=weight.device) if needs[2] else None
        self.temperature = (
            torch.empty(hidden.shape[0], dtype=acc, device=hidden.device) if per_row_t else None
        )

    def add(self, rows: slice, h, weight, logits, grad_logits, inv_t) -> None:
        """Add a chunk's part; ``logits`` is read only for a learnable temperature (otherwise
        the gradient may have been written over it)."""
        if self.hidden is not None:
            torch.mm(grad_logits, weight, out=self.hidden[rows])
        if self.weight is not None:
            _addmm_fp32(self.weight, grad_logits.t(), h)
        if self.bias is not None:
            self.bias += grad_logits.sum(dim=0, dtype=self.bias.dtype)
        if self.temperature is not None:
            # z = x k with k = 1/T: dL/dT = -(k / T) sum_j dL/dz_j x_j = -k sum_j dL/dx_j x_j
            dot = (grad_logits.to(inv_t.dtype) * logits.to(inv_t.dtype)).sum(dim=1)
            self.temperature[rows] = -dot * inv_t

    def scaled(self, g, weight_dtype, bias_dtype):
        """The gradients times the upstream scalar ``g`` (None: 1), in place (the buffers are
        this object's and are used once), in the parameters' dtypes."""

        assert not self.used, "HeadGrads.scaled hands its buffers over: call it once"
        self.used = True

        def s(t, dtype=None):
            if t is None:
                return None
            if g is not None:
                t.mul_(g.to(t.dtype))
            return t if dtype is None else t.to(dtype)

        out = s(self.hidden), s(self.weight, weight_dtype), s(self.bias, bias_dtype), s(self.temperature)
        # Hold no reference to what is returned: autograd hands a gradient that nothing else
        # references over to ``.grad`` as it is, but copies one that something still holds.
        self.hidden = self.weight = self.bias = self.temperature = None
        return out


def _head_rows(kind, hidden, weight, bias, target, inv_t, params, name, grads=None, row_g=None):
    """The forward sweep: the per-row outputs of head ``kind`` ("ce": (N,) losses, "logprobs":
    (2, N) log-probs and entropies, "entropy": (N,)), in the accumulation dtype. With ``grads``
    (a HeadGrads; "ce" only), each chunk's gradients for an upstream gradient ``row_g`` of
    every row's loss are added to it while the chunk's logits are at hand."""
    in_place = grads is None or grads.temperature is None  # T's gradient reads both
    outs = []
    for rows, h, k, logits in head_chunks(hidden, weight, bias, inv_t, in_place=in_place):
        if kind == "ce":
            loss, entropy, shift, log_norm = cross_entropy_fwd(name, logits, target[rows], k, *params)
            outs.append(loss)
            if grads is not None:
                g = row_g.expand(logits.shape[0]).contiguous()
                args = (g, logits, target[rows], k, entropy, shift, log_norm, *params)
                grads.add(
                    rows, h, weight, logits, logit_grad(cross_entropy_bwd, in_place, name, logits, args), k
                )
        elif kind == "logprobs":
            logp, entropy, _, _ = token_logprobs_fwd(name, logits, target[rows], k, params[0])
            outs.append(torch.stack([logp, entropy]))
        else:
            outs.append(softmax_entropy_fwd(name, logits, k)[0])
    if outs:
        return torch.cat(outs, dim=-1)
    return hidden.new_empty((2, 0) if kind == "logprobs" else (0,), dtype=acc_dtype(hidden.dtype))


def _head_grads(kind, grad_out, hidden, weight, bias, target, inv_t, params, name, needs, learn_t):
    """The backward sweep for per-row upstream gradients ``grad_out`` (the shape of
    :func:`_head_rows`' output): each chunk's logits recomputed, (grad hidden, grad weight,
    grad bias, grad T per row), None where not ``needs`` (hidden, weight, bias) / ``learn_t``."""
    grads = HeadGrads(hidden, weight, bias, needs, learn_t)
    acc = acc_dtype(hidden.dtype)
    in_place = not learn_t
    for rows, h, k, logits in head_chunks(hidden, weight, bias, inv_t, in_place=in_place):
        # The row statistics every backward kernel needs are softmax_entropy_fwd's (the
        # cross-entropy and log-prob forwards return the same ones, plus what is not needed).
        stats = softmax_entropy_fwd(name, logits, k)
        if kind == "ce":
            g = grad_out[rows].to(acc).contiguous()
            bwd, args = cross_entropy_bwd, (g, logits, target[rows], k, *stats, *params)
        elif kind == "logprobs":
            g = grad_out[:, rows].to(acc)
            bwd = token_logprobs_bwd
            args = (g[0].contiguous(), g[1].contiguous(), logits, target[rows], k, *stats, params[0])
        else:
            bwd, args = softmax_entropy_bwd, (grad_out[rows].to(acc).contiguous(), logits, k, *stats)
        grads.add(rows, h, weight, logits, logit_grad(bwd, in_place, name, logits, args), k)
    return grads.scaled(None, weight.dtype, None if bias is None else bias.dtype)


def _scalar_loss(hidden, weight, bias, target, inv_t, params, reduction, name, needs, learn_t):
    """The cross-entropy head reduced to a scalar ("sum" or "mean"): ``(loss, grads, row_g)``,
    with ``row_g`` each row's share of the upstream gradient and, when ``needs`` (hidden,
    weight, bias) or ``learn_t`` asks for one, ``grads`` (a HeadGrads) filled for an upstream
    gradient 1 in the same sweep ([Note: when the gradient is computed]), else None."""
    acc = acc_dtype(hidden.dtype)
    grads = HeadGrads(hidden, weight, bias, needs, learn_t) if any(needs) or learn_t else None
    # "mean" counts the rows not ignored (on the device): NaN when there are none, as eager
    count = (target != params[2]).sum().to(acc) if reduction == "mean" else None
    row_g = torch.ones((), dtype=acc, device=hidden.device)
    row_g = row_g / count if count is not None else row_g
    out = _head_rows("ce", hidden, weight, bias, target, inv_t, params, name, grads, row_g)
    loss = out.sum() if count is None else out.sum() / count
    return loss, grads, row_g


class _LinearHead(torch.autograd.Function):
    """One of the three heads over flattened tokens: hidden (N, D), weight (V, D), bias (V,) or
    None, target (N,) int64 or None, temperature per row (N,) (only when it requires grad) or
    None, inv_t (1 or N)."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, temperature, target, inv_t, kind, params, reduction, name):
        needs = ctx.needs_input_grad[:3]
        learn_t = temperature is not None and ctx.needs_input_grad[3]
        # [Note: when the gradient is computed]: now for a scalar loss, else in the backward.
        if kind == "ce" and reduction != "none":
            args = (hidden, weight, bias, target, inv_t, params, reduction, name, needs, learn_t)
            out, grads, row_g = _scalar_loss(*args)
        else:
            out = _head_rows(kind, hidden, weight, bias, target, inv_t, params, name)
            grads = row_g = None
        ctx.kind, ctx.params, ctx.name = kind, params, name
        ctx.weight_dtype = weight.dtype
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.grads, ctx.row_g = grads, row_g
        ctx.save_for_backward(hidden, weight, bias, target, inv_t)  # references: no copies
        return out

    @staticmethod
    def backward(ctx, grad_out):
        none = (None,) * 6
        if ctx.grads is not None and not ctx.grads.used:  # computed in the forward for 1
            gh, gw, gb, gt = ctx.grads.scaled(grad_out.reshape(()), ctx.weight_dtype, ctx.bias_dtype)
            return gh, gw, gb, gt, *none
        hidden, weight, bias, target, inv_t = ctx.saved_tensors
        if ctx.row_g is not None:  # a scalar loss whose forward's gradients were handed over by
            # a first backward (retain_graph=True, gradcheck): recompute them for every row
            grad_out = (grad_out.reshape(()) * ctx.row_g).expand(hidden.shape[0])
        args = (ctx.kind, grad_out, hidden, weight, bias, target, inv_t, ctx.params, ctx.name)
        return *_head_grads(*args, ctx.needs_input_grad[:3], ctx.needs_input_grad[3]), *none


# [Note: the heads under torch.compile]
# _LinearHead keeps Python state between its forward and backward (the gradients the forward
# computed, used once), which dynamo cannot trace. Under torch.compile the heads are instead
# two opaque custom ops, which run the same sweeps on the resolved backend and keep no state:
# thermokern::linear_head gives the head's output and, for a cross-entropy reduced to a scalar,
# its gradients for an upstream 1, computed in the forward sweep as eager does (three matmuls);
# its backward multiplies them by the upstream gradient (out of place: one elementwise pass,
# which eager does in place). Per-row outputs (reduction "none", the log-probs, the entropy)
# come alone, and their backward is thermokern::linear_head_bwd, which recomputes each chunk's
# logits, as eager does.
def _params(kind: str, floats: list[float], ignore_index: int) -> tuple:
    if kind == "ce":
        return floats[0], floats[1], ignore_index, floats[2]
    return (ignore_index,) if kind == "logprobs" else ()


def _grad_shapes(hidden, weight, bias) -> tuple:
    """(shape, dtype) of the gradients w.r.t. hidden, weight, bias and T per row as the sweeps
    make them (HeadGrads): hidden's in its dtype, the others in the accumulation dtype."""
    acc = acc_dtype(hidden.dtype)
    return (hidden.shape, hidden.dtype), (weight.shape, acc), (weight.shape[:1], acc), (hidden.shape[:1], acc)


def _or_empty(hidden, grads) -> tuple:
    return tuple(hidden.new_empty(0) if t is None else t for t in grads)


@torch.library.custom_op("thermokern::linear_head", mutates_args=())
def _linear_head_op(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    temperature: torch.Tensor | None,
    target: torch.Tensor | None,
    inv_t: torch.Tensor,
    kind: str,
    floats: list[float],
    ignore_index: int,
    reduction: str,
    name: str,
    needs: list[bool],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(output, grad hidden, grad weight, grad bias, grad T per row): the per-row outputs of
    :func:`_head_rows`, or for kind "ce" with reduction "mean"/"sum" the loss of
    :func:`_scalar_loss` and the gradients ``needs`` (hidden, weight, bias, T) asks for, for an
    upstream 1 (HeadGrads' dtypes); an empty tensor for each gradient not computed here.
    ``temperature``: T per row, an input only for its gradient."""
    params = _params(kind, floats, ignore_index)
    if kind != "ce" or reduction == "none":
        return _head_rows(kind, hidden, weight, bias, target, inv_t, params, name), *_or_empty(
            hidden, (None,) * 4
        )
    loss, grads, _ = _scalar_loss(
        hidden, weight, bias, target, inv_t, params, reduction, name, needs[:3], needs[3]
    )
    return loss, *_or_empty(hidden, (None,) * 4 if grads is None else grads.scaled(None, None, None))


@_linear_head_op.register_fake
def _(hidden, weight, bias, temperature, target, inv_t, kind, floats, ignore_index, reduction, name, needs):
    n, acc = hidden.shape[0], acc_dtype(hidden.dtype)
    scalar = kind == "ce" and reduction != "none"
    out = hidden.new_empty(() if scalar else (2, n) if kind == "logprobs" else (n,), dtype=acc)
    shapes = _grad_shapes(hidden, weight, bias)
    return out, *(
        hidden.new_empty(s if scalar and need else (0,), dtype=d)
        for need, (s, d) in zip(needs, shapes, strict=True)
    )


@torch.library.custom_op("thermokern::linear_head_bwd", mutates_args=())
def _linear_head_bwd_op(
    grad: torch.Tensor,
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor | None,
    inv_t: torch.Tensor,
    kind: str,
    floats: list[float],
    ignore_index: int,
    name: str,
    needs: list[bool],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad hidden, grad weight, grad bias, grad T per row) of :func:`_head_grads` for the
    per-row upstream gradients ``grad``, in the parameters' dtypes; an empty tensor for each
    that ``needs`` (hidden, weight, bias, T) does not ask for."""
    params = _params(kind, floats, ignore_index)
    return _or_empty(
        hidden,
        _head_grads(kind, grad, hidden, weight, bias, target, inv_t, params, name, needs[:3], needs[3]),
    )


@_linear_head_bwd_op.register_fake
def _(grad, hidden, weight, bias, target, inv_t, kind, floats, ignore_index, name, needs):
    dtypes = (
        hidden.dtype,
        weight.dtype,
        hidden.dtype if bias is None else bias.dtype,
        acc_dtype(hidden.dtype),
    )
    shapes = _grad_shapes(hidden, weight, bias)
    return tuple(
        hidden.new_empty(s if need else (0,), dtype=d)
        for need, (s, _), d in zip(needs, shapes, dtypes, strict=True)
    )


def _linear_head_setup(ctx, inputs, output):
    hidden, weight, bias, _, target, inv_t, kind, floats, ignore_index, reduction, name, needs = inputs
    ctx.scalar = kind == "ce" and reduction != "none"
    ctx.save_for_backward(hidden, weight, bias, target, inv_t, *output[1:])
    ctx.args = (kind, floats, ignore_index, name)
    ctx.needs = needs
    ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype, None)


def _linear_head_backward(ctx, grad, *_):
    asked = list(ctx.needs_input_grad[:4])
    hidden, weight, bias, target, inv_t, *grads = ctx.saved_tensors
    if ctx.scalar:  # computed in the forward for an upstream 1
        if any(a and not n for a, n in zip(asked, ctx.needs, strict=True)):  # never: _run tells it
            raise RuntimeError(
                "thermokern::linear_head: a gradient was asked for that its forward did not compute"
            )
        grads = [(t * grad.to(t.dtype)).to(d or t.dtype) for t, d in zip(grads, ctx.dtypes, strict=True)]
    else:
        grads = torch.ops.thermokern.linear_head_bwd(
            grad, hidden, weight, bias, target, inv_t, *ctx.args, asked
        )
    return *(g if a else None for g, a in zip(grads, asked, strict=True)), *(None,) * 8


_linear_head_op.register_autograd(_linear_head_backward, setup_context=_linear_head_setup)


# ----------------------------------------------------------------------------- arguments
def check_head(hidden, weight, bias, *, weight_name="weight", bias_name="bias", allow_empty=False):
    """The checks of a head's hidden (..., D), weight (V, D) and bias (V,) (shared with
    thermokern.distributed, whose weight and bias are ``weight_shard`` and ``bias_shard`` and
    may have no rows on a rank: ``allow_empty``)."""
    check_float_tensor(hidden, "hidden")
    check_float_tensor(weight, weight_name)
    if hidden.dim() == 0:
        raise ValueError("hidden: expected at least 1 dimension (the hidden size last), got a 0-d tensor")
    if weight.dim() != 2:
        raise ValueError(
            f"{weight_name}: expected a 2-D (vocabulary, hidden) tensor, got shape {tuple(weight.shape)}"
        )
    if weight.shape[1] != hidden.shape[-1]:
        raise ValueError(
            f"{weight_name}: expected (V, {hidden.shape[-1]}) for hidden of size {hidden.shape[-1]}, "
            f"got shape {tuple(weight.shape)}"
        )
    if weight.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{weight_name}: the vocabulary (dim 0) has size 0")
    for t, what in ((weight, weight_name), (bias, bias_name)):
        if t is None:
            continue
        if t.device != hidden.device:
            raise ValueError(
                f"{what}: expected a tensor on {hidden.device} (hidden's device), got {t.device}"
            )
        if t.dtype != hidden.dtype:
            raise TypeError(f"{what}: expected hidden's dtype {hidden.dtype}, got {t.dtype}")
    if bias is not None:
        check_float_tensor(bias, bias_name)
        if tuple(bias.shape) != (weight.shape[0],):
            raise ValueError(f"{bias_name}: expected shape ({weight.shape[0]},), got {tuple(bias.shape)}")


def head_inputs(hidden, target, temperature):
    """The tokens flattened for :class:`_LinearHead` (shared with thermokern.distributed):
    ``(h2, tgt, inv_t, t_rows, out_shape)`` with hidden as (N, D) (a view where the strides
    allow; matmuls read any), the target as (N,) int64 (or None), 1/T as the kernels take it and,
    for a temperature tensor that requires grad, T per row in the accumulation dtype (the input
    autograd differentiates; then inv_t is its detached inverse), else None."""
    out_shape = hidden.shape[:-1]
    h2 = hidden.reshape(-1, hidden.shape[-1])
    tgt = None if target is None else target.reshape(-1).long()
    temperature = check_temperature(temperature, differentiable=True)
    inv_t = inverse_temperature(temperature, out_shape, hidden.dtype, hidden.device)  # also validates
    t_rows = None
    if isinstance(temperature, torch.Tensor) and temperature.requires_grad and torch.is_grad_enabled():
        t_rows = temperature.to(acc_dtype(hidden.dtype)).broadcast_to(out_shape).reshape(-1)
        inv_t = (1.0 / t_rows).detach().contiguous()
    return h2, tgt, inv_t, t_rows, out_shape


def ignore_index_of(kind: str, params: tuple) -> int:
    """The ignore_index among a head's ``params`` ("ce": (beta, eps, ignore_index, zw);
    "logprobs": (ignore_index,); "entropy": none, -100). Shared with thermokern.distributed."""
    if kind == "ce":
        return params[2]
    return params[0] if kind == "logprobs" else -100


def _run(kind, hidden, weight, bias, target, temperature, params, reduction, backend):
    """The checked head: flattens the tokens, resolves the backend, applies _LinearHead."""
    name = _backend.resolve_backend(backend, hidden)
    h2, tgt, inv_t, t_rows, out_shape = head_inputs(hidden, target, temperature)
    ignore_index = ignore_index_of(kind, params)
    if tgt is not None:  # once for all chunks (a CPU kernel would name the row in its chunk)
        check_target_values(tgt, weight.shape[0], ignore_index)
    if not torch.compiler.is_compiling():
        out = _LinearHead.apply(h2, weight, bias, t_rows, tgt, inv_t, kind, params, reduction, name)
        return out, out_shape, tgt
    # [Note: the heads under torch.compile]
    floats = [params[0], params[1], params[3]] if kind == "ce" else []
    needs = [
        t is not None and t.requires_grad and torch.is_grad_enabled() for t in (h2, weight, bias, t_rows)
    ]
    args = (
        h2,
        weight,
        bias,
        t_rows,
        tgt,
        inv_t,
        kind,
        floats,
        ignore_index,
        reduction or "none",
        name,
        needs,
    )
    return torch.ops.thermokern.linear_head(*args)[0], out_shape, tgt


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    entropy_weight: float = 0.0,
    temperature: float | torch.Tensor = 1.0,
    label_smoothing: float = 0.0,
    ignore_index: int = -100,
    reduction: str = "mean",
    z_loss_weight: float = 0.0,
    backend: str = "auto",
) -> torch.Tensor:
    """``entropy_regularized_cross_entropy(F.linear(hidden, weight, bias), target, ...)`` without
    the (N, V) logits: the language-model loss straight from the last hidden states.

    With ``entropy_weight=0`` and ``z_loss_weight=0`` it equals ``F.cross_entropy`` of the
    linear layer's output (and ``F.linear_cross_entropy``). The tokens are processed in chunks
    of bounded scratch; a "mean" or "sum" loss computes its gradients during the forward (three
    matmuls in all), "none" recomputes each chunk's logits in the backward (see the module
    Note).

    Args:
        hidden: (..., D) float32/float64/float16/bfloat16.
        weight: (V, D), hidden's dtype and device (an ``lm_head.weight``).
        target: integer token indices shaped like ``hidden`` without its last dimension.
        bias: optional (V,).
        entropy_weight, temperature, label_smoothing, ignore_index, reduction, z_loss_weight:
            as :func:`thermokern.entropy_regularized_cross_entropy` (per-row and learnable
            temperatures included).
        backend: the backend of the row kernels (``"auto"``, ``"cpu"``, ``"cuda"``,
            ``"triton"``; ``"reference"`` materialises the logits).

    Returns:
        The loss in float32 (float64 for float64), shaped like ``target`` for ``"none"``.
        Differentiable w.r.t. hidden, weight, bias and a temperature tensor; the weight and bias
        gradients are accumulated in fp32.
    """
    check_head(hidden, weight, bias)
    params = check_cross_entropy_args(
        as_logits_view(hidden, weight), target, entropy_weight, label_smoothing, ignore_index, reduction,
        z_loss_weight, name="hidden", classes="hidden size last", class_dim="its last dim",
    )  # fmt: skip
    if _backend.resolve_backend(backend, hidden) == "reference":
        return reference.linear_cross_entropy(
            hidden, weight, target, bias=bias, entropy_weight=params[0], temperature=temperature,
            label_smoothing=params[1], ignore_index=params[2], reduction=reduction, z_loss_weight=params[3],
        )  # fmt: skip
    loss, out_shape, _ = _run("ce", hidden, weight, bias, target, temperature, params, reduction, backend)
    return loss.reshape(out_shape) if reduction == "none" else loss


def linear_token_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    temperature: float | torch.Tensor = 1.0,
    ignore_index: int = -100,
    with_entropy: bool = False,
    backend: str = "auto",
):
    """``token_logprobs(F.linear(hidden, weight, bias), target, ...)`` without the (N, V) logits:
    the log-probs of the sampled tokens (and the entropy) for RL fine-tuning, straight from the
    last hidden states and ``lm_head.weight``.

    Args and returns as :func:`thermokern.token_logprobs`, with ``hidden`` (..., D), ``weight``
    (V, D) and an optional ``bias`` (V,) in place of the logits. The backward recomputes each
    chunk's logits (the log-probs have one upstream gradient per token).
    """
    check_head(hidden, weight, bias)
    check_target(target, as_logits_view(hidden, weight), "hidden", "its last dim")
    ignore_index = check_int(ignore_index, "ignore_index")
    if not isinstance(with_entropy, bool):
        raise TypeError(f"with_entropy: expected a bool, got {type(with_entropy).__name__}")
    if _backend.resolve_backend(backend, hidden) == "reference":
        return reference.linear_token_logprobs(
            hidden, weight, target, bias=bias, temperature=temperature, ignore_index=ignore_index,
            with_entropy=with_entropy,
        )  # fmt: skip
    out, out_shape, tgt = _run(
        "logprobs", hidden, weight, bias, target, temperature, (ignore_index,), None, backend
    )
    logp = out[0].reshape(out_shape)
    if not with_entropy:
        return logp
    entropy = torch.where(tgt != ignore_index, out[1], torch.zeros_like(out[1]))
    return logp, entropy.reshape(out_shape)


def linear_softmax_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    temperature: float | torch.Tensor = 1.0,
    backend: str = "auto",
) -> torch.Tensor:
    """``softmax_entropy(F.linear(hidden, weight, bias))`` over the vocabulary, without the
    (N, V) logits; shaped like ``hidden`` without its last dimension, float32 (float64 for
    float64)."""
    check_head(hidden, weight, bias)
    if _backend.resolve_backend(backend, hidden) == "reference":
        return reference.linear_softmax_entropy(hidden, weight, bias=bias, temperature=temperature)
    out, out_shape, _ = _run("entropy", hidden, weight, bias, None, temperature, (), None, backend)
    return out.reshape(out_shape)


def as_logits_view(hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A zero-size stand-in with the logits' shape and dtype, for the shared target checks
    (also thermokern.distributed's, with a shard's width)."""
    return hidden.new_empty(()).expand(*hidden.shape[:-1], weight.shape[0])

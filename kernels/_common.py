"""The Triton row kernels that softmax_entropy, cross_entropy and token_logprobs share (one
forward, one backward; their launchers are in kernels/<op>.py and go through
:class:`_RowLaunch`), their device helpers, and a few launcher helpers every kernel module uses.

One program per row; each program walks its row in blocks of BLOCK_C columns keeping scalar
online statistics (m, d, s) as in csrc/include/thermokern/row_stats.h, with k = 1/T:
    m = max x,  d = sum e^{k(x-m)},  s = sum k(x-m) e^{k(x-m)},  H = log d - s/d,
    log p = k(x - m) - log d.
k comes from a 1-D accumulation-dtype tensor of 1 element (one 1/T for every row) or N (one
per row): the kernels read ``inv_t_ptr + row * INV_T_STRIDE`` with INV_T_STRIDE 0 or 1.
Row offsets are int64 (rows * stride passes 2^31 for large vocabularies). The row kernels take
their tensors, then (C, row_stride, inv_t_ptr), then the weights and ignore_index, then their
meta-parameters; :class:`_RowLaunch` launches them so. The launchers go through
``torch.library.wrap_triton`` (by way of :func:`_wrap_triton`) so that ``torch.compile`` can
trace them when they run inside a ``triton_op``.

The ``@triton.jit`` helpers here are inlined into the kernels that call them.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys

import torch
import triton
import triton.language as tl

try:  # the class of @triton.jit kernels under TRITON_INTERPRET=1
    from triton.runtime import interpreter as _interpreter
    from triton.runtime.interpreter import InterpretedFunction as _InterpretedFunction
except ImportError:  # pragma: no cover - a Triton without the interpreter
    _interpreter = None
    _InterpretedFunction = ()


def _fix_interpreter_index() -> None:
    """Let the interpreter use a runtime integer argument as an index (``range(0, C, BLOCK)``).

    The interpreter holds such an argument as a 1-element numpy array, and Triton 3.6's
    ``tensor.__index__`` is ``int(array)``, which numpy >= 2.4 refuses for arrays that are not
    0-d ("only 0-dimensional arrays can be converted to Python scalars"; triton-lang/triton
    issue 9171, fixed in later releases by converting the single element). Every kernel here
    loops to a runtime bound, so this installs that conversion after Triton's own patching.
    Same result as a fixed Triton's; nothing changes outside the interpreter.
    """
    patch = getattr(_interpreter, "_patch_lang_tensor", None)
    if patch is None or getattr(patch, "_thermokern_index", False):
        return

    def _patch_lang_tensor(tensor, scope):
        patch(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(())))

    _patch_lang_tensor._thermokern_index = True
    _interpreter._patch_lang_tensor = _patch_lang_tensor


_fix_interpreter_index()

# ----------------------------------------------------------------------------- device helpers


@triton.jit
def _row_start(x_ptr, row_stride, inv_t_ptr, INV_T_STRIDE: tl.constexpr, ACC: tl.constexpr):
    """(row, x_row, inv_t) of this program's row: its index (int64), its first element and its
    1/T (INV_T_STRIDE 0: one 1/T for every row; 1: one per row)."""
    row = tl.program_id(0).to(tl.int64)
    return row, x_ptr + row * row_stride, tl.load(inv_t_ptr + row * INV_T_STRIDE).to(ACC)


@triton.jit
def _row_stats(
    x_row,  # the row's first element, unit stride along C
    C,  # number of classes
    inv_t,  # 1 / temperature, accumulation dtype
    ref,  # with SUM_X: the reference r of sx (accumulation dtype); unused otherwise
    SUM_X: tl.constexpr,  # also accumulate sx = sum_j (x_j - r)
    ACC: tl.constexpr,  # accumulation dtype
    BLOCK_C: tl.constexpr,  # columns per step
):
    """One pass over a row: (m, log d, H, sx), sx 0 without SUM_X."""
    cols = tl.arange(0, BLOCK_C)
    sx = tl.zeros((), ACC)
    m = tl.full((), float("-inf"), ACC)
    d = tl.zeros((), ACC)
    s = tl.zeros((), ACC)
    for c0 in range(0, C, BLOCK_C):
        mask = c0 + cols < C
        x = tl.load(x_row + c0 + cols, mask=mask, other=float("-inf")).to(ACC)
        m_new = tl.maximum(m, tl.max(x, axis=0))
        # Shift by 0 while everything seen is -inf, so that -inf - -inf never appears.
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new).to(ACC)
        delta = (m - m_safe) * inv_t
        alpha = tl.exp(delta)
        s = tl.where(m == float("-inf"), 0.0, (s + delta * d) * alpha).to(ACC)
        d = d * alpha
        y = (x - m_safe) * inv_t  # subtract first: exact for x near the max, whatever T
        e = tl.exp(y)
        d += tl.sum(e, axis=0)
        s += tl.sum(tl.where(x == float("-inf"), 0.0, y * e), axis=0)
        if SUM_X:
            sx += tl.sum(tl.where(mask, x - ref, 0.0), axis=0)
        m = m_new
    log_d = tl.log(d)
    return m, log_d, log_d - s / d, sx


@triton.jit
def _store_row_stats(row, entropy_ptr, shift_ptr, log_norm_ptr, entropy, shift, log_norm):
    """Write the statistics a forward saves for its backward, (entropy, shift, log_norm) of ``row``."""
    tl.store(shift_ptr + row, shift)
    tl.store(log_norm_ptr + row, log_norm)
    tl.store(entropy_ptr + row, entropy)


@triton.jit
def _load_shift_norm(row, shift_ptr, log_norm_ptr, ACC: tl.constexpr):
    """(shift, log_norm) the forward saved for ``row``: with 1/T, all :func:`_log_p` needs."""
    return tl.load(shift_ptr + row).to(ACC), tl.load(log_norm_ptr + row).to(ACC)


@triton.jit
def _log_p(x, shift, log_norm, inv_t):
    """log p = k(x - m) - log d from the statistics the forward saved."""
    return (x - shift) * inv_t - log_norm


@triton.jit
def _unless_p_zero(log_p, value):
    """``value`` where p > 0, else 0: a term carrying a factor p = 0 must not become 0 * -inf."""
    return tl.where(log_p == float("-inf"), 0.0, value)


@triton.jit
def _target(x_row, target_ptr, row, C, ACC: tl.constexpr):
    """(target, in range, x_target) of a row; an out-of-range target reads nothing (x 0)."""
    tgt = tl.load(target_ptr + row).to(tl.int64)
    in_range = (tgt >= 0) & (tgt < C)
    x_y = tl.load(x_row + tl.where(in_range, tgt, 0), mask=in_range, other=0.0).to(ACC)
    return tgt, in_range, x_y


@triton.jit
def _per_target(value, tgt, in_range, ignore_index, ACC: tl.constexpr):
    """A per-row output of a row op with one target: ``value``, 0 on a row whose target is
    ignore_index, NaN for any other out-of-range target (whose logit was not read)."""
    return tl.where(tgt == ignore_index, 0.0, tl.where(in_range, value, float("nan"))).to(ACC)


@triton.jit
def _store_row_grad(
    x_row, g_row, C, tgt, ignore_index, inv_t, shift, log_norm, scale, w0, w1, on_target, off_target,
    HAS_TARGET: tl.constexpr, HAS_W1: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """The gradient of a row-loss, in one pass over the row:
    g_j = scale (p_j (w0 + w1 log p_j) - on_target [j = target] - off_target), with p from the
    saved statistics (w1 only with HAS_W1; a term carrying p_j = 0 is 0). With HAS_TARGET, 0 on
    a row whose target is ignore_index and NaN for an out-of-range target (whose logits are not
    read); without, every row is live and the target terms are absent."""
    cols = tl.arange(0, BLOCK_C)
    out_t = g_row.dtype.element_ty
    if HAS_TARGET:
        live = (tgt >= 0) & (tgt < C) & (tgt != ignore_index)
        dead = tl.where(tgt == ignore_index, 0.0, float("nan")).to(ACC)
    for c0 in range(0, C, BLOCK_C):
        mask = c0 + cols < C
        if HAS_TARGET:
            x = tl.load(x_row + c0 + cols, mask=mask & live, other=0.0).to(ACC)
        else:
            x = tl.load(x_row + c0 + cols, mask=mask, other=0.0).to(ACC)
        logp = _log_p(x, shift, log_norm, inv_t)
        if HAS_W1:
            pw = tl.exp(logp) * (w0 + w1 * logp)
        else:
            pw = tl.exp(logp) * w0
        gj = _unless_p_zero(logp, pw)
        if HAS_TARGET:
            gj = gj - tl.where(c0 + cols == tgt, on_target, 0.0) - off_target
        g = scale * gj
        if HAS_TARGET:
            g = tl.where(live, g, dead)
        tl.store(g_row + c0 + cols, g.to(out_t), mask=mask)


# ----------------------------------------------------------------------------- the row kernels
# One forward and one backward kernel serve the three row ops; OUTPUT selects the op's
# per-row output (constexpr: each op compiles only its own branches):
#   OUTPUT_NONE:  softmax_entropy, no target, no output beyond (entropy, shift, log_norm);
#   OUTPUT_LOSS:  cross_entropy, loss = CE - beta H + zw lse^2 (kernels/cross_entropy.py);
#   OUTPUT_LOGP:  token_logprobs, log p of the target = -CE without the weights.
# The backward forms g_j = a dCE/dx_j + b dH/dx_j per row, with
#   dCE/dx_j = k [p_j (1 + 2 zw lse) - (1 - eps) [j = y] - eps / C],   dH/dx_j = -k p_j (log p_j + H):
#   softmax_entropy a = 0, b = g;  cross_entropy a = g, b = -beta g;  token_logprobs a = -g, b = g_H.
OUTPUT_NONE = tl.constexpr(0)
OUTPUT_LOSS = tl.constexpr(1)
OUTPUT_LOGP = tl.constexpr(2)
# The OUTPUT of each row op, by the name _RowLaunch takes.
_OUTPUTS = {"entropy": OUTPUT_NONE.value, "loss": OUTPUT_LOSS.value, "logp": OUTPUT_LOGP.value}


@triton.jit
def _row_fwd_kernel(
    x_ptr,  # (N, C) logits, unit stride along C
    target_ptr,  # (N,) int64 target class of each row (read unless OUTPUT_NONE)
    out_ptr,  # (N,) out: the loss or log p of the target, accumulation dtype (unless OUTPUT_NONE)
    entropy_ptr,  # (N,) out: entropy of softmax(k x), accumulation dtype
    shift_ptr,  # (N,) out: the shift m (the row maximum, input units), accumulation dtype
    log_norm_ptr,  # (N,) out: log sum e^{k(x - m)}, accumulation dtype
    C,  # number of classes
    row_stride,  # elements between rows of x
    inv_t_ptr,  # (1,) or (N,) 1 / temperature, accumulation dtype
    beta_ptr,  # (1,) entropy weight, accumulation dtype (read only with HAS_ENTROPY)
    eps_ptr,  # (1,) label smoothing, accumulation dtype (read only with HAS_SMOOTHING)
    zw_ptr,  # (1,) z-loss weight, accumulation dtype (read only with HAS_Z_LOSS)
    ignore_index,  # target value of rows whose output is 0
    INV_T_STRIDE: tl.constexpr,  # 0: one 1/T for every row; 1: one per row
    OUTPUT: tl.constexpr,  # OUTPUT_NONE, OUTPUT_LOSS or OUTPUT_LOGP
    HAS_SMOOTHING: tl.constexpr,  # eps != 0: also sum the row (the mean_j z_j term)
    HAS_ENTROPY: tl.constexpr,  # beta != 0: subtract beta H
    HAS_Z_LOSS: tl.constexpr,  # zw != 0: add zw lse^2
    ACC: tl.constexpr,  # accumulation dtype (float32, or float64 for float64 input)
    BLOCK_C: tl.constexpr,  # columns per step
):
    row, x_row, inv_t = _row_start(x_ptr, row_stride, inv_t_ptr, INV_T_STRIDE, ACC)
    if OUTPUT == OUTPUT_NONE:
        m, log_d, h, _ = _row_stats(x_row, C, inv_t, 0.0, SUM_X=False, ACC=ACC, BLOCK_C=BLOCK_C)
    else:
        tgt, in_range, x_y = _target(x_row, target_ptr, row, C, ACC)  # out of range: NaN below
        # Reference the smoothing sum is taken against: x_y when finite (differences near the
        # target are exact), else 0 so that an infinite x_y never meets itself (inf - inf).
        ref = tl.where(tl.abs(x_y) < float("inf"), x_y, 0.0).to(ACC)
        # sx = sum_j (x_j - ref), only with HAS_SMOOTHING
        m, log_d, h, sx = _row_stats(x_row, C, inv_t, ref, SUM_X=HAS_SMOOTHING, ACC=ACC, BLOCK_C=BLOCK_C)
        if HAS_SMOOTHING:
            eps = tl.load(eps_ptr).to(ACC)
            mean_diff = m - ref - sx / C  # m - mean_j x_j
            loss = log_d + inv_t * ((1.0 - eps) * (m - x_y) + eps * mean_diff)
        else:
            loss = log_d + inv_t * (m - x_y)
        if HAS_ENTROPY:
            loss -= tl.load(beta_ptr).to(ACC) * h
        if HAS_Z_LOSS:
            lse = m * inv_t + log_d
            loss += tl.load(zw_ptr).to(ACC) * lse * lse
        if OUTPUT == OUTPUT_LOGP:  # log p_y = k (x_y - m) - log d, exactly -loss
            loss = -loss
        tl.store(out_ptr + row, _per_target(loss, tgt, in_range, ignore_index, ACC))
    _store_row_stats(row, entropy_ptr, shift_ptr, log_norm_ptr, h, m, log_d)


@triton.jit
def _row_bwd_kernel(
    grad_ptr,  # (N,) upstream gradient of the op's first output (H, loss or log p), acc dtype
    grad_entropy_ptr,  # (N,) upstream gradient of the entropy (read only with HAS_ENTROPY_GRAD)
    x_ptr,  # (N, C) logits, unit stride along C
    target_ptr,  # (N,) int64 target class of each row (read unless OUTPUT_NONE)
    entropy_ptr,  # (N,) entropy saved by the forward, accumulation dtype
    shift_ptr,  # (N,) shift saved by the forward
    log_norm_ptr,  # (N,) log-normaliser saved by the forward
    grad_x_ptr,  # (N, C) out, contiguous, input dtype (may be x_ptr: in place)
    C,  # number of classes
    row_stride,  # elements between rows of x
    inv_t_ptr,  # (1,) or (N,) 1 / temperature, accumulation dtype
    beta_ptr,  # (1,) entropy weight, accumulation dtype (read only with HAS_ENTROPY)
    eps_ptr,  # (1,) label smoothing, accumulation dtype (read only with HAS_SMOOTHING)
    zw_ptr,  # (1,) z-loss weight, accumulation dtype (read only with HAS_Z_LOSS)
    ignore_index,  # target value of rows that get a zero gradient
    INV_T_STRIDE: tl.constexpr,  # 0: one 1/T for every row; 1: one per row
    OUTPUT: tl.constexpr,  # OUTPUT_NONE, OUTPUT_LOSS or OUTPUT_LOGP
    HAS_SMOOTHING: tl.constexpr,  # eps != 0
    HAS_ENTROPY: tl.constexpr,  # beta != 0
    HAS_Z_LOSS: tl.constexpr,  # zw != 0
    HAS_ENTROPY_GRAD: tl.constexpr,  # grad_entropy given (OUTPUT_LOGP): add its term
    HAS_W1: tl.constexpr,  # b may be nonzero: OUTPUT_NONE, HAS_ENTROPY or HAS_ENTROPY_GRAD
    ACC: tl.constexpr,  # accumulation dtype
    BLOCK_C: tl.constexpr,  # columns per step
):
    row, x_row, inv_t = _row_start(x_ptr, row_stride, inv_t_ptr, INV_T_STRIDE, ACC)
    mx, ln = _load_shift_norm(row, shift_ptr, log_norm_ptr, ACC)
    g = tl.load(grad_ptr + row).to(ACC)
    h = tl.load(entropy_ptr + row).to(ACC)
    # The per-row coefficients a (of dCE/dx) and b (of dH/dx); see above.
    if OUTPUT == OUTPUT_NONE:
        a = tl.zeros((), ACC)
        b = g
        tgt = tl.zeros((), tl.int64)
    else:
        tgt = tl.load(target_ptr + row).to(tl.int64)
        a = -g if OUTPUT == OUTPUT_LOGP else g
        b = tl.zeros((), ACC)
        if HAS_ENTROPY:
            b = -tl.load(beta_ptr).to(ACC) * g
        if HAS_ENTROPY_GRAD:
            b = tl.load(grad_entropy_ptr + row).to(ACC)
    # g_j = k [p_j (a (1 + 2 zw lse) - b H - b log p_j) - a (1 - eps) [j = y] - a eps / C]
    w0 = a
    if HAS_Z_LOSS:
        w0 += 2.0 * a * tl.load(zw_ptr).to(ACC) * (mx * inv_t + ln)
    w0 -= b * h
    if HAS_SMOOTHING:
        eps = tl.load(eps_ptr).to(ACC)
        on_target = a * (1.0 - eps)
        off_target = a * eps / C
    else:
        on_target = a
        off_target = tl.zeros((), ACC)
    _store_row_grad(
        x_row, grad_x_ptr + row * C, C, tgt, ignore_index, inv_t, mx, ln, inv_t, w0, -b, on_target, off_target,
        OUTPUT != OUTPUT_NONE, HAS_W1, ACC, BLOCK_C,
    )  # fmt: skip


# ----------------------------------------------------------------------------- launcher helpers


def launcher(fn):
    """Run a launcher with the device of its first tensor argument (or of the first tensor in
    its first list argument) as the current CUDA device.

    Triton compiles for, and launches on, the *current* device: a tensor on ``cuda:1`` while
    ``cuda:0`` is current would otherwise run in the wrong context.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        device = None
        for a in args:
            if isinstance(a, (list, tuple)) and a and isinstance(a[0], torch.Tensor):
                a = a[0]
            if isinstance(a, torch.Tensor):
                device = a.device
                break
        guard = (
            torch.cuda.device(device)
            if device is not None and device.type == "cuda"
            else contextlib.nullcontext()
        )
        with guard:
            return fn(*args, **kwargs)

    return wrapper


def in_place_twin(fn):
    """The launcher of an op's in-place twin ``<name>_`` (a row op's backward writing the
    gradient over its logits, ``langevin_step_``): ``fn`` (which takes the same arguments and
    ``in_place``) with ``in_place=True``, returning nothing."""

    @functools.wraps(fn)
    def twin(*args) -> None:
        fn(*args, in_place=True)

    twin.__name__ = twin.__qualname__ = fn.__name__ + "_"
    return twin


def _poison(*tensors: torch.Tensor) -> None:
    """Fill fresh outputs with NaN when the tests ask for it (thermokern._C._set_poison_outputs).

    The switch is read from the extension module when it is loaded; kernels/ imports nothing
    from thermokern.
    """
    ext = sys.modules.get("thermokern._C")
    if ext is not None and ext._poison_outputs():
        for t in tensors:
            t.fill_(float("nan"))


def _empty(shape, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A new output tensor, poisoned (see :func:`_poison`)."""
    out = torch.empty(shape, device=device, dtype=dtype)
    _poison(out)
    return out


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _wrap_triton(kernel):
    """``torch.library.wrap_triton(kernel)``, or ``kernel`` itself when the interpreter made it.

    Under TRITON_INTERPRET=1 ``@triton.jit`` gives an ``InterpretedFunction``, which recent torch's
    wrap_triton hands back as is but older torch's (2.11) rejects ("wrap_triton only works on
    functions annotated with triton.jit"); doing the same here works with both.
    """
    if isinstance(kernel, _InterpretedFunction):
        return kernel
    return torch.library.wrap_triton(kernel)


def _block_and_warps(C: int) -> tuple[int, int]:
    # The interpreter runs each program as numpy calls: the larger the block, the fewer calls.
    cap = 16384 if _interpreting() else 4096
    block = min(triton.next_power_of_2(max(C, 1)), cap)
    warps = 4 if block <= 1024 else 8
    return block, warps


def _check_target(target: torch.Tensor, n: int) -> torch.Tensor:
    """The (n,) class indices of a row op with one target per row, as int64 the kernels read."""
    if target.shape != (n,):
        raise ValueError(f"target: expected shape ({n},), got {tuple(target.shape)}")
    return target.to(torch.int64).contiguous()


def _acc(dtype: torch.dtype):
    return (torch.float64, tl.float64) if dtype == torch.float64 else (torch.float32, tl.float32)


def _inv_t_arg(inv_t: torch.Tensor, n: int, acc_t: torch.dtype) -> tuple[torch.Tensor, int]:
    """``inv_t`` as the kernels read it, with its INV_T_STRIDE (0: shared, 1: per row).

    ``inv_t`` is a 1-D tensor of 1/T in the accumulation dtype (a Python float would reach the
    kernel as fp32 and cost float64 inputs 1e-8 of relative accuracy), with 1 or ``n`` elements.
    A numel-1 tensor is shared by every row, also when ``n == 1``.
    """
    if inv_t.dim() != 1 or inv_t.numel() not in (1, n):
        raise ValueError(f"inv_t: expected a 1-D tensor of 1 or {n} elements, got shape {tuple(inv_t.shape)}")
    if inv_t.dtype != acc_t:
        raise TypeError(f"inv_t: expected dtype {acc_t}, got {inv_t.dtype}")
    if inv_t.numel() == 1:
        return inv_t, 0
    return inv_t.contiguous(), 1


def _acc_scalar(value: float, acc_t: torch.dtype, device: torch.device) -> torch.Tensor:
    # torch.full: a fill kernel, no host-to-device copy (no sync; capturable in CUDA graphs).
    return torch.full((1,), value, dtype=acc_t, device=device)


class _RowLaunch:
    """The launch of the row kernels (:func:`_row_fwd_kernel`, :func:`_row_bwd_kernel`) for one
    row op over (N, C) ``logits`` (unit stride along C) and 1/T ``inv_t`` (see
    :func:`_inv_t_arg`): one program per row.

    ``output``: the op's per-row output, ``"entropy"`` (softmax_entropy: none beyond the
    statistics), ``"loss"`` (cross_entropy) or ``"logp"`` (token_logprobs). ``target``: the (N,)
    class indices of the ops with a target, checked and held in the int64 the kernels read.
    The float weights reach the kernels as 1-element accumulation-dtype tensors (a Python float
    would be typed fp32 and cost float64 inputs 1e-8 of relative accuracy); a weight that is 0
    is not materialised: its HAS_* flag is off and the kernels never read it.
    """

    def __init__(
        self, output: str, logits: torch.Tensor, inv_t: torch.Tensor, target: torch.Tensor | None = None,
        ignore_index: int = -100, entropy_weight: float = 0.0, label_smoothing: float = 0.0,
        z_loss_weight: float = 0.0,
    ):  # fmt: skip
        self.logits = logits
        self.N, self.C = logits.shape
        self.acc_t, acc_tl = _acc(logits.dtype)
        self.inv_t, inv_t_stride = _inv_t_arg(inv_t, self.N, self.acc_t)
        self.has_target = output != "entropy"
        # A pointer the kernels never read (no target; a zero weight): any tensor of the row op's.
        self.target = _check_target(target, self.N) if self.has_target else self.inv_t
        self.ignore_index = int(ignore_index)
        beta, eps, zw = float(entropy_weight), float(label_smoothing), float(z_loss_weight)
        self.weights = tuple(
            _acc_scalar(v, self.acc_t, logits.device) if v != 0.0 else self.inv_t for v in (beta, eps, zw)
        )
        block, warps = _block_and_warps(self.C)
        self.meta = {
            "INV_T_STRIDE": inv_t_stride, "OUTPUT": _OUTPUTS[output], "HAS_SMOOTHING": eps != 0.0,
            "HAS_ENTROPY": beta != 0.0, "HAS_Z_LOSS": zw != 0.0, "ACC": acc_tl, "BLOCK_C": block,
            "num_warps": warps,
        }  # fmt: skip

    def _launch(self, kernel, tensors: tuple, **flags) -> None:
        """``kernel(*tensors, C, row stride, inv_t, beta, eps, zw, ignore_index, **meta)`` over
        the rows (no launch when there are none)."""
        if self.N == 0:
            return
        _wrap_triton(kernel)[(self.N,)](
            *tensors, self.C, self.logits.stride(0), self.inv_t, *self.weights, self.ignore_index,
            **flags, **self.meta,
        )  # fmt: skip

    def forward(self) -> tuple[torch.Tensor, ...]:
        """The forward's per-row outputs, (N,) in the accumulation dtype: (entropy, shift,
        log_norm), after the op's own output (loss or logp) when it has one."""
        outputs = tuple(_empty(self.N, self.acc_t, self.logits.device) for _ in range(3 + self.has_target))
        out = outputs[0]  # never written without a target
        self._launch(_row_fwd_kernel, (self.logits, self.target, out, *outputs[-3:]))
        return outputs

    def backward(
        self, grad: torch.Tensor, entropy: torch.Tensor, shift: torch.Tensor, log_norm: torch.Tensor,
        grad_entropy: torch.Tensor | None = None, in_place: bool = False,
    ) -> torch.Tensor:  # fmt: skip
        """The gradient of the logits, (N, C), contiguous, in their dtype, from the (N,) upstream
        gradient of the op's first output (and of its entropy, ``grad_entropy``, for logp) and
        the statistics the forward returned.

        ``in_place``: write it over the logits instead (they must be contiguous; the kernel reads
        x_j before it writes g_j there and nothing of the row after that).
        """
        if not in_place:
            grad_x = _empty((self.N, self.C), self.logits.dtype, self.logits.device)
        elif not self.logits.is_contiguous():
            raise ValueError(
                "logits: the in-place backward writes the gradient over the logits, which must be "
                f"contiguous, got strides {self.logits.stride()}"
            )
        else:
            grad_x = self.logits
        grad = grad.to(self.acc_t).contiguous()
        has_entropy_grad = grad_entropy is not None
        grad_entropy = grad_entropy.to(self.acc_t).contiguous() if has_entropy_grad else grad
        saved = (entropy.contiguous(), shift.contiguous(), log_norm.contiguous())
        has_w1 = not self.has_target or self.meta["HAS_ENTROPY"] or has_entropy_grad
        self._launch(
            _row_bwd_kernel, (grad, grad_entropy, self.logits, self.target, *saved, grad_x),
            HAS_ENTROPY_GRAD=has_entropy_grad, HAS_W1=has_w1,
        )  # fmt: skip
        return grad_x

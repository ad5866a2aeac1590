"""The language-model heads from hidden states (``ops/linear.py``): ``linear_cross_entropy``
(the mean LM loss, beta = 0: what every fused head computes),
``linear_entropy_regularized_cross_entropy`` (the same with the entropy term, beta =
``ENTROPY_WEIGHT``: thermokern and eager only) and ``linear_token_logprobs`` (the log-probs of
the targets, one per token).

A shape is (tokens N, hidden D, vocabulary V). The input ``x`` is the hidden states (N, D);
the weight (V, D) and the uniformly random targets (N,) belong to the case and are found from
``x`` (:func:`case`); the weight is the op's other differentiable tensor (``OpSpec.leaves``),
so ``fwd+bwd`` times the gradients w.r.t. hidden and weight and checks both against float64.
``logits = x @ weight.T`` ~ N(0, 2^2) like the row ops' logits.

Providers: thermokern's backends; ``eager``, the materialised path (``F.linear``, then
``F.cross_entropy`` / ``log_softmax`` and ``gather`` on the float32 logits, the entropy term
written out); ``torch_chunked``, ``F.linear_cross_entropy`` on its chunked path
(``options=LinearCrossEntropyOptions()``) when this torch has it; on a GPU Liger-Kernel's
fused linear cross-entropy and Apple's Cut Cross-Entropy when installed (never required);
``matmuls``, the bare matmuls of the head (a floor, not a loss: no error column).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

import thermokern
from thermokern import reference

from ..providers import (
    Fn,
    Provider,
    backends,
    compile_provider,
    eager_provider,
    thermokern_compile_provider,
    thermokern_provider,
)
from ..registry import OpSpec, register
from ._rows import LOGIT_SCALE, acc_row_grad, logit_dtypes

ENTROPY_WEIGHT = 0.1
DIMS = ("tokens", "hidden", "vocab")


# ============================================================================ the case
@dataclasses.dataclass
class Case:
    """The weight and targets that go with hidden states of one (N, D, V, dtype, device, seed)."""

    key: tuple
    weight: torch.Tensor
    target: torch.Tensor


_CASES: list[Case] = []  # the current case only: a new one frees the previous weight


def _split(shape) -> tuple[int, int, int]:
    if len(shape) != len(DIMS):
        raise ValueError(f"shape: expected {' x '.join(DIMS)} (3 dimensions), got {tuple(shape)}")
    n, d, v = (int(s) for s in shape)
    return n, d, v


def make_input(shape, dtype, device, gen) -> torch.Tensor:
    """Hidden states (N, D) ~ N(0, 1); the weight (V, D) ~ N(0, (2 / sqrt(D))^2) and the targets
    of the case are drawn once per case from the generator's seed (the same for every input
    copy and for every op at this case)."""
    n, d, v = _split(shape)
    device = torch.device(device)
    seed = gen.initial_seed()
    key = (n, d, v, dtype, device, seed)
    if not _CASES or _CASES[0].key != key:
        _CASES.clear()
        wgen = torch.Generator(device=device).manual_seed(seed + 1)
        w = torch.randn(v, d, generator=wgen, device=device, dtype=torch.float32) * (
            LOGIT_SCALE / math.sqrt(d)
        )
        t = torch.randint(0, v, (n,), generator=wgen, device=device)
        _CASES.append(Case(key, w.to(dtype), t))
    return torch.randn(n, d, generator=gen, device=device, dtype=torch.float32).to(dtype)


def case(x: torch.Tensor) -> Case:
    """The case of hidden states ``x`` made by :func:`make_input`."""
    c = _CASES[0] if _CASES else None
    if c is None or tuple(x.shape) != c.key[:2] or x.dtype != c.weight.dtype or x.device != c.weight.device:
        raise LookupError(f"no linear-head case for hidden states {tuple(x.shape)} {x.dtype} on {x.device}")
    return c


def leaves(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return (case(x).weight,)


def input_bytes(shape, dtype) -> int:
    """Bytes of the hidden states (the copy baseline's size)."""
    n, d, _ = _split(shape)
    return n * d * torch.empty((), dtype=dtype).element_size()


def min_bytes(shape, dtype, mode) -> int:
    """Read hidden and weight once (``fwd``); read them twice and write their gradients
    (``fwd+bwd``). Targets and per-token values are ignored (D times smaller)."""
    n, d, v = _split(shape)
    once = (n + v) * d * torch.empty((), dtype=dtype).element_size()
    return once if mode == "fwd" else 3 * once


def scalar_grad(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The upstream gradient of a mean loss: 1 (``loss.backward()``), float32 like the loss."""
    return torch.ones((), device=x.device, dtype=torch.float32)


def shapes(device: str, quick: bool) -> list[tuple[int, ...]]:
    """The issue's shapes in full runs: CPU 2048 x 1024 x 32000, GPU 8192 x 4096 x 128256
    (a Llama-3 8B head); ``--quick`` uses fewer tokens."""
    if torch.device(device).type == "cuda":
        return [(4096, 4096, 128256)] if quick else [(8192, 4096, 128256)]
    return [(512, 1024, 32000)] if quick else [(2048, 1024, 32000)]


# ============================================================================ float64 reference
def _reference_chunks(
    x: torch.Tensor, grad: torch.Tensor | None, mode: str, rows_fn: Callable, reduced: bool
) -> Iterator[tuple[slice, torch.Tensor]]:
    """float64 output or joined gradient (hidden, then weight) of ``rows_fn(h, w, t) -> (r,)``,
    over chunks of tokens whose float64 logits stay small; a reduced op is the mean over tokens."""
    c = case(x)
    h = x.detach()
    n, d = h.shape
    backward = mode != "fwd"
    w = c.weight.detach().to(torch.float64).requires_grad_(backward)
    step = max(1, ((1 << 26) if h.is_cuda else (1 << 23)) // w.shape[0])  # float64 logits per chunk
    total = torch.zeros((), dtype=torch.float64, device=h.device)
    g = grad.to(torch.float64) if backward else None
    grads = []
    for r0 in range(0, n, step):
        sl = slice(r0, min(r0 + step, n))
        hc = h[sl].to(torch.float64).requires_grad_(backward)
        with torch.set_grad_enabled(backward):
            out = rows_fn(hc, w, c.target[sl])
        if not backward:
            if reduced:
                total += out.sum()
            else:
                yield sl, out
            continue
        (out.sum() * (g / n) if reduced else (out * g[sl]).sum()).backward()
        grads.append(hc.grad)
    if not backward:
        if reduced:
            yield slice(0, 1), (total / n).reshape(1)
        return
    yield slice(0, n * d), torch.cat(grads).reshape(-1)
    yield slice(n * d, n * d + w.numel()), w.grad.reshape(-1)


# ============================================================================ providers
class _Matmuls(torch.autograd.Function):
    """The matmuls of a head and nothing else: logits = h W^T in the forward; grad h = logits W
    and grad W = logits^T h in the backward (the logits stand in for their gradient)."""

    @staticmethod
    def forward(ctx, h, w, per_row: bool):
        logits = h @ w.t()
        ctx.logits = logits if any(ctx.needs_input_grad[:2]) else None  # kept for the backward
        ctx.save_for_backward(h, w)
        return logits.new_zeros(h.shape[0] if per_row else (), dtype=torch.float32)

    @staticmethod
    def backward(ctx, grad_out):
        h, w = ctx.saved_tensors
        logits = ctx.logits
        return logits @ w, logits.t() @ h, None


def matmuls_provider(per_row: bool) -> Provider:
    def make() -> Fn:
        return lambda x: _Matmuls.apply(x, case(x).weight, per_row)

    return Provider("matmuls", make, kind="baseline", exact=False)


def _torch_chunked_available() -> bool:
    return hasattr(F, "linear_cross_entropy") and hasattr(torch.nn, "LinearCrossEntropyOptions")


def _liger_loss() -> Callable:
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    loss_fn = LigerFusedLinearCrossEntropyLoss()

    def fn(x: torch.Tensor) -> torch.Tensor:
        c = case(x)
        out = loss_fn(c.weight, x, c.target)
        return (out[0] if isinstance(out, tuple) else out).float()

    return fn


def _cce(per_row: bool) -> Callable[[], Fn]:
    def make() -> Fn:
        from cut_cross_entropy import linear_cross_entropy as cce

        def fn(x: torch.Tensor) -> torch.Tensor:
            c = case(x)
            if per_row:
                return -cce(x, c.weight, c.target, reduction="none").float()
            return cce(x, c.weight, c.target).float()

        return fn

    return make


PEER_NOTES = {
    "liger": "liger: liger_kernel's LigerFusedLinearCrossEntropyLoss() (mean; its weight gradient "
    "accumulates in the weight's dtype)",
    "cce": "cce: cut_cross_entropy.linear_cross_entropy with its defaults (impl 'cce', "
    "filter_eps 'auto': gradient filtering)",
}


def head_providers(
    device: str,
    thermokern_fn: Callable[[torch.Tensor, str], torch.Tensor],
    eager_fn: Fn,
    *,
    per_row: bool,
    peers: bool,
    compiled: bool = False,
) -> tuple[list[Provider], list[str]]:
    """thermokern's backends, eager, the peers computing the same function (``peers``: the
    loss without an entropy term), and the matmul floor; with notes. ``compiled``: also the
    first backend inside torch.compile and compiled eager (each compiles per case and mode: one
    op has them, so that a quick GPU run stays short)."""
    names, notes = backends(device)
    provs = [thermokern_provider(b, thermokern_fn) for b in names]
    if compiled and names:
        provs.append(thermokern_compile_provider(names[0], thermokern_fn))
        notes.append(
            f"{names[0]}+compile: the head inside torch.compile (its custom ops, [Note: the heads "
            "under torch.compile])"
        )
    provs.append(eager_provider(eager_fn))
    if compiled:
        provs.append(compile_provider(eager_fn))
        notes.append("compile: torch.compile of eager (the logits materialised)")
    kind = torch.device(device).type
    if peers:
        if _torch_chunked_available():
            opts = torch.nn.LinearCrossEntropyOptions()

            def torch_chunked(x: torch.Tensor) -> torch.Tensor:
                c = case(x)
                if per_row:
                    return -F.linear_cross_entropy(
                        x, c.weight, c.target, reduction="none", options=opts
                    ).float()
                return F.linear_cross_entropy(x, c.weight, c.target, options=opts).float()

            provs.append(Provider("torch_chunked", lambda: torch_chunked, kind="external"))
            notes.append(
                "torch_chunked: F.linear_cross_entropy(..., options=LinearCrossEntropyOptions()), its "
                "chunked path"
                + (", reduction='none', negated" if per_row else "")
                + " (options=None is the materialised path, the same computation as eager)"
            )
        else:
            notes.append(
                f"torch_chunked: this torch ({torch.__version__}) has no F.linear_cross_entropy options"
            )
        for name, module, make in (
            ("liger", "liger_kernel", None if per_row else _liger_loss),
            ("cce", "cut_cross_entropy", _cce(per_row)),
        ):
            if make is None:
                notes.append(f"{name}: not used for per-token outputs (a mean loss only)")
            elif importlib.util.find_spec(module) is None:
                notes.append(f"{name}: not installed")
            elif kind != "cuda":
                notes.append(f"{name}: installed but GPU-only, skipped on {kind}")
            else:
                provs.append(Provider(name, make, kind="external"))
                notes.append(PEER_NOTES[name])
    provs.append(matmuls_provider(per_row))
    notes.append(
        "matmuls: the head's bare matmuls (fwd: logits = h W^T; fwd+bwd: also logits W and logits^T h), "
        "a floor for any head that computes the logits; not a loss, no error"
    )
    notes.append(
        "input: hidden (N, D); the weight (V, D) is differentiated too (fwd+bwd times and checks the "
        "gradients w.r.t. hidden and weight); GB/s counts reading hidden and weight (twice for "
        "fwd+bwd, plus writing their gradients): matmul-bound, so far below the copy bandwidth; "
        "peak memory includes the returned gradients"
    )
    return provs, notes


def _spec(name: str, providers, rows_fn, reduced: bool, params: dict) -> OpSpec:
    return register(
        OpSpec(
            name=name,
            providers=providers,
            make_input=make_input,
            make_grad=scalar_grad if reduced else acc_row_grad,
            min_bytes=min_bytes,
            input_bytes=input_bytes,
            reference_chunks=lambda x, grad, mode: _reference_chunks(x, grad, mode, rows_fn, reduced),
            default_shapes=shapes,
            default_dtypes=logit_dtypes,
            params={"shape": " x ".join(DIMS), "target": "uniform random", **params},
            reduced=reduced,
            leaves=leaves,
            shape_dims=DIMS,
        )
    )


# ============================================================================ linear_cross_entropy
def eager_ce(x: torch.Tensor, entropy_weight: float = 0.0) -> torch.Tensor:
    """The materialised head: F.linear, F.cross_entropy of the float32 logits (mean), minus
    beta times the mean entropy -(p * log p).sum(-1) when beta != 0."""
    c = case(x)
    logits = F.linear(x, c.weight).float()
    loss = F.cross_entropy(logits, c.target)
    if entropy_weight:
        lp = torch.log_softmax(logits, -1)
        loss = loss - entropy_weight * (-(lp.exp() * lp).sum(-1)).mean()
    return loss


def _ce_rows(entropy_weight: float) -> Callable:
    def rows(h, w, t):
        return reference.linear_cross_entropy(h, w, t, entropy_weight=entropy_weight, reduction="none")

    return rows


def _thermokern_ce(entropy_weight: float) -> Callable[[torch.Tensor, str], torch.Tensor]:
    def fn(x: torch.Tensor, backend: str) -> torch.Tensor:
        c = case(x)
        return thermokern.linear_cross_entropy(
            x, c.weight, c.target, entropy_weight=entropy_weight, backend=backend
        )

    return fn


def ce_providers(device: str) -> tuple[list[Provider], list[str]]:
    provs, notes = head_providers(
        device, _thermokern_ce(0.0), eager_ce, per_row=False, peers=True, compiled=True
    )
    notes.append(
        "beta = 0: the loss every fused head computes (mean over tokens); "
        f"the entropy-regularised loss (beta = {ENTROPY_WEIGHT}) is linear_entropy_regularized_cross_entropy"
    )
    return provs, notes


CE_SPEC = _spec(
    "linear_cross_entropy", ce_providers, _ce_rows(0.0), True, {"entropy_weight": 0.0, "reduction": "mean"}
)


# ============================================================================ with the entropy term
def _eager_ce_entropy(x: torch.Tensor) -> torch.Tensor:
    return eager_ce(x, ENTROPY_WEIGHT)


def ce_entropy_providers(device: str) -> tuple[list[Provider], list[str]]:
    provs, notes = head_providers(
        device, _thermokern_ce(ENTROPY_WEIGHT), _eager_ce_entropy, per_row=False, peers=False
    )
    notes.append(
        f"CE - {ENTROPY_WEIGHT} * H (mean over tokens); "
        "F.linear_cross_entropy, Liger and CCE have no entropy term: they are compared at beta = 0 "
        "(linear_cross_entropy)"
    )
    return provs, notes


CE_ENTROPY_SPEC = _spec(
    "linear_entropy_regularized_cross_entropy",
    ce_entropy_providers,
    _ce_rows(ENTROPY_WEIGHT),
    True,
    {"entropy_weight": ENTROPY_WEIGHT, "reduction": "mean"},
)


# ============================================================================ linear_token_logprobs
def eager_logprobs(x: torch.Tensor) -> torch.Tensor:
    """The materialised head: F.linear, log_softmax of the float32 logits, gather the targets."""
    c = case(x)
    lp = torch.log_softmax(F.linear(x, c.weight).float(), -1)
    return lp.gather(-1, c.target.unsqueeze(-1)).squeeze(-1)


def _logprob_rows(h, w, t):
    return reference.linear_token_logprobs(h, w, t)


def _thermokern_logprobs(x: torch.Tensor, backend: str) -> torch.Tensor:
    c = case(x)
    return thermokern.linear_token_logprobs(x, c.weight, c.target, backend=backend)


def logprob_providers(device: str) -> tuple[list[Provider], list[str]]:
    provs, notes = head_providers(device, _thermokern_logprobs, eager_logprobs, per_row=True, peers=True)
    notes.append(
        "log p(target) per token, with_entropy=False; fwd+bwd takes a random "
        "gradient per token (thermokern recomputes each chunk's logits in the backward); peers "
        "give -log p as a cross-entropy with reduction='none', negated"
    )
    return provs, notes


LOGPROBS_SPEC = _spec(
    "linear_token_logprobs", logprob_providers, _logprob_rows, False, {"with_entropy": False}
)

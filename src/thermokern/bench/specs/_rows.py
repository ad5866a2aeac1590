"""Helpers shared by the row-reduction specs (softmax_entropy, cross entropy, token_logprobs,
logsumexp, thermo_stats): LM-like logits (with targets for the ops that take them), a per-row
upstream gradient, the minimal bytes of a row reduction, the float64 reference in row chunks,
and the default shapes and dtypes."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch

from ..providers import Provider, standard_providers
from ..registry import OpSpec, tensor_bytes

LOGIT_SCALE = 2.0  # logits ~ N(0, 2^2): peaked enough to resemble LM logits, no underflow issues


def logits(shape, dtype, device, gen) -> torch.Tensor:
    """``randn(shape) * LOGIT_SCALE`` in ``dtype`` (drawn in float32)."""
    x = torch.randn(shape, generator=gen, device=device, dtype=torch.float32) * LOGIT_SCALE
    return x.to(dtype)


# (shape, device) -> targets, made with the logits: the copies of one case share the last
# copy's (a target is 8 bytes a row, not worth a copy each, unlike PerInput's side tensors), and
# a lookup by shape stays constant for torch.compile, which the baselines call it under.
_TARGETS: dict[tuple, torch.Tensor] = {}


def target(x: torch.Tensor) -> torch.Tensor:
    """The targets drawn with the logits ``x`` by :func:`targeted_logits` (by shape and device)."""
    return _TARGETS[(tuple(x.shape), str(x.device))]


def targeted_logits(shape, dtype, device, gen) -> torch.Tensor:
    """LM-like :func:`logits`; their uniformly random targets are kept aside for :func:`target`."""
    x = logits(shape, dtype, device, gen)
    n_rows = math.prod(shape[:-1])
    t = torch.randint(0, shape[-1], (n_rows,), generator=gen, device=device).reshape(shape[:-1])
    _TARGETS[(tuple(x.shape), str(x.device))] = t
    return x


def acc_row_grad(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """An upstream gradient ~ N(0, 1) per row, in float32 (for the ops whose per-row output is
    float32 whatever the input's dtype: the losses and log-probs, the heads' too)."""
    return torch.randn(x.shape[:-1], generator=gen, device=x.device, dtype=torch.float32)


def row_grad(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """An upstream gradient ~ N(0, 1) of one value per row, in ``x``'s dtype."""
    return acc_row_grad(x, gen).to(x.dtype)


def row_min_bytes(shape, dtype, mode) -> int:
    """Bytes a perfect row reduction moves: ``fwd`` reads the input once and writes one value
    per row; ``fwd+bwd`` reads it twice and writes the gradient (row vectors ignored)."""
    elt = torch.empty((), dtype=dtype).element_size()
    n_rows = math.prod(shape[:-1])
    total = math.prod(shape)
    if mode == "fwd":
        return (total + n_rows) * elt  # read the logits once, write one value per row
    # forward reads the logits; backward reads them again and writes the gradient
    # (the per-row value, lse and upstream gradient are ignored: C times smaller).
    return 3 * total * elt


def row_reference_chunks(
    x: torch.Tensor,
    grad: torch.Tensor | None,
    mode: str,
    fn: Callable[[torch.Tensor, slice], torch.Tensor],
) -> Iterator[tuple[slice, torch.Tensor]]:
    """float64 output (``fwd``) or input gradient by autograd (``fwd+bwd``) of ``fn(chunk, rows)``
    -> ``(r,)`` over chunks of the flattened rows; chunks bound the float64 temporaries."""
    rows = x.detach().reshape(-1, x.shape[-1])
    g_rows = grad.reshape(-1) if grad is not None else None
    budget = (1 << 26) if rows.is_cuda else (1 << 23)  # float64 elements per chunk
    step = max(1, budget // rows.shape[1])
    for r0 in range(0, rows.shape[0], step):
        sl = slice(r0, r0 + step)
        chunk = rows[sl].to(torch.float64)
        if mode == "fwd":
            yield sl, fn(chunk, sl)
        else:
            chunk.requires_grad_(True)
            fn(chunk, sl).backward(g_rows[sl].to(torch.float64))
            yield sl, chunk.grad


def logit_shapes(device: str, quick: bool) -> list[tuple[int, ...]]:
    """(tokens, vocabulary) shapes of LM logits; a CPU run uses fewer tokens."""
    if torch.device(device).type == "cuda":
        if quick:
            return [(16384, 32000), (4096, 131072)]
        return [(16384, 32000), (4096, 131072), (16384, 131072)]
    if quick:
        return [(4096, 32000)]
    return [(4096, 32000), (1024, 4096), (256, 131072)]


def logit_dtypes(device: str, quick: bool) -> list[torch.dtype]:
    """CUDA: bfloat16 (and float32 in full runs); CPU: float32."""
    if torch.device(device).type == "cuda":
        return [torch.bfloat16] if quick else [torch.bfloat16, torch.float32]
    return [torch.float32]


def partition_shapes(device: str, quick: bool) -> list[tuple[int, ...]]:
    """:func:`logit_shapes`, with the issue's target shape 4096x32000 in full runs; --quick on a
    CPU uses a quarter of it (the eager thermo_stats baseline alone takes seconds per call there)."""
    if torch.device(device).type != "cuda" and quick:
        return [(1024, 32000)]
    return logit_shapes(device, quick)


def row_spec(name: str, providers, reference_chunks, default_shapes, params: dict, **fields) -> OpSpec:
    """The OpSpec of a row reduction: LM-like logits in, one value per row out (the fields the
    row ops share; ``fields`` overrides any of them, e.g. ``make_input``)."""
    base = {
        "make_input": logits,
        "make_grad": row_grad,
        "min_bytes": row_min_bytes,
        "input_bytes": tensor_bytes,
        "default_dtypes": logit_dtypes,
    }
    return OpSpec(
        name=name,
        providers=providers,
        reference_chunks=reference_chunks,
        default_shapes=default_shapes,
        params=params,
        **(base | fields),
    )


def targeted_spec(name: str, thermokern_fn, eager, reference_fn, shapes, params: dict, note: str) -> OpSpec:
    """The OpSpec of a row op with a target per row (cross entropy, token log-probs): logits
    from :func:`targeted_logits`, a float32 per-row output; providers from
    ``thermokern_fn(x, backend)`` and ``eager(x)`` (both read :func:`target`); the float64
    reference ``reference_fn(chunk, targets) -> (r,)``; ``note`` on the peers."""

    def providers(device: str) -> tuple[list[Provider], list[str]]:
        provs, notes = standard_providers(device, thermokern_fn, eager)
        return provs, [*notes, note]

    def reference_chunks(x: torch.Tensor, grad: torch.Tensor | None, mode: str):
        t = target(x).reshape(-1)
        return row_reference_chunks(x, grad, mode, lambda chunk, rows: reference_fn(chunk, t[rows]))

    return row_spec(
        name, providers, reference_chunks, shapes, params, make_input=targeted_logits, make_grad=acc_row_grad
    )

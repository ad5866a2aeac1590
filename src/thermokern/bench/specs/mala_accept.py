"""``mala_accept`` (``thermokern.ops.mala``, the kernel behind ``mala_step``): the fused accept/reject of a MALA step on chains x (dim 0) under the
standard normal ``E(x) = |x|^2 / 2`` (so ``dE/dx = x``), from proposals
``x' = x - eta x + sqrt(2 eta) xi`` drawn with the input; the output timed and compared is
``x_new``.

The other providers are the accept/reject as PyTorch code writes it: both proposal
log-densities as squared norms, ``log alpha``, ``torch.rand`` and ``torch.where`` (``eager``),
and its ``torch.compile`` (``compile``).
"""

from __future__ import annotations

import math

import torch

from thermokern import reference
from thermokern.ops.mala import mala_accept

from ..providers import Provider, backends, compile_provider, eager_provider, thermokern_provider
from ..registry import PerInput, forward_spec, register, tensor_bytes

STEP_SIZE = 0.01
SEED, OFFSET = 0, 0
_ASIDE = PerInput()  # (x_prop, grad, grad_prop, energy, energy_prop) drawn with each input


def aside(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(x_prop, grad, grad_prop, energy, energy_prop) drawn with the input ``x``."""
    return _ASIDE.get(x)


def _energy(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x.float().square().flatten(1).sum(1)


def make_input(shape, dtype, device, gen) -> torch.Tensor:
    """Chains x ~ N(0, I), each copy with its own proposal, gradients and energies."""
    x32 = torch.randn(shape, generator=gen, device=device, dtype=torch.float32)
    xi = torch.randn(shape, generator=gen, device=device, dtype=torch.float32)
    x_prop = x32 - STEP_SIZE * x32 + math.sqrt(2.0 * STEP_SIZE) * xi
    x = x32.to(dtype)
    # five distinct tensors (x32.to(float32) is x32 itself), as a sampler's are
    grads = x32.to(dtype, copy=True), x_prop.to(dtype, copy=True)
    _ASIDE.put(x, (x_prop.to(dtype, copy=True), grads[0], grads[1], _energy(x32), _energy(x_prop)))
    return x


def _with_aside(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return (x, *aside(x))


def eager_accept(x, x_prop, g, g_prop, e, e_prop) -> torch.Tensor:
    """The accept/reject as PyTorch code writes it: x_new."""
    log_q_fwd = -(x_prop - x + STEP_SIZE * g).square().flatten(1).sum(1) / (4.0 * STEP_SIZE)
    log_q_bwd = -(x - x_prop + STEP_SIZE * g_prop).square().flatten(1).sum(1) / (4.0 * STEP_SIZE)
    log_alpha = -(e_prop - e) + log_q_bwd - log_q_fwd
    taken = torch.rand_like(log_alpha).log() <= log_alpha
    return torch.where(taken.view(-1, *(1,) * (x.dim() - 1)), x_prop, x)


def _thermokern(x: torch.Tensor, backend: str) -> torch.Tensor:
    return mala_accept(x, *aside(x), step_size=STEP_SIZE, seed=SEED, offset=OFFSET, backend=backend)[0]


def providers(device: str) -> tuple[list[Provider], list[str]]:
    names, notes = backends(device)
    provs = [thermokern_provider(b, _thermokern) for b in names]
    eager = eager_provider(lambda x: eager_accept(*_with_aside(x)), exact=False)
    provs += [eager, compile_provider(eager_accept, exact=False, args=_with_aside)]
    notes += [
        "eager/compile draw their uniforms from torch's generator: no error column for them",
        "GB/s counts reading x, x', grad and grad' and writing x_new (5 N elements)",
    ]
    return provs, notes


def reference_chunks(x: torch.Tensor, grad: torch.Tensor | None, mode: str):
    """float64 ``x_new`` of the reference, over chunks of whole chains. Chain ``c``'s uniform is
    word ``c % 4`` of counter ``OFFSET + ceil(n / 4) + c // 4`` (n = x.numel()): a chunk of the
    chains from ``c0`` (a multiple of 4) with ``n0`` elements gets the same counters at
    ``offset = OFFSET + ceil(n / 4) - ceil(n0 / 4) + c0 // 4``."""
    chains = x.shape[0]
    row = x.numel() // max(chains, 1)
    step = max(4, ((1 << 22) // max(row, 1)) // 4 * 4)  # chains per chunk, a multiple of 4
    x_prop, g, g_prop, e, e_prop = aside(x)
    for c0 in range(0, chains, step):
        c = slice(c0, c0 + step)
        n0 = x[c].numel()
        offset = OFFSET + -(-x.numel() // 4) - -(-n0 // 4) + c0 // 4
        x_new = reference.mala_accept(
            *(t[c].double() for t in (x, x_prop, g, g_prop, e, e_prop)),
            step_size=STEP_SIZE, seed=SEED, offset=offset,
        )[0]  # fmt: skip
        yield slice(c0 * row, c0 * row + n0), x_new


def min_bytes(shape, dtype, mode) -> int:
    """Read x, x', grad and grad', write x_new (the energies: one value per chain, ignored)."""
    return 5 * tensor_bytes(shape, dtype)


def shapes(device: str, quick: bool) -> list[tuple[int, ...]]:
    if torch.device(device).type == "cuda":
        return [(16384, 4096)] if quick else [(16384, 4096), (65536, 64)]
    return [(1024, 4096)] if quick else [(1024, 4096), (16384, 64)]


SPEC = register(
    forward_spec(
        "mala_accept",
        providers,
        make_input,
        reference_chunks,
        min_bytes,
        shapes,
        lambda device, quick: [torch.float32],
        {
            "step_size": STEP_SIZE,
            "temperature": 1.0,
            "seed": SEED,
            "offset": OFFSET,
            "energy": "|x|^2 / 2 (grad = x)",
            "x": "randn",
            "x_prop": "x - eta x + sqrt(2 eta) randn",
        },
        elementwise=True,
    )
)

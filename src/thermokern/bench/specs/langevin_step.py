"""``langevin_step`` (and the in-place ``langevin_step_``): one unadjusted Langevin update
``x <- clamp(x - eta * grad + sqrt(2 eta) * xi)`` at T = 1, element-wise."""

from __future__ import annotations

import math

import torch

import thermokern
from thermokern import reference

from ..providers import Provider, backends, compile_provider, eager_provider, thermokern_provider
from ..registry import PerInput, forward_spec, register, tensor_bytes

STEP_SIZE = 0.01
SIGMA = math.sqrt(2.0 * STEP_SIZE)  # T = 1
CLAMP = (-1.0, 1.0)
SEED, OFFSET = 0, 0
_GRADS = PerInput()  # the energy gradient drawn with each input


def energy_grad(x: torch.Tensor) -> torch.Tensor:
    """The energy gradient drawn with the input ``x``."""
    return _GRADS.get(x)


def make_input(shape, dtype, device, gen) -> torch.Tensor:
    """x ~ U(-1, 1) (an EBM sample in the clamp range) with its own gradient ~ N(0, 1)."""
    x = (torch.rand(shape, generator=gen, device=device, dtype=torch.float32) * 2 - 1).to(dtype)
    _GRADS.put(x, torch.randn(shape, generator=gen, device=device, dtype=torch.float32).to(dtype))
    return x


def _with_grad(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x, energy_grad(x)


def eager_(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The usual PyTorch sampler update, in place: three ops and a noise tensor."""
    x.add_(-STEP_SIZE * g)
    x.add_(SIGMA * torch.randn_like(x))
    x.clamp_(*CLAMP)
    return x


def _step(x: torch.Tensor, backend: str) -> torch.Tensor:
    return thermokern.langevin_step(
        x, energy_grad(x), step_size=STEP_SIZE, clamp=CLAMP, seed=SEED, offset=OFFSET, backend=backend
    )


def _step_(x: torch.Tensor, backend: str) -> torch.Tensor:
    return thermokern.langevin_step_(
        x, energy_grad(x), step_size=STEP_SIZE, clamp=CLAMP, seed=SEED, offset=OFFSET, backend=backend
    )


def providers(device: str) -> tuple[list[Provider], list[str]]:
    names, notes = backends(device)
    provs: list[Provider] = []
    for b in names:
        provs += [thermokern_provider(b, _step), thermokern_provider(b, _step_, name=b + "_", inplace=True)]
    # eager/compile draw their noise from torch's generator: not comparable with the reference
    provs += [
        eager_provider(lambda x: eager_(*_with_grad(x)), inplace=True, exact=False),
        compile_provider(eager_, inplace=True, exact=False, args=_with_grad),
    ]
    notes += [
        (
            "<backend> is langevin_step (a new output), <backend>_ the in-place langevin_step_; eager is "
            "x.add_(-eta * g); x.add_(sigma * torch.randn_like(x)); x.clamp_(-1, 1) and compile its "
            "torch.compile; all of them update a fresh copy of x per call (copied untimed)"
        ),
        "eager/compile draw their noise from torch's generator: no error column for them",
        "GB/s counts reading x and grad and writing the result (3 N elements)",
    ]
    return provs, notes


def reference_chunks(x: torch.Tensor, grad: torch.Tensor | None, mode: str):
    """float64 result of flat element chunks (multiples of 4 elements: whole Philox counters)."""
    flat = x.detach().reshape(-1)
    g = energy_grad(x).reshape(-1)
    step = 1 << 22  # elements per chunk
    for e0 in range(0, flat.numel(), step):
        sl = slice(e0, e0 + step)
        yield (
            sl,
            reference.langevin_step(
                flat[sl].double(),
                g[sl].double(),
                step_size=STEP_SIZE,
                clamp=CLAMP,
                seed=SEED,
                offset=OFFSET + e0 // 4,
            ),
        )


def min_bytes(shape, dtype, mode) -> int:
    """Read x and grad, write the result."""
    return 3 * tensor_bytes(shape, dtype)


def shapes(device: str, quick: bool) -> list[tuple[int, ...]]:
    if torch.device(device).type == "cuda":
        return [(16384, 4096)] if quick else [(16384, 4096), (256, 3, 32, 32)]
    return [(4096, 4096)] if quick else [(4096, 4096), (256, 3, 32, 32)]


def dtypes(device: str, quick: bool) -> list[torch.dtype]:
    if torch.device(device).type == "cuda" and not quick:
        return [torch.float32, torch.bfloat16]
    return [torch.float32]


SPEC = register(
    forward_spec(
        "langevin_step",
        providers,
        make_input,
        reference_chunks,
        min_bytes,
        shapes,
        dtypes,
        {
            "step_size": STEP_SIZE,
            "noise": f"sqrt(2 * step_size) = {SIGMA:.4f}",
            "clamp": list(CLAMP),
            "seed": SEED,
            "offset": OFFSET,
            "x": "U(-1, 1)",
            "grad": "randn",
        },
        elementwise=True,
    )
)

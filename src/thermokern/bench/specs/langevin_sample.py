"""``langevin_sample`` (sampling branch): a whole sampling run of ``N_STEPS`` steps of the
JEM / IGEBM sampler (step_size 1, noise 0.01, clamp to [-1, 1]) on chains x0 of shape
(chains, D) under a small MLP energy D -> 64 -> 64 -> 1.

Providers: ``thermokern`` (sampling.langevin_sample, one fused langevin_step_ per step),
``eager`` (JEM's loop: three in-place passes and a randn tensor per step) and, on CUDA,
``cuda_graph`` (langevin_sample(cuda_graph=True)). The energy network is the same for all:
the difference is the update and its launches.
"""

from __future__ import annotations

import torch

from thermokern import sampling

from ..providers import Fn, Provider
from ..registry import OpSpec, forward_spec, register, tensor_bytes

N_STEPS = 64
STEP_SIZE = 1.0
NOISE_SCALE = 0.01
HIDDEN = 64
_NETS: dict[tuple, torch.nn.Module] = {}


def energy(x: torch.Tensor) -> torch.nn.Module:
    """The benchmark's MLP energy for inputs like ``x`` (deterministic weights, no grads)."""
    key = (x.shape[-1], x.dtype, str(x.device))
    if key not in _NETS:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            net = torch.nn.Sequential(
                torch.nn.Linear(x.shape[-1], HIDDEN),
                torch.nn.SiLU(),
                torch.nn.Linear(HIDDEN, HIDDEN),
                torch.nn.SiLU(),
                torch.nn.Linear(HIDDEN, 1),
                torch.nn.Flatten(0),
            )
        _NETS[key] = net.to(device=x.device, dtype=x.dtype).requires_grad_(False)
    return _NETS[key]


def _thermokern(cuda_graph: bool) -> Fn:
    def fn(x0: torch.Tensor) -> torch.Tensor:
        return sampling.langevin_sample(
            energy(x0),
            x0,
            n_steps=N_STEPS,
            step_size=STEP_SIZE,
            noise_scale=NOISE_SCALE,
            clamp=(-1.0, 1.0),
            seed=0,
            cuda_graph=cuda_graph,
        )

    return fn


def eager(x0: torch.Tensor) -> torch.Tensor:
    """JEM's sampling loop (Grathwohl et al. 2019), as EBM code commonly writes it."""
    net = energy(x0)
    x = x0.detach().clone()
    for _ in range(N_STEPS):
        x.requires_grad_(True)
        (g,) = torch.autograd.grad(net(x).sum(), x)
        x = x.detach()
        x.add_(-STEP_SIZE * g)
        x.add_(NOISE_SCALE * torch.randn_like(x))
        x.clamp_(-1.0, 1.0)
    return x


def providers(device: str) -> tuple[list[Provider], list[str]]:
    kind = torch.device(device).type
    provs = [Provider("thermokern", lambda: _thermokern(False), kind="thermokern")]
    what = (
        f"{N_STEPS} steps x (MLP energy D->{HIDDEN}->{HIDDEN}->1 forward + "
        "input gradient + update); time per whole run; GB/s counts only the updates' minimal "
        "traffic (read x and grad, write x per step), a small part of the run"
    )
    notes = [what]
    if kind == "cuda":
        provs.append(Provider("cuda_graph", lambda: _thermokern(True), kind="thermokern"))
    else:
        notes.append("cuda_graph: CUDA only")
    provs.append(Provider("eager", lambda: eager, kind="baseline"))
    return provs, notes


def make_input(shape, dtype, device, gen) -> torch.Tensor:
    """Chains x0 ~ U(-1, 1)."""
    x = torch.rand(shape, generator=gen, device=device, dtype=torch.float32) * 2 - 1
    return x.to(dtype)


def shapes(device: str, quick: bool) -> list[tuple[int, ...]]:
    if torch.device(device).type == "cuda":
        return [(4096, 64)] if quick else [(4096, 64), (65536, 64)]
    return [(256, 32)] if quick else [(1024, 32)]


def sampler_spec(name, providers, make_input, shapes, updates, params) -> OpSpec:
    """Register a whole sampling run (shared with the ``ais`` spec): forward only, float32, no
    float64 reference (samplers are random); ``updates`` x 3 passes over the chains (read x and
    the gradient, write x) is the minimal traffic the GB/s column counts."""
    no_reference = lambda x, grad, mode: iter(())
    min_bytes = lambda shape, dtype, mode: updates * 3 * tensor_bytes(shape, dtype)
    float32 = lambda device, quick: [torch.float32]
    spec = forward_spec(
        name, providers, make_input, no_reference, min_bytes, shapes, float32, params, has_reference=False
    )
    return register(spec)


SPEC = sampler_spec(
    "langevin_sample",
    providers,
    make_input,
    shapes,
    N_STEPS,
    {
        "n_steps": N_STEPS,
        "step_size": STEP_SIZE,
        "noise_scale": NOISE_SCALE,
        "clamp": [-1.0, 1.0],
        "energy": f"MLP D-{HIDDEN}-{HIDDEN}-1 SiLU",
    },
)

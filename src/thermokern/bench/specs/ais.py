"""``ais`` (sampling quality): a whole annealed-importance-sampling run of ``LEVELS`` levels,
one MALA transition each, from the standard normal to a small MLP energy D -> 64 -> 64 -> 1
(the energy network of the ``langevin_sample`` benchmark), on chains x0 of shape (chains, D).

Providers, all the same algorithm (the same path, weights and MALA transitions):

* ``thermokern``: :func:`thermokern.sampling.ais` (fused proposal and accept/reject kernels,
  the accepted state's energy and gradient kept: one energy forward + backward per transition);
* ``eager``: the loop as it is usually written in PyTorch: the weight increment evaluates the
  energy, and each MALA transition evaluates energy and gradient at the current state and at
  the proposal (three forwards, two backwards per transition), the proposal densities,
  ``torch.randn`` and ``torch.rand`` in separate ops;
* ``eager_cached``: the same eager ops, but caching the accepted state's energy and gradient as
  thermokern does (one forward + backward per transition): the difference left is the fusion;
* ``cuda_graph`` (CUDA only): ``ais(cuda_graph=True)``.

Transitions per second = chains x LEVELS / time.
"""

from __future__ import annotations

import math

import torch

from thermokern import sampling

from ..providers import Fn, Provider
from .langevin_sample import HIDDEN, energy, sampler_spec

LEVELS = 32
STEP_SIZE = 0.01
BETAS = [j / LEVELS for j in range(LEVELS + 1)]


def _thermokern(cuda_graph: bool) -> Fn:
    def fn(x0: torch.Tensor) -> torch.Tensor:
        res = sampling.ais(energy(x0), x0, betas=LEVELS, step_size=STEP_SIZE, seed=0, cuda_graph=cuda_graph)
        return res.log_weights

    return fn


def _base(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x.square().sum(1)


def _net_grad(net, x):
    """E(x) and dE/dx (detached)."""
    x = x.detach().requires_grad_(True)
    e = net(x)
    (g,) = torch.autograd.grad(e.sum(), x)
    return e.detach(), g


def _mala(x, g, eb, xp, gp, ebp):
    """The eager accept/reject of a MALA transition from x (E_beta eb, gradient g) to the
    proposal xp (ebp, gp): the chains that accept."""
    eta = STEP_SIZE
    log_q_fwd = -(xp - x + eta * g).square().sum(1) / (4.0 * eta)
    log_q_bwd = -(x - xp + eta * gp).square().sum(1) / (4.0 * eta)
    log_alpha = -(ebp - eb) + log_q_bwd - log_q_fwd
    return torch.rand_like(log_alpha).log() < log_alpha


def _propose(x, g):
    return x - STEP_SIZE * g + math.sqrt(2.0 * STEP_SIZE) * torch.randn_like(x)


def eager(x0: torch.Tensor) -> torch.Tensor:
    """AIS as it is usually written in eager PyTorch: every energy evaluated where it is
    needed (no caching across steps)."""
    net = energy(x0)
    x = x0.detach().clone()
    log_w = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)

    def path(x, beta):  # E_beta and its gradient
        x = x.detach().requires_grad_(True)
        eb = (1.0 - beta) * _base(x) + beta * net(x)
        (g,) = torch.autograd.grad(eb.sum(), x)
        return eb.detach(), g

    for j in range(1, LEVELS + 1):
        beta = BETAS[j]
        with torch.no_grad():
            log_w -= (beta - BETAS[j - 1]) * (net(x) - _base(x))
        eb, g = path(x, beta)
        xp = _propose(x, g)
        ebp, gp = path(xp, beta)
        accept = _mala(x, g, eb, xp, gp, ebp)
        x = torch.where(accept[:, None], xp, x)
    return log_w


def eager_cached(x0: torch.Tensor) -> torch.Tensor:
    """The same eager ops, keeping the accepted state's E and dE/dx across levels."""
    net = energy(x0)
    x = x0.detach().clone()
    log_w = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    e, g_e = _net_grad(net, x)
    for j in range(1, LEVELS + 1):
        beta = BETAS[j]
        e0 = _base(x)
        log_w -= (beta - BETAS[j - 1]) * (e - e0)
        eb, g = (1.0 - beta) * e0 + beta * e, (1.0 - beta) * x + beta * g_e
        xp = _propose(x, g)
        ep, gp_e = _net_grad(net, xp)
        ebp, gp = (1.0 - beta) * _base(xp) + beta * ep, (1.0 - beta) * xp + beta * gp_e
        accept = _mala(x, g, eb, xp, gp, ebp)
        keep = accept[:, None]
        x, e, g_e = torch.where(keep, xp, x), torch.where(accept, ep, e), torch.where(keep, gp_e, g_e)
    return log_w


def providers(device: str) -> tuple[list[Provider], list[str]]:
    kind = torch.device(device).type
    provs = [Provider("thermokern", lambda: _thermokern(False), kind="thermokern")]
    notes = [
        (
            f"AIS, {LEVELS} levels x 1 MALA transition, standard-normal base, MLP energy "
            f"D->{HIDDEN}->{HIDDEN}->1; time per whole run (transitions/s = chains x {LEVELS} / time); "
            "eager: the usual loop (3 forwards + 2 backwards per transition); eager_cached: the same "
            "ops with thermokern's caching (1 + 1)"
        )
    ]
    if kind == "cuda":
        provs.append(Provider("cuda_graph", lambda: _thermokern(True), kind="thermokern"))
    else:
        notes.append("cuda_graph: CUDA only")
    provs.append(Provider("eager", lambda: eager, kind="baseline"))
    provs.append(Provider("eager_cached", lambda: eager_cached, kind="baseline"))
    return provs, notes


def make_input(shape, dtype, device, gen) -> torch.Tensor:
    """Chains x0 ~ N(0, I): exact samples of the base."""
    return torch.randn(shape, generator=gen, device=device, dtype=torch.float32).to(dtype)


def shapes(device: str, quick: bool) -> list[tuple[int, ...]]:
    if quick:
        return [(4096, 2)]
    return [(4096, 2), (256, 784)]


SPEC = sampler_spec(
    "ais",
    providers,
    make_input,
    shapes,
    LEVELS,
    {
        "levels": LEVELS,
        "n_steps": 1,
        "step_size": STEP_SIZE,
        "metropolis": True,
        "energy": f"MLP D-{HIDDEN}-{HIDDEN}-1 SiLU",
    },
)

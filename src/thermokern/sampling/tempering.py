"""Replica exchange (parallel tempering): ``replica_exchange`` and :class:`ReplicaExchangeStats`.

R replicas of C chains run at a ladder of temperatures T_0 < T_1 < ... < T_{R-1} as one
batched tensor of R * C chains: every step moves all of them at once with the Langevin/MALA
kernels (each chain with its replica's step size and temperature: [Note: per-chain MALA
parameters] in csrc/thermokern.cpp), and every ``swap_every`` steps the adjacent temperatures of each chain
column propose to exchange their states, accepted with probability
``min(1, exp((1/T_r - 1/T_{r+1}) (E(x_r) - E(x_{r+1}))))``. Pairs (0, 1), (2, 3), ... and
(1, 2), (3, 4), ... alternate, so the swaps of one round are disjoint. Hot replicas cross the
energy barriers that trap the cold ones, and swaps carry the crossings down the ladder.
Everything runs on the device: no host synchronisation per step.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

from thermokern import _backend
from thermokern._checks import check_chains, check_int, check_positive
from thermokern._dtypes import acc_dtype
from thermokern.ops.langevin import langevin_step_fwd
from thermokern.ops.mala import checked_accept, checked_proposal, energy_and_grad
from thermokern.sampling.graph import _run_graphed
from thermokern.sampling.langevin import _progress_bar
from thermokern.sampling.streams import counters_per_step, fill_rng

__all__ = ["ReplicaExchangeStats", "replica_exchange"]


class ReplicaExchangeStats(NamedTuple):
    """Statistics of a :func:`replica_exchange` run (float64 CPU tensors).

    Attributes:
        swap_acceptance: (R - 1,) the fraction of accepted swaps between temperatures r and
            r + 1 over that pair's attempts (NaN for a pair never attempted).
        swap_accept_prob: (R - 1,) the mean of min(1, alpha) over the same attempts (a
            lower-variance estimate of the same rate).
        acceptance_rate: (R,) MALA: the fraction of accepted moves of each replica over the run;
            ULA: None.
        temperatures: (R,) the ladder.
        step_size: (R,) each replica's step size.
        counters_per_step: Philox counters each step used.
    """

    swap_acceptance: torch.Tensor
    swap_accept_prob: torch.Tensor
    acceptance_rate: torch.Tensor | None
    temperatures: torch.Tensor
    step_size: torch.Tensor
    counters_per_step: int


def _ladder(values, name: str, n: int | None = None) -> list[float]:
    if isinstance(values, torch.Tensor):
        if values.dim() != 1:
            raise ValueError(f"{name}: expected a 1-D tensor, got shape {tuple(values.shape)}")
        values = values.detach().cpu().tolist()
    if not isinstance(values, Sequence) or isinstance(values, str):
        raise TypeError(f"{name}: expected a sequence of numbers, got {type(values).__name__}")
    out = [check_positive(v, name) for v in values]
    if n is not None and len(out) != n:
        raise ValueError(f"{name}: expected a number or one value per temperature ({n}), got {len(out)}")
    return out


class _Replicas:
    """The state of a replica-exchange run and its step (eager or captured in a CUDA graph)."""

    def __init__(self, energy_fn, x, temps, etas, chains, metropolis, backend):
        self.energy_fn = energy_fn
        self.x = x  # (R * C, *event)
        self.r, self.c = len(temps), chains
        self.metropolis = metropolis
        self.backend = backend
        acc = acc_dtype(x.dtype)
        dev = x.device
        t = torch.tensor(temps, dtype=acc, device=dev)
        self.t_chain = t.repeat_interleave(chains)
        self.eta_chain = torch.tensor(etas, dtype=acc, device=dev).repeat_interleave(chains)
        self.inv_t = t.reciprocal()[:, None]  # (R, 1)
        self.seed = torch.zeros((), dtype=torch.int64, device=dev)
        self.offset = torch.zeros((), dtype=torch.int64, device=dev)
        self.move_counters = counters_per_step(x, metropolis)
        # Per-step controls, refilled before each step: swap this step (0/1) and which pairs.
        self.do_swap = torch.zeros((), dtype=torch.bool, device=dev)
        self.parity = torch.zeros((), dtype=torch.int64, device=dev)
        self.pair_parity = torch.arange(max(self.r - 1, 0), device=dev) % 2
        self.swaps = torch.zeros(max(self.r - 1, 0), dtype=acc, device=dev)
        self.swap_probs = torch.zeros_like(self.swaps)
        self.accepts = torch.zeros(self.r, dtype=acc, device=dev)
        self.base = torch.arange(self.r, device=dev)[:, None] * chains + torch.arange(chains, device=dev)
        self.energy = self.grad = None
        if metropolis:
            self.energy, self.grad = energy_and_grad(energy_fn, x)

    def _swap(self, energy: torch.Tensor, tensors: list[torch.Tensor]) -> None:
        """Propose the exchanges of this round's pairs and permute ``tensors`` (dim 0: R * C)."""
        e = energy.view(self.r, self.c)
        log_alpha = (self.inv_t[:-1] - self.inv_t[1:]) * (e[:-1] - e[1:])  # (R - 1, C)
        # Uniforms from the step's Philox stream, after the move's counters: Phi(xi).
        zeros = energy.new_zeros(log_alpha.numel())
        xi = langevin_step_fwd(
            self.backend, zeros, zeros, self.seed, self.offset + self.move_counters, 1.0, 1.0, None, None, None
        )  # fmt: skip
        log_u = torch.special.log_ndtr(xi).view_as(log_alpha)
        active = (self.pair_parity == self.parity) & self.do_swap  # (R - 1,)
        swap = active[:, None] & (log_u <= log_alpha)
        self.swaps.add_(swap.to(e.dtype).mean(1))
        prob = torch.nan_to_num(log_alpha, nan=-math.inf).clamp(max=0.0).exp().mean(1)
        self.swap_probs.add_(torch.where(active, prob, 0.0))
        step = swap.to(torch.int64)
        src = torch.zeros((self.r, self.c), dtype=torch.int64, device=e.device)
        src[:-1] += step
        src[1:] -= step
        index = (self.base + src * self.c).reshape(-1)
        for t in tensors:
            t.copy_(t.index_select(0, index))

    def step(self) -> dict[str, torch.Tensor]:
        x = self.x
        if self.metropolis:
            energy, grad = self.energy, self.grad
        else:
            energy, grad = energy_and_grad(self.energy_fn, x)
        if self.r > 1:
            with torch.no_grad():
                self._swap(energy, [x, energy, grad])
        x_prop = checked_proposal(x, grad, self.eta_chain, self.t_chain, self.seed, self.offset, self.backend)
        if not self.metropolis:
            with torch.no_grad():
                x.copy_(x_prop)
            return {}
        energy_prop, grad_prop = energy_and_grad(self.energy_fn, x_prop)
        with torch.no_grad():
            x_new, accepted, _ = checked_accept(
                x, x_prop, grad, grad_prop, energy, energy_prop, self.eta_chain, self.t_chain,
                self.seed, self.offset, self.backend,
            )  # fmt: skip
            x.copy_(x_new)
            torch.where(accepted, energy_prop, energy, out=energy)
            keep = accepted.reshape((x.shape[0],) + (1,) * (x.dim() - 1))
            torch.where(keep, grad_prop, grad, out=grad)
            self.accepts.add_(accepted.view(self.r, self.c).to(self.accepts.dtype).mean(1))
        return {}

    def state(self) -> list[torch.Tensor]:
        tensors = [self.x, self.energy, self.grad, self.swaps, self.swap_probs, self.accepts]
        return [t for t in tensors if t is not None]


def replica_exchange(
    energy_fn: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    *,
    temperatures: Sequence[float] | torch.Tensor,
    n_steps: int,
    step_size: float | Sequence[float] | torch.Tensor,
    swap_every: int = 1,
    metropolis: bool = True,
    seed: int = 0,
    progress: bool = False,
    return_stats: bool = False,
    backend: str = "auto",
    cuda_graph: bool = False,
    thin: int | None = None,
) -> torch.Tensor | tuple[torch.Tensor, ReplicaExchangeStats]:
    """Replica exchange (parallel tempering) of the chains ``x0`` under ``energy_fn``.

    Replica ``r`` samples ``exp(-E(x) / T_r)``; every replica starts from a copy of ``x0``
    (chains, *event). Step ``k``: if ``k % swap_every == 0``, swap round ``k // swap_every``
    proposes exchanges between temperatures (r, r + 1) for the even r when the round is even,
    the odd r when it is odd, in every chain column, by the Metropolis rule; then every replica
    makes one Langevin move with its own step size and temperature, ``x' = x - eta_r dE/dx +
    sqrt(2 eta_r T_r) xi``, accepted or rejected by MALA (``metropolis=True``, exact) or
    always taken (ULA). ``energy_fn`` is called on all R * C chains at once (shape
    ``(R * C, *event)`` -> ``(R * C,)``), one evaluation per step (MALA keeps the accepted
    state's energy and gradient).

    Choosing the ladder: geometric temperatures from 1 to a T_max at which the barriers are
    crossed, dense enough that adjacent swap acceptances (``return_stats``) stay above ~0.2;
    step sizes growing with T (e.g. ``eta_r = eta_0 T_r``) keep the move acceptances similar.

    Random numbers: step ``k`` uses Philox key ``seed`` and offset ``k * counters_per_step``:
    the moves draw as a :func:`langevin_sample` step on the (R * C, *event) batch, the swap
    uniforms follow in the same step's counters.

    Args:
        energy_fn: ``x -> (chains,)`` differentiable energies.
        x0: initial states, float32/64/16/bf16, (chains, *event); not modified.
        temperatures: the ladder, strictly increasing values > 0 (a sequence or 1-D tensor).
        n_steps: number of steps (>= 0).
        step_size: eta > 0 for every replica, or one per temperature.
        swap_every: steps between swap rounds (>= 1).
        metropolis: MALA moves (True) or ULA (False).
        seed: the Philox key of the run.
        progress: a tqdm progress bar.
        return_stats: also return :class:`ReplicaExchangeStats`.
        backend: kernel backend of the moves (``"auto"``, ``"cpu"``, ``"cuda"``, ``"triton"``,
            ``"reference"``).
        cuda_graph: capture one step as a CUDA graph and replay it (CUDA tensors and a
            capturable ``energy_fn``; see :func:`langevin_sample`).
        thin: None: return the final states; an int k >= 1: return the trajectory of the states
            after every k-th step, shape ``(R, chains, n_steps // k, *event)``, so that
            ``samples[0]`` is the T_0 replica in the (chain, draw, *event) layout of
            :func:`thermokern.sampling.ess` / :func:`thermokern.sampling.rhat`.

    Returns:
        The final states, shape ``(R, chains, *event)`` (replica r at ``temperatures[r]``), or
        with ``thin`` the trajectory, and with ``return_stats`` a
        ``(samples, ReplicaExchangeStats)`` pair.

    Raises:
        TypeError: non-callable ``energy_fn``, non-float ``x0``, bad argument types.
        ValueError: temperatures not > 0 or not increasing, a step size per temperature of the
            wrong length, n_steps < 0, swap_every < 1, energies of a shape other than (chains,).
        RuntimeError: ``cuda_graph=True`` without CUDA tensors.
        ImportError: ``progress=True`` without tqdm installed.

    Example:
        >>> import torch
        >>> from thermokern import sampling
        >>> energy = lambda x: 8.0 * (x.square().sum(1) - 1.0).square()  # a ring
        >>> x = sampling.replica_exchange(energy, torch.zeros(64, 2), temperatures=[1.0, 2.0, 4.0],
        ...                               n_steps=100, step_size=0.01)
        >>> x.shape
        torch.Size([3, 64, 2])
    """
    if not callable(energy_fn):
        raise TypeError(f"energy_fn: expected a callable x -> energies, got {type(energy_fn).__name__}")
    check_chains(x0, "x0")
    temps = _ladder(temperatures, "temperatures")
    if not temps:
        raise ValueError("temperatures: expected at least one temperature")
    if any(not b > a for a, b in itertools.pairwise(temps)):
        raise ValueError(f"temperatures: expected strictly increasing values, got {temps}")
    if isinstance(step_size, (Sequence, torch.Tensor)) and not isinstance(step_size, str):
        etas = _ladder(step_size, "step_size", len(temps))
    else:
        etas = [check_positive(step_size, "step_size")] * len(temps)
    n_steps = check_int(n_steps, "n_steps")
    if n_steps < 0:
        raise ValueError(f"n_steps: expected an int >= 0, got {n_steps}")
    swap_every = check_int(swap_every, "swap_every")
    if swap_every < 1:
        raise ValueError(f"swap_every: expected an int >= 1, got {swap_every}")
    check_int(seed, "seed")
    if thin is not None and check_int(thin, "thin") < 1:
        raise ValueError(f"thin: expected an int >= 1 (or None), got {thin}")
    if cuda_graph and x0.device.type != "cuda":
        raise RuntimeError(
            f"cuda_graph=True needs CUDA tensors (x0 is on {x0.device}); pass cuda_graph=False"
        )
    name = _backend.resolve_backend(backend, x0)
    chains = x0.shape[0]
    n_rep = len(temps)
    x = x0.detach().repeat((n_rep,) + (1,) * (x0.dim() - 1)).contiguous()
    run = _Replicas(energy_fn, x, temps, etas, chains, metropolis, name)
    counters = run.move_counters + (max(n_rep - 1, 0) * chains + 3) // 4
    bar = _progress_bar(n_steps, "replica_exchange") if progress else None
    event = tuple(x0.shape[1:])
    traj = None if thin is None else x.new_empty((n_rep, chains, n_steps // thin) + event)

    def before_step(k: int) -> None:
        fill_rng(run.seed, run.offset, seed, k, counters)
        run.do_swap.fill_(k % swap_every == 0)
        run.parity.fill_((k // swap_every) % 2)

    def after_step(k: int, stats: dict[str, torch.Tensor]) -> None:
        if traj is not None and (k + 1) % thin == 0:
            traj[:, :, (k + 1) // thin - 1].copy_(x.view((n_rep, chains) + event))
        if bar is not None:
            bar.update(1)

    try:
        if cuda_graph and n_steps > 0:
            _run_graphed(run.step, run.state(), n_steps, before_step, after_step)
        else:
            for k in range(n_steps):
                before_step(k)
                after_step(k, run.step())
    finally:
        if bar is not None:
            bar.close()
    samples = x.view((n_rep, chains) + event) if traj is None else traj
    if not return_stats:
        return samples
    rounds = (n_steps + swap_every - 1) // swap_every  # rounds 0, 1, ... alternate parities
    attempts = torch.tensor([(rounds + 1 - r % 2) // 2 for r in range(n_rep - 1)], dtype=torch.float64)
    stats = ReplicaExchangeStats(
        swap_acceptance=run.swaps.to("cpu", torch.float64) / attempts,
        swap_accept_prob=run.swap_probs.to("cpu", torch.float64) / attempts,
        acceptance_rate=run.accepts.to("cpu", torch.float64) / n_steps if metropolis else None,
        temperatures=torch.tensor(temps, dtype=torch.float64),
        step_size=torch.tensor(etas, dtype=torch.float64),
        counters_per_step=counters,
    )
    return samples, stats

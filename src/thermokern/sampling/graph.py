"""The CUDA-graph runner of :func:`~thermokern.sampling.langevin_sample` (``cuda_graph=True``).

One sampler step (energy forward, gradient, update, and for MALA the proposal and
accept/reject) is captured once into a ``torch.cuda.CUDAGraph`` and replayed every step; the
Philox key and offset live in 0-dim int64 device tensors that are refilled before each replay.
:func:`_check_capturable` holds what a run must satisfy to be captured.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from thermokern.sampling.langevin import _Sampler

__all__: list[str] = []


def _is_constant(values: Sequence[float]) -> bool:
    return len(set(values)) <= 1


def _check_capturable(x0: torch.Tensor, etas: Sequence[float], temps: Sequence[float]) -> None:
    """Raise unless a run on ``x0`` with these per-step values can be captured as a CUDA graph:
    CUDA tensors (RuntimeError) and a constant step size and temperature (ValueError)."""
    if x0.device.type != "cuda":
        raise RuntimeError(
            f"cuda_graph=True needs CUDA tensors (x0 is on {x0.device}); CUDA graphs cannot "
            "capture CPU work: pass cuda_graph=False"
        )
    for name, values in (("step_size", etas), ("temperature", temps)):
        if not _is_constant(values):
            raise ValueError(
                f"{name}: cuda_graph=True needs a constant {name} (the value is baked into the "
                "captured kernels); use cuda_graph=False for schedules"
            )


def _run_graphed(sampler: _Sampler, n_steps, eta, temperature, set_rng, after_step) -> None:
    """Capture one step of ``sampler`` in a CUDA graph and replay it ``n_steps`` times.

    The warm-up (required before capture: it lets autograd and the allocator settle on a side
    stream) runs on the real state, which is saved and restored around it, so the replays
    produce what the eager loop would.
    """
    saved = [t.clone() for t in sampler.state()]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        set_rng(0)
        for _ in range(2):
            sampler.step(eta, temperature)
    torch.cuda.current_stream().wait_stream(side)
    for t, s in zip(sampler.state(), saved):
        t.copy_(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_stats = sampler.step(eta, temperature)
    for k in range(n_steps):
        set_rng(k)
        graph.replay()
        after_step(k, static_stats)

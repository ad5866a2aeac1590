"""The CUDA-graph runner of the samplers' ``cuda_graph=True`` (``langevin_sample``, ``ais``,
``replica_exchange``).

One sampler step (energy forward, gradient, update, and for MALA the proposal and
accept/reject) is captured once into a ``torch.cuda.CUDAGraph`` and replayed every step; the
Philox key and offset live in 0-dim int64 device tensors that are refilled before each replay.
:func:`_check_capturable` holds what a run must satisfy to be captured.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

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


def _run_graphed(step, state, n_steps, before_step, after_step) -> None:
    """Capture ``step()`` (one sampler step on the tensors ``state``, returning its statistics
    as 0-dim tensors) in a CUDA graph and replay it ``n_steps`` times; ``before_step(k)``
    refills the per-step device tensors (the Philox key and offset, a level's beta) before
    replay ``k`` and ``after_step(k, stats)`` reads the statistics after it.

    The warm-up (required before capture: it lets autograd and the allocator settle on a side
    stream) runs on the real state, which is saved and restored around it, so the replays
    produce what the eager loop would.
    """
    saved = [t.clone() for t in state]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        before_step(0)
        for _ in range(2):
            step()
    torch.cuda.current_stream().wait_stream(side)
    for t, s in zip(state, saved):
        t.copy_(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_stats = step()
    for k in range(n_steps):
        before_step(k)
        graph.replay()
        after_step(k, static_stats)

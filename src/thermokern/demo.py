"""``thermokern demo ebm``: train a small energy-based model on a 2-D toy distribution.

The model is an MLP energy ``E_theta: R^2 -> R`` trained by persistent contrastive divergence
(PCD): negatives come from a :class:`~thermokern.sampling.ReplayBuffer` of persistent chains,
refined every iteration by :func:`~thermokern.sampling.langevin_sample` (fused Langevin steps)
and written back; the loss ``E(data) - E(negatives)`` (plus a small penalty on E^2 that keeps
the energies bounded) lowers the energy of the data and raises that of the model's samples. A
PNG shows the data, the model's samples and the learned density ``exp(-E)``.

It runs on the CPU in about a minute (see :func:`train`); matplotlib is only needed for the
PNG (``pip install 'thermokern[demo]'``).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

import torch

from thermokern import sampling

DATASETS = ("8gaussians", "2moons")

# Everything lives in [-1, 1]^2: the replay buffer's noise range and the sampler's clamp.
_BOX = 1.0
_ALPHA = 0.03  # weight of the E^2 penalty (keeps the energies bounded)
_LR = 3e-3  # Adam, betas (0, 0.999) as in IGEBM
_FINAL_STEPS = 200  # sampler steps on the buffer's chains under the final model, for the plot


def toy_data(name: str, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` points (n, 2) of a toy distribution inside [-1, 1]^2.

    ``"8gaussians"``: eight isotropic Gaussians (std 0.05) on a circle of radius 0.7.
    ``"2moons"``: two interleaved half circles with Gaussian noise (std 0.05), scaled to
    [-0.9, 0.9] horizontally.
    """
    if name == "8gaussians":
        k = torch.randint(0, 8, (n,), generator=generator)
        angle = k.to(torch.float32) * (2 * math.pi / 8)
        centers = 0.7 * torch.stack([torch.cos(angle), torch.sin(angle)], 1)
        return centers + 0.05 * torch.randn(n, 2, generator=generator)
    if name == "2moons":
        upper = torch.rand(n, generator=generator) < 0.5
        t = torch.rand(n, generator=generator) * math.pi
        outer = torch.stack([torch.cos(t), torch.sin(t)], 1)
        inner = torch.stack([1.0 - torch.cos(t), 0.5 - torch.sin(t)], 1)
        pts = torch.where(upper[:, None], outer, inner)
        pts = (pts - torch.tensor([0.5, 0.25])) * 0.6  # x in [-0.9, 0.9], y in [-0.45, 0.45]
        return pts + 0.05 * 0.6 * torch.randn(n, 2, generator=generator)
    raise ValueError(f"dataset: expected one of {', '.join(DATASETS)}, got {name!r}")


class MLPEnergy(torch.nn.Module):
    """E(x) = MLP(x): 2 -> hidden -> hidden -> 1 with SiLU (smooth, so dE/dx is too)."""

    def __init__(self, hidden: int = 128):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(2, hidden),
            torch.nn.SiLU(),
            torch.nn.Linear(hidden, hidden),
            torch.nn.SiLU(),
            torch.nn.Linear(hidden, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def train(
    dataset: str = "8gaussians",
    *,
    iterations: int = 1500,
    batch: int = 256,
    langevin_steps: int = 20,
    step_size: float = 1e-3,
    metropolis: bool = False,
    seed: int = 0,
    threads: int | None = 1,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Train an :class:`MLPEnergy` by PCD on ``dataset``; returns the model and what the plot needs.

    Each iteration: ``batch`` negatives from the replay buffer (5 % fresh noise), refined by
    ``langevin_steps`` steps of :func:`~thermokern.sampling.langevin_sample` at T = 1
    (``step_size`` eta, noise sqrt(2 eta), clamped to the box; MALA with ``metropolis``,
    then without the clamp), written back; one Adam step on
    ``mean E(data) - mean E(neg) + 0.1 mean(E(data)^2 + E(neg)^2)``.

    ``threads``: torch's intra-op threads during training (restored after; None: as is). The
    default 1 is deliberate: every op here is tiny (a 256 x 64 MLP), so a second thread adds
    only hand-off cost, and on a busy machine its spin-waits dominate (measured on a loaded
    2-core machine: one sampler step 1.0 ms with 1 thread, 8.7 ms with 2).

    Returns:
        ``{"model", "data", "samples", "losses", "seconds", "iterations", ...}``.
    """
    saved = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        return _train(dataset, iterations, batch, langevin_steps, step_size, metropolis, seed, log)
    finally:
        torch.set_num_threads(saved)


def _train(dataset, iterations, batch, langevin_steps, step_size, metropolis, seed, log) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = MLPEnergy()
    opt = torch.optim.Adam(model.parameters(), lr=_LR, betas=(0.0, 0.999))
    # Cosine decay to 5 % of the rate: the late iterations refine instead of oscillating.
    lr_decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=iterations, eta_min=0.05 * _LR)
    buffer = sampling.ReplayBuffer(
        8192, (2,), reinit_prob=0.05, low=-_BOX, high=_BOX, device="cpu", seed=seed
    )
    data = toy_data(dataset, 20000, gen)
    losses: list[float] = []
    kw: dict[str, Any] = {"metropolis": True} if metropolis else {"clamp": (-_BOX, _BOX)}
    t0 = time.perf_counter()
    report = max(1, iterations // 10)
    for it in range(iterations):
        pos = data[torch.randint(0, data.shape[0], (batch,), generator=gen)]
        neg, idx = buffer.sample(batch)
        neg = sampling.langevin_sample(
            model, neg, n_steps=langevin_steps, step_size=step_size, seed=seed * 1_000_003 + it, **kw
        )
        buffer.update(idx, neg)
        e_pos, e_neg = model(pos), model(neg)
        loss = e_pos.mean() - e_neg.mean() + _ALPHA * (e_pos.square().mean() + e_neg.square().mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        lr_decay.step()
        losses.append(loss.item())
        if log is not None and ((it + 1) % report == 0 or it == 0):
            log(
                f"  iter {it + 1:5d}/{iterations}  loss {losses[-1]:+.4f}  "
                f"E(data) {e_pos.mean().item():+.3f}  E(neg) {e_neg.mean().item():+.3f}  "
                f"{time.perf_counter() - t0:6.1f} s"
            )
    seconds = time.perf_counter() - t0
    # The buffer's chains are short-run samples (5 % restart from noise every iteration): run
    # 2000 of them on for a while under the final model to show what it has learned.
    samples = sampling.langevin_sample(
        model, buffer.buffer[:2000], n_steps=_FINAL_STEPS, step_size=step_size, seed=seed + 1, **kw
    )
    return {
        "model": model,
        "data": data[:2000],
        "samples": samples,
        "final_steps": _FINAL_STEPS,
        "losses": losses,
        "seconds": seconds,
        "iterations": iterations,
        "dataset": dataset,
        "langevin_steps": langevin_steps,
        "metropolis": metropolis,
    }


def _density_grid(model: torch.nn.Module, n: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """(energy on an n x n grid over the box, the normalised density exp(-E) there)."""
    lin = torch.linspace(-_BOX, _BOX, n)
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    with torch.no_grad():
        energy = model(pts).reshape(n, n)
    logp = -energy - torch.logsumexp(-energy.reshape(-1), 0)
    return energy, logp.exp()


def plot(result: dict[str, Any], path: str) -> None:
    """Write the PNG: data | samples from the replay buffer | learned density exp(-E)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    energy, density = _density_grid(result["model"])
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2))
    box = [-_BOX, _BOX, -_BOX, _BOX]
    data, samples = result["data"].numpy(), result["samples"].numpy()
    axes[0].scatter(data[:, 0], data[:, 1], s=2, alpha=0.5, color="tab:blue")
    axes[0].set_title(f"data ({result['dataset']})")
    axes[1].scatter(samples[:, 0], samples[:, 1], s=2, alpha=0.5, color="tab:orange")
    how = "MALA" if result["metropolis"] else "Langevin"
    axes[1].set_title(f"samples (PCD buffer + {result['final_steps']} {how} steps)")
    axes[2].imshow(density.numpy(), origin="lower", extent=box, cmap="viridis")
    axes[2].contour(
        torch.linspace(-_BOX, _BOX, energy.shape[0]).numpy(),
        torch.linspace(-_BOX, _BOX, energy.shape[1]).numpy(),
        energy.numpy(),
        levels=12,
        colors="white",
        linewidths=0.4,
        alpha=0.6,
    )
    axes[2].set_title("learned density exp(-E) and energy contours")
    for ax in axes:
        ax.set_xlim(-_BOX, _BOX)
        ax.set_ylim(-_BOX, _BOX)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        f"thermokern demo ebm: {result['iterations']} PCD iterations in {result['seconds']:.0f} s (CPU)",
        fontsize=10,
    )
    fig.tight_layout()
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)

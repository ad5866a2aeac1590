"""``thermokern demo ebm`` / ``demo ais``: train a small energy-based model on a 2-D toy
distribution, sample it properly, and estimate its partition function.

The model is an MLP energy ``E_theta: R^2 -> R`` trained by persistent contrastive divergence
(PCD): negatives come from a :class:`~thermokern.sampling.ReplayBuffer` of persistent chains,
refined every iteration by :func:`~thermokern.sampling.langevin_sample` (fused Langevin steps)
and written back; the loss ``E(data) - E(negatives)`` (plus a small penalty on E^2 that keeps
the energies bounded) lowers the energy of the data and raises that of the model's samples.

The PCD chains are short-run samplers: they train the model but are not samples of the learned
density. :func:`sample_exchange` draws those, by replica exchange with MALA moves whose step
size is adapted first (:func:`~thermokern.sampling.replica_exchange`,
:func:`~thermokern.sampling.langevin_sample` with ``target_accept``), and reports their
acceptance, R-hat and ESS (:func:`~thermokern.sampling.rhat`, :func:`~thermokern.sampling.ess`).
The ``ebm`` PNG shows the data, the PCD buffer's samples, these samples and the learned density
``exp(-E)``. :func:`ais_study` (``demo ais``) estimates log Z of the learned model and of the
analytic 8-Gaussian mixture by annealed importance sampling as the number of temperatures grows,
against the exact values (quadrature on a fine grid for the model).

It runs on the CPU in about a minute (see :func:`train`); matplotlib is only needed for the
PNG (``pip install 'thermokern[demo]'``).
"""

from __future__ import annotations

import contextlib
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
# The sampled density is exp(-E) on the box: outside it a steep wall (the MLP's energy is
# meaningless there), so that the samples, the plotted density and log Z agree.
_WALL = 1000.0


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
    with _threads(threads):
        return _train(dataset, iterations, batch, langevin_steps, step_size, metropolis, seed, log)


@contextlib.contextmanager
def _threads(threads: int | None):
    """torch's intra-op threads set to ``threads`` inside the block (None: as is)."""
    saved = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        yield
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


def boxed_energy(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's energy on the box [-1, 1]^2, with a steep quadratic wall outside it."""

    def energy(x: torch.Tensor) -> torch.Tensor:
        outside = (x.abs() - _BOX).clamp(min=0.0).square().sum(1)
        return model(x) + _WALL * outside

    return energy


def sample_exchange(
    model: torch.nn.Module,
    *,
    chains: int = 1000,
    n_steps: int = 600,
    burn_in: int = 200,
    temperatures: int = 8,
    t_max: float = 10.0,
    target_accept: float = 0.574,
    seed: int = 0,
    threads: int | None = 1,
) -> dict[str, Any]:
    """Samples of the learned density ``exp(-E)`` (T = 1, on the box) by replica exchange.

    The MALA step size at T = 1 is adapted first (dual averaging toward ``target_accept``, 200
    steps, the median over the chains); replica r of the geometric ladder 1 .. ``t_max`` moves
    with step ``eta T_r``. ``chains`` chains start uniformly in the box; the T = 1 replica's
    draws after ``burn_in`` steps give the acceptance, R-hat (max over x, y) and bulk ESS (min).
    ``threads`` as in :func:`train`.
    """
    with _threads(threads):
        return _sample_exchange(model, chains, n_steps, burn_in, temperatures, t_max, target_accept, seed)


def _sample_exchange(model, chains, n_steps, burn_in, temperatures, t_max, target_accept, seed):
    gen = torch.Generator().manual_seed(seed)
    energy = boxed_energy(model)
    x0 = (torch.rand(chains, 2, generator=gen) * 2.0 - 1.0) * _BOX
    _, adapt = sampling.langevin_sample(
        energy, x0, n_steps=200, step_size=1e-3, metropolis=True, target_accept=target_accept,
        adapt_steps=200, seed=seed, return_stats=True,
    )  # fmt: skip
    eta = float(adapt.adapted_step_size.median())
    temps = [t_max ** (r / (temperatures - 1)) for r in range(temperatures)]
    traj, stats = sampling.replica_exchange(
        energy, x0, temperatures=temps, n_steps=n_steps, step_size=[eta * t for t in temps],
        seed=seed + 1, thin=1, return_stats=True,
    )  # fmt: skip
    cold = traj[0, :, burn_in:]  # (chains, draws, 2)
    return {
        "samples": cold[:, -1],
        "step_size": eta,
        "acceptance": float(stats.acceptance_rate[0]),
        "swap_acceptance": stats.swap_acceptance.tolist(),
        "rhat": float(sampling.rhat(cold).max()),
        "ess": float(sampling.ess(cold).min()),
        "draws": cold.shape[1],
        "temperatures": temps,
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


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fig.savefig(path, dpi=110)
    fig.clf()


def plot(result: dict[str, Any], path: str) -> None:
    """Write the PNG: data | PCD buffer samples | replica-exchange samples | density exp(-E).

    ``result`` is :func:`train`'s, with :func:`sample_exchange`'s under ``"exchange"``."""
    plt = _pyplot()
    energy, density = _density_grid(result["model"])
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.4))
    box = [-_BOX, _BOX, -_BOX, _BOX]
    data, samples = result["data"].numpy(), result["samples"].numpy()
    axes[0].scatter(data[:, 0], data[:, 1], s=2, alpha=0.5, color="tab:blue")
    axes[0].set_title(f"data ({result['dataset']})", fontsize=9)
    axes[1].scatter(samples[:, 0], samples[:, 1], s=2, alpha=0.5, color="tab:orange")
    how = "MALA" if result["metropolis"] else "Langevin"
    axes[1].set_title(
        f"PCD chains (training negatives)\nreplay buffer + {result['final_steps']} {how} steps",
        fontsize=9,
    )
    ex = result["exchange"]
    pts = ex["samples"].numpy()
    axes[2].scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5, color="tab:green")
    axes[2].set_title(
        f"samples of exp(-E): replica exchange ({len(ex['temperatures'])} temperatures, MALA)\n"
        f"T=1 acceptance {ex['acceptance']:.2f}, R-hat {ex['rhat']:.3f}, ESS {ex['ess']:.0f} "
        f"({len(pts)} chains x {ex['draws']} draws)",
        fontsize=9,
    )
    if result["dataset"] == "8gaussians":  # how much of each sits on the modes (within 0.15)
        exact = mode_mass(result["model"])
        for ax, what in ((axes[1], result["samples"]), (axes[2], ex["samples"])):
            frac = float(near_modes(what).double().mean())
            ax.set_xlabel(f"on a mode: {frac:.2f} (exp(-E) by quadrature: {exact:.2f})", fontsize=9)
    axes[3].imshow(density.numpy(), origin="lower", extent=box, cmap="viridis")
    axes[3].contour(
        torch.linspace(-_BOX, _BOX, energy.shape[0]).numpy(),
        torch.linspace(-_BOX, _BOX, energy.shape[1]).numpy(),
        energy.numpy(),
        levels=12,
        colors="white",
        linewidths=0.4,
        alpha=0.6,
    )
    axes[3].set_title("learned density exp(-E) and energy contours", fontsize=9)
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
    fig.tight_layout(rect=(0, 0.02, 1, 0.94))
    _save(fig, path)
    plt.close(fig)


def _centers() -> torch.Tensor:
    """The eight modes of ``8gaussians``."""
    angle = torch.arange(8, dtype=torch.float32) * (2 * math.pi / 8)
    return 0.7 * torch.stack([torch.cos(angle), torch.sin(angle)], 1)


def near_modes(points: torch.Tensor, radius: float = 0.15) -> torch.Tensor:
    """Whether each point lies within ``radius`` of one of the eight modes of ``8gaussians``."""
    return (points[:, None, :] - _centers()).square().sum(-1).min(1).values < radius**2


def _midpoint_grid(energy, n: int, half: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The midpoint rule over [-half, half]^2 on an n x n grid: (the points, float32; E there,
    float64; log of a cell's area)."""
    h = 2 * half / n
    lin = -half + h * (torch.arange(n, dtype=torch.float64) + 0.5)
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1).float()
    with torch.no_grad():
        e = torch.cat([energy(chunk) for chunk in pts.split(65536)]).double()
    return pts, e, 2 * math.log(h)


def mode_mass(model: torch.nn.Module, n: int = 600, half: float = 1.2) -> float:
    """The probability of :func:`near_modes` under the learned density exp(-E) on the box, by
    quadrature (the midpoint rule on an n x n grid)."""
    pts, e, _ = _midpoint_grid(boxed_energy(model), n, half)
    return float((-e - torch.logsumexp(-e, 0)).exp()[near_modes(pts)].sum())


def mixture_energy() -> tuple[Callable[[torch.Tensor], torch.Tensor], float]:
    """The 8-Gaussian toy density as an energy (equal weights, std 0.05, radius 0.7) and its
    exact log Z = log(2 pi 0.05^2) (the mixture is normalised)."""
    centers = _centers()
    var = 0.05**2

    def energy(x: torch.Tensor) -> torch.Tensor:
        sq = (x[:, None, :] - centers).square().sum(-1)
        return -torch.logsumexp(-0.5 * sq / var - math.log(8.0), dim=1)

    return energy, math.log(2 * math.pi * var)


def quadrature_log_z(
    energy: Callable[[torch.Tensor], torch.Tensor], n: int = 1201, half: float = 1.2
) -> float:
    """log ∫ exp(-E) over [-half, half]^2 by the midpoint rule on an n x n grid (float64)."""
    _, e, log_area = _midpoint_grid(energy, n, half)
    return float(torch.logsumexp(-e, 0)) + log_area


def ais_study(
    model: torch.nn.Module,
    *,
    levels: tuple[int, ...] = (4, 16, 64, 256, 1024),
    chains: int = 1024,
    seed: int = 0,
    threads: int | None = 1,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """log Z by :func:`~thermokern.sampling.ais` as the number of temperatures grows, for the
    learned energy (on the box) and the analytic 8-Gaussian mixture, with the exact values.

    Base N(0, 0.5^2 I); betas ``(j / K)^4`` (dense near the base, where the density changes
    fastest); one MALA transition per level with a step size falling geometrically from 0.05 to
    5e-4 (the modes are ~0.05 wide). ``threads`` as in :func:`train`.
    """
    with _threads(threads):
        return _ais_study(model, levels, chains, seed, log)


def _ais_study(model, levels, chains, seed, log) -> dict[str, Any]:
    sigma = 0.5
    base = lambda x: 0.5 * x.square().sum(1) / sigma**2
    base_log_z = math.log(2 * math.pi * sigma**2)
    mixture, mixture_log_z = mixture_energy()
    targets = {
        "learned EBM": (boxed_energy(model), quadrature_log_z(boxed_energy(model))),
        "8-Gaussian mixture": (mixture, mixture_log_z),
    }
    out: dict[str, Any] = {"levels": list(levels), "chains": chains, "targets": {}}
    gen = torch.Generator().manual_seed(seed)
    for name, (energy, exact) in targets.items():
        rows = []
        for k in levels:
            x0 = sigma * torch.randn(chains, 2, generator=gen)
            betas = [(j / k) ** 4 for j in range(k + 1)]
            t0 = time.perf_counter()
            res = sampling.ais(
                energy, x0, betas=betas, step_size=("geometric", 0.05, 5e-4), base_energy_fn=base,
                base_log_z=base_log_z, seed=seed + k,
            )  # fmt: skip
            rows.append(
                {
                    "levels": k,
                    "log_z": float(res.log_z),
                    "stderr": float(res.log_z_stderr),
                    "ess": float(res.ess),
                    "seconds": time.perf_counter() - t0,
                }
            )
            if log is not None:
                r = rows[-1]
                log(
                    f"  {name:20s} K={k:5d}  log Z {r['log_z']:+.4f} ± {r['stderr']:.4f} "
                    f"(exact {exact:+.4f})  ESS {r['ess']:7.1f}  {r['seconds']:.1f} s"
                )
        out["targets"][name] = {"exact": exact, "rows": rows}
    return out


def plot_ais(study: dict[str, Any], path: str) -> None:
    """Write the PNG: the AIS estimate ± its standard error against the number of levels, one
    panel per target, the exact log Z as a line."""
    plt = _pyplot()
    names = list(study["targets"])
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4.2))
    for ax, name in zip(axes, names):
        t = study["targets"][name]
        ks = [r["levels"] for r in t["rows"]]
        ax.errorbar(
            ks, [r["log_z"] for r in t["rows"]], yerr=[r["stderr"] for r in t["rows"]],
            fmt="o-", capsize=3, label="AIS estimate ± stderr",
        )  # fmt: skip
        ax.axhline(t["exact"], color="black", ls="--", lw=1, label="exact")
        ax.set_xscale("log")
        ax.set_xlabel("temperatures (annealing levels)")
        ax.set_ylabel("log Z")
        ax.set_title(f"{name}: {study['chains']} chains, MALA", fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle("thermokern demo ais: log Z by annealed importance sampling", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)

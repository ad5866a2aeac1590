"""Temperature scaling (post-hoc calibration) with a learnable temperature.

A classifier that is overconfident gives well-ranked but too sharp probabilities. Temperature
scaling fits one scalar T on held-out logits by minimising the cross-entropy of softmax(logits / T)
(Guo et al., "On Calibration of Modern Neural Networks", 2017). Here T is an ``nn.Parameter`` fed
straight to ``thermokern.entropy_regularized_cross_entropy(temperature=...)``: the op
differentiates it (it runs on logits / T), so no manual division is needed.

The data is synthetic: labels drawn from softmax(z), and a "model" that reports 2.5 z, i.e. is
overconfident by a factor 2.5, so the fitted T should come out near 2.5.

    python examples/temperature_scaling.py
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

import thermokern


def make_data(n: int = 4000, classes: int = 10, sharpness: float = 2.5, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, classes, generator=gen) * 1.5
    labels = torch.multinomial(torch.softmax(z, 1), 1, generator=gen).squeeze(1)
    return sharpness * z, labels


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """ECE: the confidence-weighted gap between accuracy and confidence, over equal-width bins."""
    conf, pred = torch.softmax(logits, 1).max(1)
    correct = (pred == labels).double()
    edges = torch.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in itertools.pairwise(edges):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            ece += inside.double().mean().item() * abs(
                correct[inside].mean().item() - conf[inside].mean().item()
            )
    return ece


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, *, use_thermokern: bool = True) -> float:
    """T minimising the mean cross-entropy of softmax(logits / T) (LBFGS on log T, so T > 0)."""
    log_t = torch.nn.Parameter(torch.zeros(()))
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, tolerance_grad=1e-9, tolerance_change=1e-12)

    def closure():
        opt.zero_grad()
        t = log_t.exp()
        if use_thermokern:
            loss = thermokern.entropy_regularized_cross_entropy(logits, labels, temperature=t)
        else:
            loss = F.cross_entropy(logits / t, labels)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp())


def main() -> dict[str, float]:
    logits, labels = make_data()
    t = fit_temperature(logits, labels)
    t_torch = fit_temperature(logits, labels, use_thermokern=False)
    out = {
        "fitted_T": t,
        "fitted_T_pytorch": t_torch,
        "nll_before": float(F.cross_entropy(logits, labels)),
        "nll_after": float(F.cross_entropy(logits / t, labels)),
        "ece_before": expected_calibration_error(logits, labels),
        "ece_after": expected_calibration_error(logits / t, labels),
    }
    for k, v in out.items():
        print(f"{k:>18}: {v:.4f}")
    return out


if __name__ == "__main__":
    main()

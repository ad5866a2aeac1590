"""The examples keep working (their fast parts)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_seed_example_trajectories_agree():
    mod = _load("seed_entropy_regularization")
    assert mod.part1() < 1e-5  # beta = -lambda reproduces the snippet's loss trajectory


def test_temperature_scaling_example():
    out = _load("temperature_scaling").main()
    # the learnable-temperature op fits the same T as F.cross_entropy(logits / T), near the
    # true overconfidence factor 2.5, and calibration improves
    assert abs(out["fitted_T"] - out["fitted_T_pytorch"]) < 1e-3
    assert abs(out["fitted_T"] - 2.5) < 0.15
    assert out["nll_after"] < out["nll_before"]
    assert out["ece_after"] < out["ece_before"] / 3

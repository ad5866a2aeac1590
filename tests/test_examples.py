"""The examples keep working (their fast parts)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

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


def test_grpo_head_example():
    pytest.importorskip("transformers")
    mod = _load("grpo_head")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: as fast on one thread, and ~10x faster on a busy machine
    try:  # a tiny Llama, 8 rollouts x 2 updates, on the CPU; no memory probe (its gc.collect is slow)
        out = mod.main(memory=False, verbose=False)
    finally:
        torch.set_num_threads(threads)
    tk, st = out["thermokern"], out["stock"]
    # step 0 (same weights, same rollout): the same per-token log-probs and entropies
    assert out["logp_max_diff"] < 1e-5 and out["entropy_max_diff"] < 1e-5
    # prompt and padding positions are ignored (0), every completion token is scored (< 0)
    _, mask = tk["rollouts"][0]
    assert not mask.all()  # some completion stopped at EOS: there is padding to mask
    assert tk["scored_tokens"] == int(mask.sum()) < tk["positions"]
    assert int((tk["first_logp"] < 0).sum()) == tk["scored_tokens"]
    assert int((tk["first_logp"] == 0).sum()) == tk["positions"] - tk["scored_tokens"]
    # every update: the same loss and gradient norm (float32 rounding apart)
    assert len(tk["loss"]) == len(st["loss"]) == 16
    assert out["loss_max_diff"] < 1e-5
    assert out["grad_norm_rel_diff"][0] < 1e-5 and out["grad_norm_max_rel_diff"] < 1e-4
    # GRPO raises the reward (the fraction of target-set tokens, ~1/16 at the start)
    r = tk["reward"]
    assert r[0] < 0.1
    assert r[-1] > 3 * r[0] and sum(r[-3:]) > 2 * sum(r[:3])

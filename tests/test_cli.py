"""The thermokern command: info and a tiny benchmark run (the real numbers are in bench/)."""

from __future__ import annotations

import io
import json

import pytest
import torch

from thermokern import bench, cli


def test_info_lists_every_backend():
    buf = io.StringIO()
    assert cli.info(out=buf) == 0
    text = buf.getvalue()
    for name in ("cpu", "cuda", "triton", "reference"):
        assert f"  {name}" in text
    assert "torch" in text and "cpu isa" in text


def test_parse_shape():
    assert bench.parse_shape("4096x32000") == (4096, 32000)
    for bad in ("4096x", "0x5", "ax3"):
        with pytest.raises(ValueError):
            bench.parse_shape(bad)


def test_tiny_benchmark_run_writes_json_and_table(tmp_path):
    path = tmp_path / "r.json"
    result = bench.run(
        shapes=["32x1000"],
        quick=True,
        progress=False,
        json_path=str(path),
        out=None,
        providers=["cpu", "eager"],
    )
    data = json.loads(path.read_text())
    rows = data["rows"]
    assert {r["provider"] for r in rows} == {"cpu", "eager"}
    assert {r["mode"] for r in rows} == {"fwd", "fwd+bwd"}
    # the eager samplers draw torch's own noise: not comparable with the reference
    inexact = {("langevin_step", "eager"), ("mala_accept", "eager")}
    for r in rows:
        assert r["median_ms"] > 0, r
        if not bench.OPS[r["op"]].has_reference:
            continue  # a sampler's output is random: no error column
        if (r["op"], r["provider"]) in inexact:
            assert r["max_abs_err"] is None, r
        else:
            assert r["max_abs_err"] < 1e-4, r
    assert {r["mode"] for r in rows if r["op"] in ("langevin_step", "mala_accept")} == {"fwd"}
    assert {"token_logprobs", "mala_accept"} <= {r["op"] for r in rows}
    table = bench.format_table(result)
    assert "softmax_entropy" in table and "langevin_step" in table and "32x1000" in table


@pytest.mark.parametrize("kept", [True, False], ids=["reference-kept", "reference-in-chunks"])
def test_in_place_providers_are_measured_against_the_original_input(monkeypatch, kept):
    """``cpu_`` updates the case's own input copies: its error is against the float64 step of
    the original input, whether the reference is kept or recomputed after the call, and the
    provider after it starts from the original input too."""
    from thermokern.bench import runner

    if not kept:
        monkeypatch.setattr(runner, "free_bytes", lambda device: 0)
    result = bench.run(
        ops=["langevin_step"],
        shapes=["64x1000"],
        quick=True,
        progress=False,
        out=None,
        providers=["cpu_", "cpu"],
    )
    errors = {r["provider"]: r["max_abs_err"] for r in result["rows"]}
    assert set(errors) == {"cpu_", "cpu"}
    assert all(err < 1e-6 for err in errors.values()), errors


def test_in_place_calls_restore_the_inputs():
    spec = bench.OPS["langevin_step"]
    gen = torch.Generator().manual_seed(0)
    xs = [spec.make_input((8, 100), torch.float32, "cpu", gen) for _ in range(3)]
    before = [x.clone() for x in xs]
    (prov,) = [p for p in spec.providers("cpu")[0] if p.name == "cpu_"]
    calls = bench.make_calls(prov, "fwd", xs, None)
    for i in range(5):
        calls.prepare(i)
        calls.call(i)
    value = bench.result_of_call("fwd", calls)
    assert not torch.equal(value, before[0])  # the step, kept apart from the input
    calls.call(1)
    calls.restore()
    assert all(torch.equal(x, b) for x, b in zip(xs, before, strict=True))


def test_tiny_linear_head_benchmark_run():
    ops = ["linear_cross_entropy", "linear_entropy_regularized_cross_entropy", "linear_token_logprobs"]
    result = bench.run(
        ops=ops,
        shapes=["16x8x100", "32x1000"],  # a head is tokens x hidden x vocab: the 2-D shape is skipped
        quick=True,
        progress=False,
        out=None,
        providers=["cpu", "cpu+compile", "eager", "compile", "torch_chunked", "matmuls"],
    )
    rows = result["rows"]
    assert {r["op"] for r in rows} == set(ops)
    assert {r["shape"] for r in rows} == {"16x8x100"}
    assert {r["mode"] for r in rows} == {"fwd", "fwd+bwd"}
    assert sum("32x1000 skipped" in n for n in result["notes"]) == len(ops)
    # no peer has the entropy term: they are compared at beta = 0 only
    assert {r["provider"] for r in rows if r["op"] == ops[1]} == {"cpu", "eager", "matmuls"}
    # the head inside torch.compile and compiled eager: for the scalar loss only
    assert {"cpu", "cpu+compile", "eager", "compile", "matmuls"} <= {
        r["provider"] for r in rows if r["op"] == ops[0]
    }
    for r in rows:
        assert "error" not in r and r["median_ms"] > 0, r
        if r["provider"] == "matmuls":
            assert r["max_abs_err"] is None, r  # a floor, not a loss
        else:
            assert r["max_abs_err"] < 1e-4, r
    # fwd+bwd compares the gradients w.r.t. hidden and weight, joined
    spec = bench.OPS["linear_cross_entropy"]
    gen = torch.Generator().manual_seed(0)
    x = spec.make_input((16, 8, 100), torch.float32, "cpu", gen)
    ref = spec.reference(x, spec.make_grad(x, gen), "fwd+bwd")
    assert ref.shape == (16 * 8 + 100 * 8,) and spec.reference(x, None, "fwd").shape == ()

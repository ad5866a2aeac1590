"""The thermokern command: info and a tiny benchmark run (the real numbers are in bench/)."""

from __future__ import annotations

import io
import json

import pytest

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
    for r in rows:
        assert r["median_ms"] > 0, r
        if not bench.OPS[r["op"]].has_reference:
            continue  # a sampler's output is random: no error column
        if r["op"] == "langevin_step" and r["provider"] == "eager":
            assert r["max_abs_err"] is None, r  # torch's own noise: not comparable
        else:
            assert r["max_abs_err"] < 1e-4, r
    assert {r["mode"] for r in rows if r["op"] == "langevin_step"} == {"fwd"}
    table = bench.format_table(result)
    assert "softmax_entropy" in table and "langevin_step" in table and "32x1000" in table

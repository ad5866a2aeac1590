"""bench/ncu_targets.py, the ``ncu`` step of bench/gpu_check.sh: its reading of an Nsight Compute
CSV export (ncu runs only on the device machine, so the export here is written by hand in
ncu's ``--csv --page raw --print-units base`` layout) and its rehearsal on CPU tensors."""

from __future__ import annotations

import importlib.util
import json
import math
import pathlib

import pytest

_PATH = pathlib.Path(__file__).resolve().parents[1] / "bench" / "ncu_targets.py"
_spec = importlib.util.spec_from_file_location("ncu_targets", _PATH)
ncu_targets = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ncu_targets)

_FIXED = ["ID", "Process ID", "Process Name", "Host Name", "Kernel Name", "Context", "Stream", "Block Size", "Grid Size", "Device", "CC"]  # fmt: skip
_MARKER = "at::cuda::(anonymous namespace)::spin_kernel(long)"


def _csv(kernels: list[tuple[str, dict]]) -> list[str]:
    """An ncu raw-page CSV export of ``kernels`` (name, {METRICS key: value}), with the tool's
    preamble line, the units row and thousands separators as ncu writes them."""
    metrics = list(ncu_targets.METRICS.values())
    q = lambda cells: ",".join(f'"{c}"' for c in cells)
    lines = [
        "==PROF== Disconnected from process 1234",
        q(_FIXED + metrics),
        q([""] * len(_FIXED) + ["unit"] * len(metrics)),
    ]
    for i, (name, values) in enumerate(kernels):
        cells = [
            str(i),
            "1234",
            "python3",
            "host",
            name,
            "1",
            "7",
            "(256, 1, 1)",
            "(16384, 1, 1)",
            "0",
            "9.0",
        ]
        cells += [f"{values.get(key, 0):,}" for key in ncu_targets.METRICS]
        lines.append(q(cells))
    return lines


def _kernel(time_ns, read, write, **more):
    return {"time_ns": time_ns, "dram_read": read, "dram_write": write, **more}


def test_summary_splits_at_the_markers_and_measures_against_the_copy():
    groups = [
        {"op": "softmax_entropy", "provider": "copy", "input_bytes": 4_000_000},
        {"op": "softmax_entropy", "provider": "cuda", "input_bytes": 4_000_000},
        {"op": "softmax_entropy", "provider": "triton", "input_bytes": 4_000_000},
    ]
    kernels = [
        (_MARKER, _kernel(1_000, 0, 0)),
        ("void at::native::copy_kernel(long)", _kernel(2_000, 4_000_000, 4_000_000, dram_pct=90.5)),
        (_MARKER, _kernel(1_000, 0, 0)),
        (
            "void thermokern::cuda::row_fwd<float>(Args)",
            _kernel(1_600, 4_000_000, 16_000, dram_pct=80, regs=40, grid=16384, block=256),
        ),
        ("void at::native::fill_kernel(long)", _kernel(400, 0, 8_000)),
        (_MARKER, _kernel(1_000, 0, 0)),
        ("_row_fwd_kernel", _kernel(1_000, 8_000_000, 16_000, dram_pct=95, occupancy_pct=60)),
    ]
    rows = ncu_targets.summarize(ncu_targets.read_kernels(_csv(kernels)), groups)
    copy, cuda, triton = rows
    assert copy["kernels"] == 1 and copy["gbs"] == pytest.approx(8e6 / 2_000)
    assert copy["of_input"] == pytest.approx(2.0) and copy["pct_of_copy"] == pytest.approx(100.0)
    # two kernels (the marker left out); the longest one is reported
    assert cuda["kernels"] == 2 and cuda["time_us"] == pytest.approx(2.0)
    assert cuda["gbs"] == pytest.approx(4_024_000 / 2_000)
    assert cuda["pct_of_copy"] == pytest.approx(100 * 4_024_000 / 8_000_000)
    assert cuda["main"]["name"] == "void thermokern::cuda::row_fwd<float>"
    assert (cuda["main"]["regs"], cuda["main"]["grid"], cuda["main"]["dram_pct"]) == (40, 16384, 80)
    # a second read of the input shows as 2x the input's bytes
    assert triton["of_input"] == pytest.approx(8_016_000 / 4_000_000)
    assert triton["main"]["occupancy_pct"] == 60
    table = ncu_targets.format_summary(rows).splitlines()
    assert len(table) == 2 + len(groups)
    assert all(line.count("|") == table[0].count("|") for line in table)
    assert "| softmax_entropy | triton | 1 | 1.0 |" in table[-1]


def test_summary_refuses_a_profile_that_does_not_match_the_order():
    groups = [{"op": "logsumexp", "provider": "copy", "input_bytes": 8}, {"op": "logsumexp", "provider": "cuda", "input_bytes": 8}]  # fmt: skip
    kernels = ncu_targets.read_kernels(_csv([(_MARKER, {}), ("copy", _kernel(10, 8, 8))]))
    with pytest.raises(ValueError, match="1 marker kernels for 2 profiled groups"):
        ncu_targets.summarize(kernels, groups)
    with pytest.raises(ValueError, match="no header row"):
        ncu_targets.read_kernels(["==PROF== no kernels were profiled"])


def test_a_metric_missing_from_the_export_reads_as_nan():
    lines = _csv([(_MARKER, {}), ("k", _kernel(10, 8, 8))])
    cut = [",".join(line.split(",")[:-1]) for line in lines[1:]]  # drop the last metric column
    (_, k) = ncu_targets.read_kernels(cut)
    assert k["time_ns"] == 10 and math.isnan(k["block"])


def test_cpu_rehearsal_writes_the_order(tmp_path):
    order = tmp_path / "order.json"
    argv = ["--device", "cpu", "--shape", "8x100", "--dtype", "float32", "--order", str(order)]
    assert ncu_targets.main([*argv, "--op", "softmax_entropy", "--op", "langevin_step", "--providers", "cpu,cpu_"]) == 0  # fmt: skip
    groups = json.loads(order.read_text())
    assert [(g["op"], g["provider"]) for g in groups] == [
        ("softmax_entropy", "copy"),
        ("softmax_entropy", "cpu"),
        ("langevin_step", "copy"),
        ("langevin_step", "cpu"),
        ("langevin_step", "cpu_"),
    ]
    assert all(g["input_bytes"] == 8 * 100 * 4 for g in groups)
    with pytest.raises(SystemExit):
        ncu_targets.main([*argv, "--op", "no_such_op"])
    with pytest.raises(SystemExit):  # the ops are named (gpu_check.sh passes its TARGET_OPS)
        ncu_targets.main(argv)


def test_default_providers_are_the_kernels():
    from thermokern import bench

    kinds = {"cuda": "thermokern", "cuda_": "thermokern", "cuda+compile": "thermokern", "liger": "external",
             "eager": "baseline", "compile": "compiled"}  # fmt: skip
    provs = [
        bench.Provider(name, lambda: None, kind=kind, compiled="compile" in name)
        for name, kind in kinds.items()
    ]
    assert [p.name for p in ncu_targets.default_providers(provs)] == ["cuda", "cuda_", "liger"]

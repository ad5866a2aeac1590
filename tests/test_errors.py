"""Bad input raises a Python exception whose message names the argument."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

import thermokern


def test_integer_logits():
    with pytest.raises(TypeError, match="logits"):
        thermokern.softmax_entropy(torch.ones(2, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match="logits"):
        thermokern.softmax_entropy(torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="logits"):
        thermokern.softmax_entropy([[1.0, 2.0]])


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan, -math.inf])
def test_temperature_out_of_range(bad):
    with pytest.raises(ValueError, match="temperature"):
        thermokern.softmax_entropy(torch.randn(2, 3), temperature=bad)


@pytest.mark.parametrize("bad", ["1.0", None, True, torch.ones(2, dtype=torch.bool)])
def test_temperature_wrong_type(bad):
    with pytest.raises(TypeError, match="temperature"):
        thermokern.softmax_entropy(torch.randn(2, 3), temperature=bad)


def test_temperature_tensor_errors():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="temperature"):
        thermokern.softmax_entropy(x, temperature=torch.tensor([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="temperature"):
        thermokern.softmax_entropy(x, temperature=torch.ones(3))  # not broadcastable to (4,)


@pytest.mark.parametrize("dim", [2, -3, 5])
def test_dim_out_of_range(dim):
    with pytest.raises(IndexError, match="dim"):
        thermokern.softmax_entropy(torch.randn(2, 3), dim)
    with pytest.raises(ValueError, match="dim"):  # also a ValueError
        thermokern.softmax_entropy(torch.randn(2, 3), dim)


def test_dim_wrong_type_and_zero_dim_input():
    with pytest.raises(TypeError, match="dim"):
        thermokern.softmax_entropy(torch.randn(2, 3), 1.0)
    with pytest.raises(IndexError, match="dim"):
        thermokern.softmax_entropy(torch.tensor(1.0))


def test_empty_class_dim():
    with pytest.raises(ValueError, match="logits"):
        thermokern.softmax_entropy(torch.randn(3, 0))


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend"):
        thermokern.softmax_entropy(torch.randn(2, 3), backend="tpu")
    with pytest.raises(TypeError, match="backend"):
        thermokern.softmax_entropy(torch.randn(2, 3), backend=None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_unavailable_backend_says_why():
    with pytest.raises(RuntimeError, match="backend: 'cuda'.*no GPU|backend: 'cuda'.*not compiled"):
        thermokern.softmax_entropy(torch.randn(2, 3), backend="cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-only check")
def test_cpu_backend_rejects_other_devices_via_op_checks():
    # The C++ ops check their arguments themselves too (for direct torch.ops callers).
    one = torch.ones(1)
    with pytest.raises(ValueError, match="temperature"):
        torch.ops.thermokern.softmax_entropy_fwd(torch.randn(2, 3), torch.ones(3))
    with pytest.raises(TypeError, match="temperature"):
        torch.ops.thermokern.softmax_entropy_fwd(torch.randn(2, 3), torch.ones(1, dtype=torch.float64))
    with pytest.raises(ValueError, match="logits"):
        torch.ops.thermokern.softmax_entropy_fwd(torch.randn(2, 3, 4), one)
    with pytest.raises(ValueError, match="unit stride"):
        torch.ops.thermokern.softmax_entropy_fwd(torch.randn(4, 3).t(), one)
    with pytest.raises(TypeError, match="logits"):
        torch.ops.thermokern.softmax_entropy_fwd(torch.ones(2, 3, dtype=torch.int32), one)
    h, m, ln = torch.ops.thermokern.softmax_entropy_fwd(torch.randn(2, 3), one)
    with pytest.raises(ValueError, match="grad"):
        torch.ops.thermokern.softmax_entropy_bwd(torch.randn(3), torch.randn(2, 3), one, h, m, ln)
    with pytest.raises(TypeError, match="shift"):
        torch.ops.thermokern.softmax_entropy_bwd(torch.randn(2), torch.randn(2, 3), one, h, m.double(), ln)
    ce = torch.ops.thermokern.cross_entropy_fwd
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="target"):
        ce(x, torch.tensor([0, 3]), one, 0.0, 0.0, -100, 0.0)
    with pytest.raises(TypeError, match="target"):
        ce(x, torch.tensor([0, 1], dtype=torch.int32), one, 0.0, 0.0, -100, 0.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        ce(x, torch.tensor([0, 1]), one, 0.0, 1.5, -100, 0.0)


def test_cpu_isa_override_validated():
    from thermokern import _C

    with pytest.raises(ValueError, match="cpu_isa"):
        _C._set_cpu_isa("sse9")
    _C._set_cpu_isa("")


def test_import_without_triton():
    """thermokern imports and works with triton missing; the triton backend says why."""
    code = (
        "import sys\n"
        "sys.modules['triton'] = None  # import triton now raises ModuleNotFoundError\n"
        "import torch, thermokern\n"
        "info = thermokern.available_backends()['triton']\n"
        "assert not info.available and 'not installed' in info.reason, info\n"
        "print(float(thermokern.softmax_entropy(torch.zeros(1, 4))[0]))\n"
        "try:\n"
        "    thermokern.softmax_entropy(torch.zeros(1, 4), backend='triton')\n"
        "except RuntimeError as e:\n"
        "    assert 'triton' in str(e), e\n"
        "else:\n"
        "    raise SystemExit('expected an error')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert abs(float(out.stdout.strip()) - math.log(4)) < 1e-6


# ----------------------------------------------------------------------------- partition functions
def test_partition_errors():
    x = torch.randn(3, 4)
    with pytest.raises(TypeError, match="input"):
        thermokern.logsumexp([1.0, 2.0], 0)
    with pytest.raises(TypeError, match="input"):
        thermokern.logsumexp(torch.ones(2, dtype=torch.complex64), 0)
    with pytest.raises(TypeError, match="mask"):
        thermokern.logsumexp(x, 1, mask=torch.ones(3, 4))
    with pytest.raises(ValueError, match="mask"):
        thermokern.logsumexp(x, 1, mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="weight"):
        thermokern.logsumexp(x, 1, weight=torch.ones(5))
    with pytest.raises(TypeError, match="weight"):
        thermokern.logsumexp(x, 1, weight=torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="dim"):
        thermokern.logsumexp(x, (1, 1))
    with pytest.raises(ValueError, match="dim"):
        thermokern.logsumexp(x, ())
    with pytest.raises(IndexError, match="dim"):
        thermokern.logsumexp(x, 2)
    with pytest.raises(TypeError, match="dim"):
        thermokern.logsumexp(x, 1.0)
    with pytest.raises(ValueError, match="backend"):
        thermokern.logsumexp(x, 1, backend="gpu")


@pytest.mark.parametrize("op", ["log_partition", "free_energy", "thermo_stats"])
def test_energy_op_errors(op):
    fn = getattr(thermokern, op)
    e = torch.randn(3, 4)
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="temperature"):
            fn(e, temperature=bad)
    with pytest.raises(ValueError, match="temperature"):
        fn(e, temperature=torch.tensor([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="temperature"):
        fn(e, temperature=torch.ones(4))  # not broadcastable to the output (3,)
    with pytest.raises(TypeError, match="energy"):
        fn(torch.ones(3, 4, dtype=torch.int64))  # integer energies: float is needed
    with pytest.raises(IndexError, match="dim"):
        fn(e, 3)
    with pytest.raises(IndexError, match="energy"):
        fn(torch.tensor(1.0))


def test_partition_op_checks_name_arguments():
    # calling the C++ op directly still gives clear messages
    ops = torch.ops.thermokern
    x = torch.randn(2, 3, 1)
    k = torch.ones(1)
    with pytest.raises(ValueError, match="input"):
        ops.partition_fwd(torch.randn(2, 3), None, None, k, False, 0)
    with pytest.raises(ValueError, match="input"):
        ops.partition_fwd(torch.randn(2, 0, 1), None, None, k, False, 0)
    with pytest.raises(TypeError, match="mask"):
        ops.partition_fwd(x, None, torch.ones(2, 3, 1), k, False, 0)
    with pytest.raises(TypeError, match="weight"):
        ops.partition_fwd(x, torch.ones(2, 3, 1, dtype=torch.float64), None, k, False, 0)
    with pytest.raises(ValueError, match="temperature"):
        ops.partition_fwd(x, None, None, torch.ones(3), False, 0)
    with pytest.raises(ValueError, match="moments"):
        ops.partition_fwd(x, None, None, k, False, 1)
    shift, total, _, _ = ops.partition_fwd(x, None, None, k, False, 0)
    with pytest.raises(ValueError, match="coef"):
        ops.partition_bwd(x, None, None, k, False, shift, total, torch.ones(2, 4), False)
    with pytest.raises(ValueError, match="weight_grad"):
        ops.partition_bwd(x, None, None, k, False, shift, total, torch.ones(2, 1), True)


def test_kernel_declaration_without_its_schema():
    """A Python package newer than its built extension fails at import with a clear message."""
    from thermokern._dispatch import KernelOp

    with pytest.raises(ImportError, match="older than the Python package"):
        KernelOp("no_such_op", fake=lambda: None)

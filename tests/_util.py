"""Tolerances and helpers shared by the tests."""

from __future__ import annotations

import torch

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]

# (atol, rtol) of an op's output against the float64 reference evaluated on the same
# (already rounded) input. 16-bit outputs are rounded to their dtype: a few ulps of it.
TOLERANCES = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (3e-5, 3e-5),  # exp_u20 on CPU (~20 ulp) and __expf on CUDA
    torch.float16: (2e-3, 2e-3),  # 2 ulp of float16 around 1..10
    torch.bfloat16: (1.6e-2, 1.6e-2),  # 2 ulp of bfloat16
}

# Gradients: atol is relative to the largest reference gradient magnitude.
GRAD_TOLERANCES = {
    torch.float64: (1e-9, 1e-9),
    torch.float32: (5e-5, 5e-5),
    torch.float16: (4e-3, 4e-3),
    torch.bfloat16: (2e-2, 2e-2),
}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, grad: bool = False) -> None:
    """Compare with per-dtype tolerances; NaN never matches anything but NaN at the same place."""
    atol, rtol = (GRAD_TOLERANCES if grad else TOLERANCES)[dtype]
    expected = expected.double()
    actual = actual.double()
    if grad and expected.numel():
        atol = atol * max(expected.abs().max().item(), 1e-30)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol, equal_nan=True)
    # equal_nan allows NaN only where the reference has NaN.
    assert not torch.isnan(actual[~torch.isnan(expected)]).any()

"""The C++ Philox4x32-10 (csrc/include/thermokern/philox.h) equals Triton's tl.randint4x."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import cpu_backends

from thermokern import _C

# Random123's known-answer vectors for philox4x32_10, reached through the (seed, offset)
# mapping key = (seed lo, seed hi), counter = (offset lo, offset hi, 0, 0).
KAT = [
    (0, 0, [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
]


@pytest.mark.parametrize("seed,offset,expected", KAT)
def test_known_answer(seed, offset, expected):
    assert _C._philox_randint4x(seed, offset, 1) == expected


@pytest.mark.skipif("triton" not in cpu_backends(), reason="needs triton (interpreter)")
@pytest.mark.parametrize("seed", [0, 1, 0xDEADBEEF, 2**40 + 123, 2**63 - 1])
@pytest.mark.parametrize("offset", [0, 7, 2**31 - 3, 2**32 + 5, 2**40])
def test_matches_triton_randint4x(seed, offset):
    import triton
    import triton.language as tl

    @triton.jit
    def _randint4x_kernel(out_ptr, seed, offset, N: tl.constexpr):
        idx = tl.arange(0, N)
        r0, r1, r2, r3 = tl.randint4x(seed, offset + idx.to(tl.int64))
        tl.store(out_ptr + idx * 4 + 0, r0)
        tl.store(out_ptr + idx * 4 + 1, r1)
        tl.store(out_ptr + idx * 4 + 2, r2)
        tl.store(out_ptr + idx * 4 + 3, r3)

    n = 16
    out = torch.empty(n * 4, dtype=torch.int32)
    _randint4x_kernel[(1,)](out, seed, offset, N=n)
    got = out.numpy().view(np.uint32).tolist()
    assert got == _C._philox_randint4x(seed, offset, n)

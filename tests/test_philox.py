"""The C++ Philox4x32-10 (csrc/include/thermokern/philox.h) equals Triton's tl.randint4x."""

from __future__ import annotations

import pytest
from _util import triton_randint4x
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
    n = 16
    got = triton_randint4x(seed, offset, n).reshape(-1).tolist()
    assert got == _C._philox_randint4x(seed, offset, n)

// Philox4x32-10 counter-based generator (Salmon et al., SC'11), host and device.
//
// Bit-compatible with Triton's `tl.randint4x(seed, offset)`: the key is the 64-bit
// seed split into (low, high) 32-bit words and the counter is
// (offset low, offset high, 0, 0). Each counter value yields four 32-bit words.
#pragma once

#include <cstdint>

#include "thermokern/common.h"

namespace thermokern {

struct Philox4x32 {
  uint32_t x[4];
};

TK_INLINE uint32_t philox_mulhi32(uint32_t a, uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __umulhi(a, b);
#else
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
#endif
}

// Raw Philox4x32 with `rounds` rounds on counter c and key (k0, k1).
TK_INLINE Philox4x32 philox4x32(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                uint32_t k0, uint32_t k1, int rounds = 10) {
  constexpr uint32_t kMulA = 0xD2511F53u;
  constexpr uint32_t kMulB = 0xCD9E8D57u;
  constexpr uint32_t kWeylA = 0x9E3779B9u;
  constexpr uint32_t kWeylB = 0xBB67AE85u;
  for (int r = 0; r < rounds; ++r) {
    const uint32_t hi_a = philox_mulhi32(kMulA, c0);
    const uint32_t lo_a = kMulA * c0;
    const uint32_t hi_b = philox_mulhi32(kMulB, c2);
    const uint32_t lo_b = kMulB * c2;
    c0 = hi_b ^ c1 ^ k0;
    c1 = lo_b;
    c2 = hi_a ^ c3 ^ k1;
    c3 = lo_a;
    k0 += kWeylA;
    k1 += kWeylB;
  }
  return Philox4x32{{c0, c1, c2, c3}};
}

// The stream used by thermokern ops: key = seed, counter = (offset, 0, 0) as 64-bit
// offset, equal to Triton's tl.randint4x(seed, offset).
TK_INLINE Philox4x32 philox_randint4x(uint64_t seed, uint64_t offset) {
  return philox4x32(static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32), 0u, 0u,
                    static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// uint32 -> float uniform in (0, 1]: never 0, so log(u) in Box-Muller is finite.
TK_INLINE float philox_uint_to_uniform_open0(uint32_t v) {
  return (static_cast<float>(v >> 8) + 1.0f) * (1.0f / 16777216.0f);
}

}  // namespace thermokern

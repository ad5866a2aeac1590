// Philox4x32-10 counter-based generator (Salmon et al., SC'11), host and device.
//
// Bit-compatible with Triton's `tl.randint4x(seed, offset)`: the key is the 64-bit
// seed split into (low, high) 32-bit words and the counter is
// (offset low, offset high, 0, 0). Each counter value yields four 32-bit words.
#pragma once

#include <cstdint>
#include <type_traits>

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



// ---------------------------------------------------------------------------------------
// [Note: Langevin noise layout]
// The standard normal noise of langevin_step (csrc/thermokern.cpp) on every backend:
//
//   Element e of the tensor (its index in row-major logical order, whatever the strides)
//   takes output word j = e % 4 of philox_randint4x(seed, offset + e / 4): Philox4x32-10,
//   key = the 64-bit seed, counter = offset + e / 4 (64-bit, wrapping), exactly Triton's
//   tl.randint4x(seed, offset + e // 4). The words become uniforms
//       u_j = ((w_j >> 8) + 1) * 2^-24  in (0, 1]
//   (philox_uint_to_uniform_open0: exact in float32 and float64, so every backend and dtype
//   sees the same 2^24 values; never 0, so the logarithm is finite), and Box-Muller on the
//   pairs (0, 1) and (2, 3) gives the normals
//       n_0 = sqrt(-2 ln u_0) cos(2 pi u_1),   n_1 = sqrt(-2 ln u_0) sin(2 pi u_1),
//       n_2 = sqrt(-2 ln u_2) cos(2 pi u_3),   n_3 = sqrt(-2 ln u_2) sin(2 pi u_3).
//   So a step over n elements uses the counters offset .. offset + ceil(n / 4) - 1; the next
//   step may start at offset + ceil(n / 4) (or, simpler, offset + n) without overlap. |n_j|
//   <= sqrt(2 * 24 ln 2) = 5.77: the 24-bit uniforms cut the normal's tails beyond that (a
//   probability of 8e-9 per element), harmless for Langevin dynamics.
//
// The functions below evaluate the transcendental parts without libm, identically on the
// host and the device (--use_fast_math cannot swap in approximate intrinsics): with u = k 2^-24
// for the integer k = (w >> 8) + 1 in [1, 2^24],
//   * -2 ln u = 2 (24 - j) ln 2 - 2 ln m, where k = m 2^j with m in [sqrt(1/2), sqrt(2))
//     (j from k's float exponent, exact), ln m = 2 atanh(s) with s = (m - 1) / (m + 1),
//     |s| <= 0.1716, by the atanh Taylor series (5 terms for float: truncation < 3e-9
//     relative; 10 for double: < 3e-17). m - 1 is exact, so u near 1 keeps full relative
//     accuracy (a generic fast log loses it there).
//   * 2 pi u = q pi/2 + t with the nearest quarter turn q = round(4u) and |t| <= pi/4, both
//     from k in integer arithmetic (exact); sin t and cos t by their Taylor series (float:
//     to t^9 and t^8, truncation < 4e-8 relative; double: to t^15 and t^16, < 1e-16), then
//     rotated by q quarter turns.
// In float the normals are within ~3e-7 relative of the exact Box-Muller values of the same
// uniforms (measured by tests/cpp/test_philox.cpp), and every backend follows these formulas
// (the vectorised CPU kernels in csrc/cpu/langevin_kernel.h, Triton in kernels/langevin.py).

namespace detail {

// The noise maths is written for these two types only (its series lengths, its rounding).
template <typename T>
constexpr bool kFloatOrDouble = std::is_same_v<T, float> || std::is_same_v<T, double>;

// The bits of a 4-byte value as another 4-byte type (float <-> uint32_t); memcpy is the
// defined way on the host and compiles to a register move under nvcc as well.
template <typename To, typename From>
TK_INLINE To bit_cast(From v) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast: sizes differ");
  To t;
  __builtin_memcpy(&t, &v, sizeof t);
  return t;
}

// Correctly rounded division and square root of float or double also under nvcc
// --use_fast_math (which makes float '/' and sqrtf approximate on the device).
template <typename T>
TK_INLINE T div_rn(T a, T b) {
  static_assert(kFloatOrDouble<T>, "div_rn: float or double");
#if defined(__CUDA_ARCH__)
  if constexpr (sizeof(T) == sizeof(float)) return __fdiv_rn(a, b);
#endif
  return a / b;  // IEEE on the host, and for double on the device
}

template <typename T>
TK_INLINE T sqrt_rn(T a) {
  static_assert(kFloatOrDouble<T>, "sqrt_rn: float or double");
  constexpr bool kFloat = sizeof(T) == sizeof(float);
#if defined(__CUDA_ARCH__)
  if constexpr (kFloat) return __fsqrt_rn(a);
  else return __dsqrt_rn(a);
#else
  if constexpr (kFloat) return __builtin_sqrtf(a);
  else return __builtin_sqrt(a);
#endif
}

}  // namespace detail

// Series lengths and coefficients (Taylor, exact rationals rounded to T) of the noise
// functions for T = float or double (the truncation errors are in [Note: Langevin noise layout]):
//   atanh(s) / s = sum_i z^i / (2i + 1), z = s^2: kLog terms;
//   sin(t) / t = sum_i (-1)^i t^{2i} / (2i + 1)!,  cos(t) = sum_i (-1)^i t^{2i} / (2i)!: kSin, kCos.
template <typename T>
struct NoiseSeries {
  static_assert(detail::kFloatOrDouble<T>, "NoiseSeries: float or double");
  static constexpr bool kDouble = sizeof(T) == sizeof(double);
  static constexpr int kLog = kDouble ? 10 : 5;
  static constexpr int kSin = kDouble ? 8 : 5;
  static constexpr int kCos = kDouble ? 9 : 5;
  TK_HOST_DEVICE static constexpr T log_c(int i) { return T(1) / static_cast<T>(2 * i + 1); }
};

// (-1)^i / n! for the sine (n = 2i + 1) and cosine (n = 2i) series, computed in double and
// rounded once to T.
template <typename T>
TK_INLINE constexpr T inv_factorial_signed(int n) {
  double f = 1.0;
  for (int i = 2; i <= n; ++i) f *= static_cast<double>(i);
  return static_cast<T>(((n / 2) % 2 ? -1.0 : 1.0) / f);
}

// The integer k = (w >> 8) + 1 in [1, 2^24] behind u = k 2^-24 (philox_uint_to_uniform_open0).
TK_INLINE uint32_t noise_k24(uint32_t w) { return (w >> 8) + 1u; }

// -2 ln(k 2^-24) >= 0 for k in [1, 2^24] (see [Note: Langevin noise layout]).
template <typename T>
TK_INLINE T noise_neg2_log_u(uint32_t k) {
  const uint32_t bits = detail::bit_cast<uint32_t>(static_cast<float>(k));  // exact: k < 2^25
  int32_t j = static_cast<int32_t>(bits >> 23) - 127;
  uint32_t mbits = (bits & 0x007FFFFFu) | 0x3F800000u;  // m in [1, 2)
  if (mbits >= 0x3FB504F3u) {                            // m >= sqrt(2) (as float): halve m
    mbits -= 0x00800000u;
    j += 1;
  }
  const T f = static_cast<T>(detail::bit_cast<float>(mbits)) - T(1);  // m - 1, exact
  const T s = detail::div_rn(f, f + T(2));
  const T z = s * s;
  T p = NoiseSeries<T>::log_c(NoiseSeries<T>::kLog - 1);
  TK_UNROLL
  for (int i = NoiseSeries<T>::kLog - 2; i >= 0; --i) p = p * z + NoiseSeries<T>::log_c(i);
  constexpr T kTwoLn2 = static_cast<T>(1.3862943611198906188344642429164);
  return static_cast<T>(24 - j) * kTwoLn2 - T(4) * s * p;
}

// sin and cos of 2 pi k 2^-24 for k in [1, 2^24] (see [Note: Langevin noise layout]).
template <typename T>
TK_INLINE void noise_sincos_2pi_u(uint32_t k, T& sin_out, T& cos_out) {
  const uint32_t q = (k + (1u << 21)) >> 22;                                   // 0 .. 4
  const int32_t r = static_cast<int32_t>(k) - static_cast<int32_t>(q << 22);  // [-2^21, 2^21]
  constexpr T kTurn = static_cast<T>(6.283185307179586476925286766559 / 16777216.0);  // 2 pi 2^-24
  const T t = static_cast<T>(r) * kTurn;
  const T t2 = t * t;
  constexpr int kS = NoiseSeries<T>::kSin, kC = NoiseSeries<T>::kCos;
  T sp = inv_factorial_signed<T>(2 * kS - 1);
  TK_UNROLL
  for (int i = kS - 2; i >= 0; --i) sp = sp * t2 + inv_factorial_signed<T>(2 * i + 1);
  T cp = inv_factorial_signed<T>(2 * kC - 2);
  TK_UNROLL
  for (int i = kC - 2; i >= 0; --i) cp = cp * t2 + inv_factorial_signed<T>(2 * i);
  const T st = t * sp;
  // Rotate by q quarter turns: (sin, cos) -> (cos, -sin) per quarter.
  const T a = (q & 1u) ? cp : st;
  const T b = (q & 1u) ? st : cp;
  sin_out = (q & 2u) ? -a : a;
  cos_out = ((q + 1u) & 2u) ? -b : b;
}

template <typename T>
struct Normal4 {
  T v[4];
};

// The four normals of one Philox output block (pairs (0, 1) and (2, 3)).
template <typename T>
TK_INLINE Normal4<T> noise_normal4(const Philox4x32& r) {
  Normal4<T> n;
  const T ra = detail::sqrt_rn(noise_neg2_log_u<T>(noise_k24(r.x[0])));
  const T rb = detail::sqrt_rn(noise_neg2_log_u<T>(noise_k24(r.x[2])));
  T sa, ca, sb, cb;
  noise_sincos_2pi_u<T>(noise_k24(r.x[1]), sa, ca);
  noise_sincos_2pi_u<T>(noise_k24(r.x[3]), sb, cb);
  n.v[0] = ra * ca;
  n.v[1] = ra * sa;
  n.v[2] = rb * cb;
  n.v[3] = rb * sb;
  return n;
}

// Normals of elements 4c .. 4c + 3 for counter c = offset + e / 4 (see the Note).
template <typename T>
TK_INLINE Normal4<T> langevin_normal4(uint64_t seed, uint64_t counter) {
  return noise_normal4<T>(philox_randint4x(seed, counter));
}
}  // namespace thermokern

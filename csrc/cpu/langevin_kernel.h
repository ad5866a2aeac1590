// langevin_step CPU kernels, compiled once per ISA ([Note: per-ISA kernels] in csrc/cpu/isa.h).
//
// [Note: the Langevin CPU kernel]
// A task owns a range of Philox counters (4 elements each, [Note: Langevin noise layout] in
// thermokern/philox.h) and walks it in blocks of kBlock counters: first the block's normals
// go into a small buffer in element order (it stays in L1), then one vectorised sweep reads x
// and grad and writes clamp(x - eta clip(grad) + sigma n): the noise never reaches memory.
// The normals come from a SIMD Philox (philox_groups: 32x32 -> 64-bit multiplies with
// _mm512_mul_epu32 / _mm256_mul_epu32, four groups of W counters interleaved) and the header's
// own log / sincos series evaluated lane-wise, with the division and square root correctly
// rounded as in the header. The uniform bits are the header's exactly; the float normals may
// differ from the header's scalar ones by an ulp where the compiler fuses a multiply-add
// differently. float64 takes its words from the SIMD Philox and evaluates the double series
// per counter (not a speed target).
// The kernel is compute-bound: float32 noise costs ~3-4 ns per counter on one core of the
// 2-core EPYC (Philox about two thirds of it), streaming x, grad and the result ~1.5 ns.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
#include <immintrin.h>
#endif

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/core/ScalarType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "dispatch.h"
#include "langevin_args.h"
#include "thermokern/philox.h"
#include "vec_math.h"

namespace thermokern::cpu {
inline namespace CPU_CAPABILITY {
namespace langevin {

using at::vec::Vectorized;

// ------------------------------------------------------------------------------ SIMD layer
// U: W lanes of uint32, F: W lanes of float, M: a lane mask. Only what the noise needs.
#if defined(CPU_CAPABILITY_AVX512)
struct Simd {
  static constexpr int W = 16;
  using U = __m512i;
  using F = __m512;
  using M = __mmask16;
  static U set1(uint32_t v) { return _mm512_set1_epi32(static_cast<int>(v)); }
  static U iota() { return _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15); }
  static U add(U a, U b) { return _mm512_add_epi32(a, b); }
  static U sub(U a, U b) { return _mm512_sub_epi32(a, b); }
  static U xor_(U a, U b) { return _mm512_xor_si512(a, b); }
  static U and_(U a, U b) { return _mm512_and_si512(a, b); }
  static U or_(U a, U b) { return _mm512_or_si512(a, b); }
  template <int N>
  static U srli(U a) { return _mm512_srli_epi32(a, N); }
  template <int N>
  static U slli(U a) { return _mm512_slli_epi32(a, N); }
  static M ge(U a, U b) { return _mm512_cmpge_epi32_mask(a, b); }  // signed
  static M nonzero(U a) { return _mm512_test_epi32_mask(a, a); }
  static U sel(M m, U t, U f) { return _mm512_mask_blend_epi32(m, f, t); }
  static F self(M m, F t, F f) { return _mm512_mask_blend_ps(m, f, t); }
  static F cvt(U a) { return _mm512_cvtepi32_ps(a); }  // signed int32 -> float
  static F as_f(U a) { return _mm512_castsi512_ps(a); }
  static U as_u(F a) { return _mm512_castps_si512(a); }
  static F fset1(float v) { return _mm512_set1_ps(v); }
  static F fadd(F a, F b) { return _mm512_add_ps(a, b); }
  static F fsub(F a, F b) { return _mm512_sub_ps(a, b); }
  static F fmul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F fdiv(F a, F b) { return _mm512_div_ps(a, b); }
  static F fsqrt(F a) { return _mm512_sqrt_ps(a); }
  static void storeu(uint32_t* p, U a) { _mm512_storeu_si512(p, a); }
  // Store n0..n3 (lane i = counter i) as 4W floats in element order n0_0 n1_0 n2_0 n3_0 n0_1 ..
  static void store4(F n0, F n1, F n2, F n3, float* out) {
    const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    const __m512i lo64 = _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11);
    const __m512i hi64 = _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15);
    const __m512d a0 = _mm512_castps_pd(_mm512_permutex2var_ps(n0, lo, n1));  // (n0_i, n1_i), i < 8
    const __m512d a1 = _mm512_castps_pd(_mm512_permutex2var_ps(n0, hi, n1));  // i >= 8
    const __m512d b0 = _mm512_castps_pd(_mm512_permutex2var_ps(n2, lo, n3));
    const __m512d b1 = _mm512_castps_pd(_mm512_permutex2var_ps(n2, hi, n3));
    _mm512_storeu_pd(out + 0, _mm512_permutex2var_pd(a0, lo64, b0));
    _mm512_storeu_pd(out + 16, _mm512_permutex2var_pd(a0, hi64, b0));
    _mm512_storeu_pd(out + 32, _mm512_permutex2var_pd(a1, lo64, b1));
    _mm512_storeu_pd(out + 48, _mm512_permutex2var_pd(a1, hi64, b1));
  }
};
#elif defined(CPU_CAPABILITY_AVX2)
struct Simd {
  static constexpr int W = 8;
  using U = __m256i;
  using F = __m256;
  using M = __m256i;  // all-ones lanes
  static U set1(uint32_t v) { return _mm256_set1_epi32(static_cast<int>(v)); }
  static U iota() { return _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7); }
  static U add(U a, U b) { return _mm256_add_epi32(a, b); }
  static U sub(U a, U b) { return _mm256_sub_epi32(a, b); }
  static U xor_(U a, U b) { return _mm256_xor_si256(a, b); }
  static U and_(U a, U b) { return _mm256_and_si256(a, b); }
  static U or_(U a, U b) { return _mm256_or_si256(a, b); }
  template <int N>
  static U srli(U a) { return _mm256_srli_epi32(a, N); }
  template <int N>
  static U slli(U a) { return _mm256_slli_epi32(a, N); }
  // (hi, lo) 32-bit halves of a * m, m the same in every lane.
  static void mulhilo(U a, U m, U& hi, U& lo) {
    const U even = _mm256_mul_epu32(a, m);
    const U odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
    hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
    lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  }
  static M ge(U a, U b) { return _mm256_or_si256(_mm256_cmpgt_epi32(a, b), _mm256_cmpeq_epi32(a, b)); }
  static M nonzero(U a) {
    return _mm256_xor_si256(_mm256_cmpeq_epi32(a, _mm256_setzero_si256()), _mm256_set1_epi32(-1));
  }
  static U sel(M m, U t, U f) { return _mm256_blendv_epi8(f, t, m); }
  static F self(M m, F t, F f) { return _mm256_blendv_ps(f, t, _mm256_castsi256_ps(m)); }
  static F cvt(U a) { return _mm256_cvtepi32_ps(a); }
  static F as_f(U a) { return _mm256_castsi256_ps(a); }
  static U as_u(F a) { return _mm256_castps_si256(a); }
  static F fset1(float v) { return _mm256_set1_ps(v); }
  static F fadd(F a, F b) { return _mm256_add_ps(a, b); }
  static F fsub(F a, F b) { return _mm256_sub_ps(a, b); }
  static F fmul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F fdiv(F a, F b) { return _mm256_div_ps(a, b); }
  static F fsqrt(F a) { return _mm256_sqrt_ps(a); }
  static void storeu(uint32_t* p, U a) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), a); }
  static void store4(F n0, F n1, F n2, F n3, float* out) {
    const F t0 = _mm256_unpacklo_ps(n0, n1);  // per 128-bit half: n0_i n1_i n0_i+1 n1_i+1
    const F t1 = _mm256_unpackhi_ps(n0, n1);
    const F t2 = _mm256_unpacklo_ps(n2, n3);
    const F t3 = _mm256_unpackhi_ps(n2, n3);
    const F c04 = _mm256_shuffle_ps(t0, t2, 0x44);  // counters 0 | 4
    const F c15 = _mm256_shuffle_ps(t0, t2, 0xEE);  // 1 | 5
    const F c26 = _mm256_shuffle_ps(t1, t3, 0x44);  // 2 | 6
    const F c37 = _mm256_shuffle_ps(t1, t3, 0xEE);  // 3 | 7
    _mm256_storeu_ps(out + 0, _mm256_permute2f128_ps(c04, c15, 0x20));
    _mm256_storeu_ps(out + 8, _mm256_permute2f128_ps(c26, c37, 0x20));
    _mm256_storeu_ps(out + 16, _mm256_permute2f128_ps(c04, c15, 0x31));
    _mm256_storeu_ps(out + 24, _mm256_permute2f128_ps(c26, c37, 0x31));
  }
};
#else
struct Simd {  // one lane: the header's scalar arithmetic
  static constexpr int W = 1;
  using U = uint32_t;
  using F = float;
  using M = bool;
  static U set1(uint32_t v) { return v; }
  static U iota() { return 0u; }
  static U add(U a, U b) { return a + b; }
  static U sub(U a, U b) { return a - b; }
  static U xor_(U a, U b) { return a ^ b; }
  static U and_(U a, U b) { return a & b; }
  static U or_(U a, U b) { return a | b; }
  template <int N>
  static U srli(U a) { return a >> N; }
  template <int N>
  static U slli(U a) { return a << N; }
  static void mulhilo(U a, U m, U& hi, U& lo) {
    const uint64_t p = static_cast<uint64_t>(a) * m;
    hi = static_cast<uint32_t>(p >> 32);
    lo = static_cast<uint32_t>(p);
  }
  static M ge(U a, U b) { return static_cast<int32_t>(a) >= static_cast<int32_t>(b); }
  static M nonzero(U a) { return a != 0; }
  static U sel(M m, U t, U f) { return m ? t : f; }
  static F self(M m, F t, F f) { return m ? t : f; }
  static F cvt(U a) { return static_cast<float>(static_cast<int32_t>(a)); }
  static F as_f(U a) { return detail::bit_cast<float>(a); }
  static U as_u(F a) { return detail::bit_cast<uint32_t>(a); }
  static F fset1(float v) { return v; }
  static F fadd(F a, F b) { return a + b; }
  static F fsub(F a, F b) { return a - b; }
  static F fmul(F a, F b) { return a * b; }
  static F fdiv(F a, F b) { return a / b; }
  static F fsqrt(F a) { return __builtin_sqrtf(a); }
  static void storeu(uint32_t* p, U a) { *p = a; }
  static void store4(F n0, F n1, F n2, F n3, float* out) {
    out[0] = n0;
    out[1] = n1;
    out[2] = n2;
    out[3] = n3;
  }
};
#endif

using U = Simd::U;
using F = Simd::F;
constexpr int W = Simd::W;

// ------------------------------------------------------------------------------ noise
// Per-round Philox keys of one seed, broadcast once per task.
struct PhiloxKeys {
  U k0[10], k1[10];
  explicit PhiloxKeys(uint64_t seed) {
    uint32_t a = static_cast<uint32_t>(seed), b = static_cast<uint32_t>(seed >> 32);
    for (int r = 0; r < 10; ++r) {
      k0[r] = Simd::set1(a);
      k1[r] = Simd::set1(b);
      a += 0x9E3779B9u;
      b += 0xBB67AE85u;
    }
  }
};

// Philox4x32-10 of G groups of W consecutive counters, ctr .. ctr + G W - 1 (their high words
// equal): w[g][j] lane l = word j of counter ctr + g W + l. The groups run interleaved round by
// round: one group's chain of dependent multiplies would leave the vector units idle.
#if defined(CPU_CAPABILITY_AVX512)
// AVX-512: the even counters ride in the low halves of the 64-bit lanes of one set of
// registers, the odd ones in another, so that _mm512_mul_epu32 yields each full product in
// place (low word = the new c1/c3, a 64-bit shift = the high word) and the XORs of a round
// are one vpternlogd each: 12 instructions per round for 16 counters instead of 18 with
// blends. The upper halves carry garbage that nothing reads; the halves merge at the end.
template <int G>
inline void philox_groups(const PhiloxKeys& keys, uint64_t ctr, U (&w)[G][4]) {
  const __m512i ma = _mm512_set1_epi64(0xD2511F53), mb = _mm512_set1_epi64(0xCD9E8D57);
  const __m512i hi = _mm512_set1_epi64(static_cast<uint32_t>(ctr >> 32));
  __m512i s[G][2][4];  // [group][even/odd counters][word]
  TK_UNROLL
  for (int g = 0; g < G; ++g) {
    const __m512i even = _mm512_add_epi64(_mm512_set1_epi64(static_cast<uint32_t>(ctr) + 16 * g),
                                          _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14));
    s[g][0][0] = even;
    s[g][1][0] = _mm512_add_epi64(even, _mm512_set1_epi64(1));
    for (int h = 0; h < 2; ++h) {
      s[g][h][1] = hi;
      s[g][h][2] = s[g][h][3] = _mm512_setzero_si512();
    }
  }
  TK_UNROLL
  for (int r = 0; r < 10; ++r) {
    TK_UNROLL
    for (int g = 0; g < G; ++g) {
      TK_UNROLL
      for (int h = 0; h < 2; ++h) {
        __m512i* c = s[g][h];
        const __m512i pa = _mm512_mul_epu32(c[0], ma), pb = _mm512_mul_epu32(c[2], mb);
        c[0] = _mm512_ternarylogic_epi32(_mm512_srli_epi64(pb, 32), c[1], keys.k0[r], 0x96);  // a^b^c
        c[2] = _mm512_ternarylogic_epi32(_mm512_srli_epi64(pa, 32), c[3], keys.k1[r], 0x96);
        c[1] = pb;
        c[3] = pa;
      }
    }
  }
  TK_UNROLL
  for (int g = 0; g < G; ++g) {
    for (int j = 0; j < 4; ++j) {
      w[g][j] = _mm512_mask_blend_epi32(0xAAAA, s[g][0][j], _mm512_slli_epi64(s[g][1][j], 32));
    }
  }
}
#else
template <int G>
inline void philox_groups(const PhiloxKeys& keys, uint64_t ctr, U (&w)[G][4]) {
  const U ma = Simd::set1(0xD2511F53u), mb = Simd::set1(0xCD9E8D57u);
  U c[G][4];
  TK_UNROLL
  for (int g = 0; g < G; ++g) {
    c[g][0] = Simd::add(Simd::set1(static_cast<uint32_t>(ctr) + static_cast<uint32_t>(g * W)), Simd::iota());
    c[g][1] = Simd::set1(static_cast<uint32_t>(ctr >> 32));
    c[g][2] = c[g][3] = Simd::set1(0u);
  }
  TK_UNROLL
  for (int r = 0; r < 10; ++r) {
    TK_UNROLL
    for (int g = 0; g < G; ++g) {
      U hi_a, lo_a, hi_b, lo_b;
      Simd::mulhilo(c[g][0], ma, hi_a, lo_a);
      Simd::mulhilo(c[g][2], mb, hi_b, lo_b);
      c[g][0] = Simd::xor_(Simd::xor_(hi_b, c[g][1]), keys.k0[r]);
      c[g][1] = lo_b;
      c[g][2] = Simd::xor_(Simd::xor_(hi_a, c[g][3]), keys.k1[r]);
      c[g][3] = lo_a;
    }
  }
  for (int g = 0; g < G; ++g) {
    for (int j = 0; j < 4; ++j) w[g][j] = c[g][j];
  }
}
#endif

// noise_k24 of philox.h, lane-wise.
inline U k24(U w) { return Simd::add(Simd::srli<8>(w), Simd::set1(1u)); }

// noise_neg2_log_u<float> of philox.h, lane-wise, same operations in the same order.
inline F neg2_log_u(U k) {
  const U bits = Simd::as_u(Simd::cvt(k));
  U j = Simd::sub(Simd::srli<23>(bits), Simd::set1(127u));
  U mbits = Simd::or_(Simd::and_(bits, Simd::set1(0x007FFFFFu)), Simd::set1(0x3F800000u));
  const auto big = Simd::ge(mbits, Simd::set1(0x3FB504F3u));
  mbits = Simd::sel(big, Simd::sub(mbits, Simd::set1(0x00800000u)), mbits);
  j = Simd::sel(big, Simd::add(j, Simd::set1(1u)), j);
  const F f = Simd::fsub(Simd::as_f(mbits), Simd::fset1(1.0f));
  const F s = Simd::fdiv(f, Simd::fadd(f, Simd::fset1(2.0f)));
  const F z = Simd::fmul(s, s);
  using Series = NoiseSeries<float>;
  F p = Simd::fset1(Series::log_c(Series::kLog - 1));
  TK_UNROLL
  for (int i = Series::kLog - 2; i >= 0; --i) {
    p = Simd::fadd(Simd::fmul(p, z), Simd::fset1(Series::log_c(i)));
  }
  const F jf = Simd::cvt(Simd::sub(Simd::set1(24u), j));
  const F kTwoLn2 = Simd::fset1(static_cast<float>(1.3862943611198906188344642429164));
  return Simd::fsub(Simd::fmul(jf, kTwoLn2), Simd::fmul(Simd::fmul(Simd::fset1(4.0f), s), p));
}

// noise_sincos_2pi_u<float> of philox.h, lane-wise.
inline void sincos_2pi_u(U k, F& sin_out, F& cos_out) {
  const U q = Simd::srli<22>(Simd::add(k, Simd::set1(1u << 21)));
  const U r = Simd::sub(k, Simd::slli<22>(q));
  const F t = Simd::fmul(Simd::cvt(r),
                         Simd::fset1(static_cast<float>(6.283185307179586476925286766559 / 16777216.0)));
  const F t2 = Simd::fmul(t, t);
  constexpr int kS = NoiseSeries<float>::kSin, kC = NoiseSeries<float>::kCos;
  F sp = Simd::fset1(inv_factorial_signed<float>(2 * kS - 1));
  TK_UNROLL
  for (int i = kS - 2; i >= 0; --i) {
    sp = Simd::fadd(Simd::fmul(sp, t2), Simd::fset1(inv_factorial_signed<float>(2 * i + 1)));
  }
  F cp = Simd::fset1(inv_factorial_signed<float>(2 * kC - 2));
  TK_UNROLL
  for (int i = kC - 2; i >= 0; --i) {
    cp = Simd::fadd(Simd::fmul(cp, t2), Simd::fset1(inv_factorial_signed<float>(2 * i)));
  }
  const F st = Simd::fmul(t, sp);
  const auto odd = Simd::nonzero(Simd::and_(q, Simd::set1(1u)));
  const F a = Simd::self(odd, cp, st);
  const F b = Simd::self(odd, st, cp);
  // Negation as a sign-bit flip: bit 1 of q for the sine, of q + 1 for the cosine.
  const U sign_s = Simd::slli<30>(Simd::and_(q, Simd::set1(2u)));
  const U sign_c = Simd::slli<30>(Simd::and_(Simd::add(q, Simd::set1(1u)), Simd::set1(2u)));
  sin_out = Simd::as_f(Simd::xor_(Simd::as_u(a), sign_s));
  cos_out = Simd::as_f(Simd::xor_(Simd::as_u(b), sign_c));
}

// Groups of W counters that philox_groups generates together.
constexpr int kGroups = 4;

// Runs simd(i, w) on each run of kGroups W counters ctr + i .. (w: their words, as
// philox_groups gives them) and scalar(i) on the counters left over: the tail, and runs whose
// low counter words would wrap around 2^32 (there the high word changes within the run).
template <typename SimdFn, typename ScalarFn>
inline void for_counters(const PhiloxKeys& keys, uint64_t ctr, int64_t nc, SimdFn simd, ScalarFn scalar) {
  constexpr int64_t kRun = kGroups * W;
  int64_t i = 0;
  for (; i + kRun <= nc; i += kRun) {
    const uint64_t c = ctr + static_cast<uint64_t>(i);
    if (static_cast<uint32_t>(c) > 0xFFFFFFFFu - static_cast<uint32_t>(kRun - 1)) {
      for (int64_t l = 0; l < kRun; ++l) scalar(i + l);
      continue;
    }
    U w[kGroups][4];
    philox_groups<kGroups>(keys, c, w);
    for (int g = 0; g < kGroups; ++g) simd(i + g * W, w[g]);
  }
  for (; i < nc; ++i) scalar(i);
}

// Float normals of counters ctr .. ctr + nc - 1 into z[0 .. 4 nc), element order.
inline void normals(const PhiloxKeys& keys, uint64_t seed, uint64_t ctr, int64_t nc, float* z) {
  for_counters(
      keys, ctr, nc,
      [&](int64_t i, const U (&w)[4]) {
        const F ra = Simd::fsqrt(neg2_log_u(k24(w[0])));
        const F rb = Simd::fsqrt(neg2_log_u(k24(w[2])));
        F sa, ca, sb, cb;
        sincos_2pi_u(k24(w[1]), sa, ca);
        sincos_2pi_u(k24(w[3]), sb, cb);
        Simd::store4(Simd::fmul(ra, ca), Simd::fmul(ra, sa), Simd::fmul(rb, cb), Simd::fmul(rb, sb),
                     z + 4 * i);
      },
      [&](int64_t i) {
        const auto n = langevin_normal4<float>(seed, ctr + static_cast<uint64_t>(i));
        std::memcpy(z + 4 * i, n.v, sizeof n.v);
      });
}

// The raw words of counters ctr .. ctr + nc - 1 into out[4 i + j] (SIMD Philox).
inline void words(const PhiloxKeys& keys, uint64_t seed, uint64_t ctr, int64_t nc, uint32_t* out) {
  for_counters(
      keys, ctr, nc,
      [&](int64_t i, const U (&w)[4]) {
        alignas(64) uint32_t lanes[4][W];
        for (int j = 0; j < 4; ++j) Simd::storeu(lanes[j], w[j]);
        for (int l = 0; l < W; ++l) {
          for (int j = 0; j < 4; ++j) out[4 * (i + l) + j] = lanes[j][l];
        }
      },
      [&](int64_t i) {
        const Philox4x32 p = philox_randint4x(seed, ctr + static_cast<uint64_t>(i));
        std::memcpy(out + 4 * i, p.x, sizeof p.x);
      });
}

// Double normals: SIMD words, double series per counter (philox.h).
inline void normals(const PhiloxKeys& keys, uint64_t seed, uint64_t ctr, int64_t nc, double* z) {
  constexpr int64_t kSub = 64;
  alignas(64) uint32_t w[4 * kSub];
  for (int64_t i0 = 0; i0 < nc; i0 += kSub) {
    const int64_t m = std::min(kSub, nc - i0);
    words(keys, seed, ctr + static_cast<uint64_t>(i0), m, w);
    for (int64_t i = 0; i < m; ++i) {
      const Philox4x32 p{{w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3]}};
      const auto n = noise_normal4<double>(p);
      std::memcpy(z + 4 * (i0 + i), n.v, sizeof n.v);
    }
  }
}

// ------------------------------------------------------------------------------ update
template <typename acc_t>
struct StepParams {
  Vectorized<acc_t> neg_step, sigma, clip_lo, clip_hi, lo, hi;
  bool has_noise, has_clip, has_lo, has_hi;
  explicit StepParams(const LangevinArgs& a)
      : neg_step(static_cast<acc_t>(-a.step_size)),
        sigma(static_cast<acc_t>(a.noise_std)),
        clip_lo(static_cast<acc_t>(-a.clip)),
        clip_hi(static_cast<acc_t>(a.clip)),
        lo(static_cast<acc_t>(a.lo)),
        hi(static_cast<acc_t>(a.hi)),
        has_noise(a.noise_std != 0.0),
        has_clip(a.has_clip),
        has_lo(a.has_lo),
        has_hi(a.has_hi) {}

  // v = x - eta clip(g) + sigma n, before the clamp.
  Vectorized<acc_t> value(const Vectorized<acc_t>& x, Vectorized<acc_t> g, const acc_t* z) const {
    if (has_clip) g = at::vec::clamp(g, clip_lo, clip_hi);  // NaN stays NaN
    Vectorized<acc_t> v = x + neg_step * g;
    if (has_noise) v = v + sigma * Vectorized<acc_t>::loadu(z);
    return v;
  }
  Vectorized<acc_t> clamp(Vectorized<acc_t> v) const {
    if (has_lo) v = at::vec::clamp_min(v, lo);
    if (has_hi) v = at::vec::clamp_max(v, hi);
    return v;
  }
};

// Counters per block: 256 elements, a 1 KB (float) noise buffer.
constexpr int64_t kBlock = 64;

// The sweep of [Note: the Langevin CPU kernel], shared by langevin_step, mala_proposal and
// sgld_step: over the counters [c_begin, c_end) of a tensor of `numel` elements whose counter
// c is Philox counter first + c, per block of kBlock counters, the normals (when `noise`) go
// into the block's buffer z, block(e0, ne) sees the block's elements [e0, e0 + ne), and each
// vector of x and g (k: its first element's index in the block) becomes
// out = update(x, g, k, z + k).
template <typename scalar_t, typename Block, typename Update>
void sweep(const PhiloxKeys& keys, uint64_t seed, uint64_t first, int64_t numel, int64_t c_begin,
           int64_t c_end, bool noise, const scalar_t* x, const scalar_t* g, scalar_t* out, Block&& block,
           Update&& update) {
  using L = Lanes<scalar_t>;
  using Va = typename L::Va;
  // + kSize: full-vector noise loads past the block's last element stay inside the buffer
  alignas(64) typename L::acc_t z[4 * kBlock + L::kSize] = {};
  for (int64_t c0 = c_begin; c0 < c_end; c0 += kBlock) {
    const int64_t nc = std::min(kBlock, c_end - c0);
    const int64_t e0 = 4 * c0, ne = std::min(4 * nc, numel - e0);
    if (noise) normals(keys, seed, first + static_cast<uint64_t>(c0), nc, z);
    block(e0, ne);
    for (int64_t i = 0; i < ne; i += L::kSize) {
      const int64_t cnt = ne - i;
      Va xv[L::kParts], gv[L::kParts];
      L::load(x + e0 + i, cnt, xv);
      L::load(g + e0 + i, cnt, gv);
      for (int p = 0; p < L::kParts; ++p) {
        const int64_t k = i + p * Va::size();
        xv[p] = update(xv[p], gv[p], k, z + k);
      }
      L::store(out + e0 + i, cnt, xv);
    }
  }
}

// Does nothing per block (the kernels whose coefficients are the same for every element).
struct NoBlock {
  void operator()(int64_t, int64_t) const {}
};

template <typename scalar_t>
void fwd(const LangevinArgs& a, int64_t ctr_begin, int64_t ctr_end) {
  using Va = typename Lanes<scalar_t>::Va;
  using acc_t = typename Lanes<scalar_t>::acc_t;
  const StepParams<acc_t> sp(a);
  sweep(PhiloxKeys(a.seed), a.seed, a.offset, a.n, ctr_begin, ctr_end, sp.has_noise,
        static_cast<const scalar_t*>(a.x), static_cast<const scalar_t*>(a.grad), static_cast<scalar_t*>(a.out),
        NoBlock{}, [sp](const Va& x, const Va& g, int64_t, const acc_t* z) { return sp.clamp(sp.value(x, g, z)); });
}

// grad_x = grad_out where lo < v < hi, else 0 (a v on a bound counts as clamped, as in
// torch.clamp's backward); grad_grad = -eta grad_out where also |grad| < clip. v is
// recomputed (noise included).
template <typename scalar_t>
void bwd(const LangevinArgs& a, int64_t ctr_begin, int64_t ctr_end) {
  using L = Lanes<scalar_t>;
  using acc_t = typename L::acc_t;
  using Va = typename L::Va;
  const StepParams<acc_t> sp(a);
  const PhiloxKeys keys(a.seed);
  alignas(64) acc_t z[4 * kBlock + L::kSize] = {};
  const auto* x = static_cast<const scalar_t*>(a.x);
  const auto* g = static_cast<const scalar_t*>(a.grad);
  const auto* go = static_cast<const scalar_t*>(a.grad_out);
  auto* gx = static_cast<scalar_t*>(a.grad_x);
  auto* gg = static_cast<scalar_t*>(a.grad_grad);
  const Va zero(acc_t(0));
  for (int64_t c0 = ctr_begin; c0 < ctr_end; c0 += kBlock) {
    const int64_t nc = std::min(kBlock, ctr_end - c0);
    const int64_t e0 = 4 * c0, ne = std::min(4 * nc, a.n - e0);
    if (sp.has_noise && (sp.has_lo || sp.has_hi)) {
      normals(keys, a.seed, a.offset + static_cast<uint64_t>(c0), nc, z);
    }
    for (int64_t i = 0; i < ne; i += L::kSize) {
      const int64_t cnt = ne - i;
      Va xv[L::kParts], gv[L::kParts], gov[L::kParts], gxv[L::kParts], ggv[L::kParts];
      L::load(x + e0 + i, cnt, xv);
      L::load(g + e0 + i, cnt, gv);
      L::load(go + e0 + i, cnt, gov);
      for (int p = 0; p < L::kParts; ++p) {
        Va pass = gov[p];
        if (sp.has_lo || sp.has_hi) {
          const Va v = sp.value(xv[p], gv[p], z + i + p * Va::size());
          // (a NaN v fails every comparison: no gradient, as in torch.clamp's backward)
          Va keep = sp.has_lo ? (v > sp.lo) : (v < sp.hi);
          if (sp.has_lo && sp.has_hi) keep = keep & (v < sp.hi);
          pass = Va::blendv(zero, pass, keep);
        }
        gxv[p] = pass;
        Va gpass = pass;
        if (sp.has_clip) {
          gpass = Va::blendv(zero, pass, (gv[p] > sp.clip_lo) & (gv[p] < sp.clip_hi));
        }
        ggv[p] = sp.neg_step * gpass;
      }
      L::store(gx + e0 + i, cnt, gxv);
      L::store(gg + e0 + i, cnt, ggv);
    }
  }
}

inline void words_counters(const LangevinArgs& a, int64_t ctr_begin, int64_t ctr_end) {
  const PhiloxKeys keys(a.seed);
  words(keys, a.seed, a.offset + static_cast<uint64_t>(ctr_begin), ctr_end - ctr_begin,
        static_cast<uint32_t*>(a.out) + 4 * ctr_begin);
}

}  // namespace langevin
}  // namespace CPU_CAPABILITY

TK_DEFINE_ISA_ENTRY(langevin_fwd, LangevinArgs, langevin::fwd)
TK_DEFINE_ISA_ENTRY(langevin_bwd, LangevinArgs, langevin::bwd)
void TK_CAT(langevin_words, CPU_CAPABILITY)(const LangevinArgs& a, int64_t b, int64_t e) {
  CPU_CAPABILITY::langevin::words_counters(a, b, e);
}


}  // namespace thermokern::cpu

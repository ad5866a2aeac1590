// Tests of csrc/include/thermokern/philox.h (host build of the host/device header).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <set>

#include "thermokern/philox.h"
#include "tk_rng.h"
#include "tk_test.h"

namespace {

using thermokern::Philox4x32;
using Ctr = std::array<uint32_t, 4>;
using Key = std::array<uint32_t, 2>;

// An independent Philox4x32-R written the way Random123 (philox.h) states it: R applications
// of the round function, the key bumped by the Weyl constants *between* rounds; the round
// takes (hi, lo) = mulhilo(M, x) for x = ctr[0] (M0) and ctr[2] (M1) and returns
// {hi1 ^ ctr[1] ^ key[0], lo1, hi0 ^ ctr[3] ^ key[1], lo0}.
Ctr random123_philox4x32(int rounds, Ctr ctr, Key key) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
  constexpr uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  auto round = [](const Ctr& c, const Key& k) {
    const uint64_t p0 = uint64_t{M0} * c[0];
    const uint64_t p1 = uint64_t{M1} * c[2];
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    return Ctr{hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0};
  };
  for (int r = 0; r < rounds; ++r) {
    if (r > 0) key = Key{key[0] + W0, key[1] + W1};
    ctr = round(ctr, key);
  }
  return ctr;
}

Ctr as_ctr(const Philox4x32& p) { return Ctr{p.x[0], p.x[1], p.x[2], p.x[3]}; }

Philox4x32 run_header(const Ctr& c, const Key& k, int rounds = 10) {
  return thermokern::philox4x32(c[0], c[1], c[2], c[3], k[0], k[1], rounds);
}

using tk_test::SplitMix64;

struct Kat {
  Ctr ctr;
  Key key;
  Ctr expected;
};

// Random123's kat_vectors for philox4x32 with 10 rounds.
const Kat kKat[] = {
    {{0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u},
     {0x00000000u, 0x00000000u},
     {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
    {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
     {0xffffffffu, 0xffffffffu},
     {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
    {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
     {0xa4093822u, 0x299f31d0u},
     {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
};

}  // namespace

TK_TEST(philox, known_answer_vectors) {
  for (const Kat& kat : kKat) {
    const Philox4x32 out = run_header(kat.ctr, kat.key);
    for (int i = 0; i < 4; ++i) TK_CHECK_EQ_U32(out.x[i], kat.expected[i]);
    // The default round count is 10.
    const Philox4x32 def = thermokern::philox4x32(kat.ctr[0], kat.ctr[1], kat.ctr[2], kat.ctr[3],
                                                  kat.key[0], kat.key[1]);
    for (int i = 0; i < 4; ++i) TK_CHECK_EQ_U32(def.x[i], kat.expected[i]);
    // ... and the independent Random123-style reference agrees on the vectors themselves.
    const Ctr ref = random123_philox4x32(10, kat.ctr, kat.key);
    for (int i = 0; i < 4; ++i) TK_CHECK_EQ_U32(ref[i], kat.expected[i]);
  }
}

TK_TEST(philox, matches_random123_reference_any_rounds) {
  SplitMix64 rng{0x5eed};
  for (int iter = 0; iter < 2000; ++iter) {
    const uint64_t a = rng.next(), b = rng.next(), c = rng.next();
    const Ctr ctr{static_cast<uint32_t>(a), static_cast<uint32_t>(a >> 32),
                  static_cast<uint32_t>(b), static_cast<uint32_t>(b >> 32)};
    const Key key{static_cast<uint32_t>(c), static_cast<uint32_t>(c >> 32)};
    const int rounds = iter % 13;  // 0 (identity) .. 12
    const Ctr got = as_ctr(run_header(ctr, key, rounds));
    const Ctr ref = random123_philox4x32(rounds, ctr, key);
    TK_CHECK_MSG(got == ref, "rounds=%d ctr=%08x %08x %08x %08x key=%08x %08x", rounds, ctr[0],
                 ctr[1], ctr[2], ctr[3], key[0], key[1]);
  }
  // Zero rounds is the identity on the counter.
  const Ctr ctr{1u, 2u, 3u, 4u};
  TK_CHECK(as_ctr(run_header(ctr, Key{5u, 6u}, 0)) == ctr);
}

TK_TEST(philox, mulhi32) {
  const uint32_t vals[] = {0u, 1u, 2u, 0x7fffffffu, 0x80000000u, 0xD2511F53u, 0xCD9E8D57u,
                           0xfffffffeu, 0xffffffffu};
  for (uint32_t a : vals) {
    for (uint32_t b : vals) {
      TK_CHECK_EQ_U32(thermokern::philox_mulhi32(a, b),
                      static_cast<uint32_t>((uint64_t{a} * uint64_t{b}) >> 32));
    }
  }
  TK_CHECK_EQ_U32(thermokern::philox_mulhi32(0xffffffffu, 0xffffffffu), 0xfffffffeu);
}

// philox_randint4x(seed, offset) == Philox4x32-10 with key = (seed lo, seed hi) and
// counter = (offset lo, offset hi, 0, 0), as Triton's tl.randint4x.
TK_TEST(philox, randint4x_key_and_counter_layout) {
  const uint64_t special[] = {0ull,
                              1ull,
                              0xffffffffull,
                              0x100000000ull,
                              0x0000000100000002ull,
                              0x0000000200000001ull,
                              0xdeadbeefcafebabeull,
                              0xffffffffffffffffull};
  auto check = [](uint64_t seed, uint64_t offset) {
    const Philox4x32 got = thermokern::philox_randint4x(seed, offset);
    const Ctr ref = random123_philox4x32(
        10,
        Ctr{static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32), 0u, 0u},
        Key{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)});
    return TK_CHECK_MSG(as_ctr(got) == ref, "seed=0x%016llx offset=0x%016llx",
                        static_cast<unsigned long long>(seed),
                        static_cast<unsigned long long>(offset));
  };
  for (uint64_t s : special) {
    for (uint64_t o : special) check(s, o);
  }
  SplitMix64 rng{42};
  for (int i = 0; i < 1000; ++i) check(rng.next(), rng.next());

  // seed 0, offset 0 is the all-zero known-answer vector.
  const Philox4x32 z = thermokern::philox_randint4x(0, 0);
  for (int i = 0; i < 4; ++i) TK_CHECK_EQ_U32(z.x[i], kKat[0].expected[i]);
  // Counter (~0, ~0, 0, 0) under key (~0, ~0) is not the all-ones vector (c2, c3 are 0).
  const Philox4x32 ones = thermokern::philox_randint4x(~0ull, ~0ull);
  TK_CHECK(as_ctr(ones) != kKat[1].expected);

  // The two 32-bit halves are not interchangeable: swapping seed or offset words changes
  // the output (catches a (hi, lo) mix-up).
  TK_CHECK(as_ctr(thermokern::philox_randint4x(0x0000000100000002ull, 7)) !=
           as_ctr(thermokern::philox_randint4x(0x0000000200000001ull, 7)));
  TK_CHECK(as_ctr(thermokern::philox_randint4x(7, 0x0000000100000002ull)) !=
           as_ctr(thermokern::philox_randint4x(7, 0x0000000200000001ull)));

  // Consecutive offsets give distinct blocks.
  std::set<Ctr> seen;
  for (uint64_t o = 0; o < 4096; ++o) seen.insert(as_ctr(thermokern::philox_randint4x(123, o)));
  TK_CHECK(seen.size() == 4096);
}

TK_TEST(philox, uniform_open0_range) {
  using thermokern::philox_uint_to_uniform_open0;
  const float lo = philox_uint_to_uniform_open0(0u);
  const float hi = philox_uint_to_uniform_open0(0xffffffffu);
  TK_CHECK(lo > 0.0f);
  TK_CHECK(lo == std::ldexp(1.0f, -24));
  TK_CHECK(hi == 1.0f);
  TK_CHECK(std::isfinite(std::log(lo)));
  // Every one of the 2^24 buckets (top 24 bits) maps to (k + 1) / 2^24 exactly, so the
  // map is strictly increasing in the top bits, ignores the low 8 bits and stays in (0, 1].
  long bad = 0;
  float prev = 0.0f;
  for (uint32_t k = 0; k < (1u << 24); ++k) {
    const float u0 = philox_uint_to_uniform_open0(k << 8);
    const float u1 = philox_uint_to_uniform_open0((k << 8) | 0xffu);
    const float want = static_cast<float>(k + 1) * (1.0f / 16777216.0f);
    if (!(u0 == want && u1 == want && u0 > prev && u0 > 0.0f && u0 <= 1.0f)) {
      if (++bad <= 5) TK_CHECK_MSG(false, "bucket k=%u: %.9g %.9g want %.9g", k, u0, u1, want);
    }
    prev = u0;
  }
  TK_CHECK_MSG(bad == 0, "%ld of 2^24 buckets wrong", bad);
  // Random words from the generator itself.
  SplitMix64 rng{7};
  for (int i = 0; i < 10000; ++i) {
    const Philox4x32 p = thermokern::philox_randint4x(rng.next(), rng.next());
    for (uint32_t v : p.x) {
      const float u = philox_uint_to_uniform_open0(v);
      TK_CHECK(u > 0.0f && u <= 1.0f);
    }
  }
}

// ---- Langevin noise (see [Note: Langevin noise layout] in philox.h) ----------------------

// Largest relative error of -2 ln u (float and double) over every k in [1, 2^24], against
// long double libm. A relative bound holds right up to u = 1 (k = 2^24 - 1: -2 ln u ~ 1.2e-7).
TK_TEST(philox, noise_neg2_log_all_k) {
  double worst_f = 0.0, worst_d = 0.0;
  for (uint32_t k = 1; k <= (1u << 24); ++k) {
    const long double u = static_cast<long double>(k) / 16777216.0L;
    const long double want = -2.0L * std::log(u);
    const float gf = thermokern::noise_neg2_log_u<float>(k);
    const double gd = thermokern::noise_neg2_log_u<double>(k);
    if (k == (1u << 24)) {
      TK_CHECK(gf == 0.0f && gd == 0.0);
      continue;
    }
    worst_f = std::max(worst_f, static_cast<double>(std::fabs((gf - want) / want)));
    worst_d = std::max(worst_d, static_cast<double>(std::fabs((gd - want) / want)));
  }
  TK_CHECK_MSG(worst_f <= 3e-7, "float: max relative error %.3g", worst_f);
  TK_CHECK_MSG(worst_d <= 1e-15, "double: max relative error %.3g", worst_d);
}

// sin and cos of 2 pi k 2^-24 over every k: absolute error (values in [-1, 1]) and exact
// signs and zeros at the quarter turns.
TK_TEST(philox, noise_sincos_all_k) {
  const long double two_pi = 6.283185307179586476925286766559L;
  double worst_f = 0.0, worst_d = 0.0;
  for (uint32_t k = 1; k <= (1u << 24); ++k) {
    const long double a = two_pi * static_cast<long double>(k) / 16777216.0L;
    const long double ws = std::sin(a), wc = std::cos(a);
    float sf, cf;
    double sd, cd;
    thermokern::noise_sincos_2pi_u<float>(k, sf, cf);
    thermokern::noise_sincos_2pi_u<double>(k, sd, cd);
    worst_f = std::max({worst_f, static_cast<double>(std::fabs(sf - ws)),
                        static_cast<double>(std::fabs(cf - wc))});
    worst_d = std::max({worst_d, static_cast<double>(std::fabs(sd - ws)),
                        static_cast<double>(std::fabs(cd - wc))});
  }
  TK_CHECK_MSG(worst_f <= 1.5e-7, "float: max abs error %.3g", worst_f);
  TK_CHECK_MSG(worst_d <= 4e-16, "double: max abs error %.3g", worst_d);
  for (uint32_t q = 1; q <= 4; ++q) {  // quarter turns are exact
    float s, c;
    thermokern::noise_sincos_2pi_u<float>(q << 22, s, c);
    const float es[] = {0.0f, 1.0f, 0.0f, -1.0f}, ec[] = {1.0f, 0.0f, -1.0f, 0.0f};
    TK_CHECK(std::fabs(s) == std::fabs(es[q % 4]) && std::fabs(c) == std::fabs(ec[q % 4]));
    TK_CHECK(s == es[q % 4] && c == ec[q % 4]);
  }
}

// The normals of a Philox block against Box-Muller in long double on the same uniforms:
// relative error, with an absolute floor for values near 0 that covers the reference's own
// rounding of 2 pi u (~2e-19 absolute in long double; the header reduces the angle exactly).
TK_TEST(philox, noise_normal4_matches_box_muller) {
  SplitMix64 rng{2024};
  double worst_f = 0.0, worst_d = 0.0;  // error / allowed error
  const long double two_pi = 6.283185307179586476925286766559L;
  for (int i = 0; i < 200000; ++i) {
    const uint64_t seed = rng.next(), ctr = rng.next();
    const Philox4x32 w = thermokern::philox_randint4x(seed, ctr);
    long double u[4];
    for (int j = 0; j < 4; ++j) {
      u[j] = static_cast<long double>(thermokern::philox_uint_to_uniform_open0(w.x[j]));
    }
    const long double ra = std::sqrt(-2.0L * std::log(u[0]));
    const long double rb = std::sqrt(-2.0L * std::log(u[2]));
    const long double want[4] = {ra * std::cos(two_pi * u[1]), ra * std::sin(two_pi * u[1]),
                                 rb * std::cos(two_pi * u[3]), rb * std::sin(two_pi * u[3])};
    const auto nf = thermokern::langevin_normal4<float>(seed, ctr);
    const auto nd = thermokern::langevin_normal4<double>(seed, ctr);
    for (int j = 0; j < 4; ++j) {
      const long double a = std::fabs(want[j]);
      worst_f = std::max(worst_f, static_cast<double>(std::fabs(nf.v[j] - want[j]) / (5e-7L * a + 1e-17L)));
      worst_d = std::max(worst_d, static_cast<double>(std::fabs(nd.v[j] - want[j]) / (2e-15L * a + 2e-18L)));
      TK_CHECK(std::fabs(nf.v[j]) <= 5.78f);
    }
  }
  TK_CHECK_MSG(worst_f <= 1.0, "float: error up to %.3g x (5e-7 relative)", worst_f);
  TK_CHECK_MSG(worst_d <= 1.0, "double: error up to %.3g x (2e-15 relative + 2e-18)", worst_d);
}

// Moments of the float normals over 2^20 elements (a smoke test of the layout; the
// statistical tests are in tests/test_langevin.py): mean within 6 sigma of 0, variance of
// 1 within 6 sigma (sd of the sample variance: sqrt(2/n)).
TK_TEST(philox, noise_normal4_moments) {
  const int n_ctr = 1 << 18;
  double s1 = 0.0, s2 = 0.0;
  for (int c = 0; c < n_ctr; ++c) {
    const auto nf = thermokern::langevin_normal4<float>(12345, static_cast<uint64_t>(c));
    for (float v : nf.v) {
      s1 += v;
      s2 += static_cast<double>(v) * v;
    }
  }
  const double n = 4.0 * n_ctr, mean = s1 / n, var = s2 / n - mean * mean;
  TK_CHECK_MSG(std::fabs(mean) <= 6.0 / std::sqrt(n), "mean %.4g", mean);
  TK_CHECK_MSG(std::fabs(var - 1.0) <= 6.0 * std::sqrt(2.0 / n), "variance %.5g", var);
}

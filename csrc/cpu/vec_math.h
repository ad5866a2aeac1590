// Vectorised maths shared by the CPU kernels (softmax_entropy, cross_entropy, partition,
// langevin, mala, sgld), compiled once per ISA with them ([Note: per-ISA kernels] in isa.h):
// the accumulation type, a fast base-2 exponential, chunk loads and stores that widen 16-bit
// inputs, NaN-aware maximum, lane sums, and loads/stores of scalar_t as Vectorized<acc_t>.
//
// [Note: the float exponential]
// The exponential bounds the speed (a plain at::vec kernel with the 1-ulp Sleef exp is about
// as fast as torch.compile). For float, exp2_nonpos below works in base 2: the inputs are
// t = (x - max) * log2(e) / T <= 0, so 2^t = 2^n * 2^f with n = round(t), |f| <= 1/2 and a
// degree-6 polynomial for 2^f (relative error ~1e-7, a couple of ulp), the 2^n built directly
// in the exponent bits. About 12 vector instructions, against ~18 for at::vec's exp_u20
// (~20 ulp). Sums are then kept in base 2 as well and scaled by ln 2 once per chunk.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

namespace thermokern::cpu {
inline namespace CPU_CAPABILITY {

using at::vec::Vectorized;

template <typename T>
using acc_type_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2 = 0.693147180559945309f;

// 2^t for t <= 0, returning also t clamped to >= -127 in t_clamped. t <= -127 (and -inf) gives
// exactly 0, and then t_clamped * 2^t is 0 rather than -inf * 0 = NaN; NaN propagates.
inline Vectorized<float> exp2_nonpos(const Vectorized<float>& t, Vectorized<float>& t_clamped) {
  using V = Vectorized<float>;
  t_clamped = at::vec::clamp_min(t, V(-127.0f));  // keeps NaN (max(min, a) returns a on NaN)
  const V n = t_clamped.round();
  const V f = t_clamped - n;  // in [-0.5, 0.5]
  // Taylor coefficients of 2^f = e^{f ln 2}; at |f| = 1/2 the degree-6 truncation is 1.2e-7.
  V p = V(1.5403530393381606e-4f);
  p = at::vec::fmadd(p, f, V(1.3333558146428443e-3f));
  p = at::vec::fmadd(p, f, V(9.6181291076284772e-3f));
  p = at::vec::fmadd(p, f, V(5.5504108664821580e-2f));
  p = at::vec::fmadd(p, f, V(2.4022650695910071e-1f));
  p = at::vec::fmadd(p, f, V(6.9314718055994531e-1f));
  p = at::vec::fmadd(p, f, V(1.0f));
  // 2^n as float bits (n + 127) << 23, computed exactly in float then converted; n = -127
  // gives the bits of +0.
  const V bits = (n + V(127.0f)) * V(8388608.0f);
  const V scale = at::vec::cast<float>(at::vec::convert_to_int_of_same_size(bits));
  return p * scale;
}

// Widen n elements of src into buf (no copy when src already has the accumulation type).
template <typename scalar_t, typename acc_t>
inline const acc_t* load_chunk(const scalar_t* src, int64_t n, acc_t* buf) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    return src;
  } else {
    using Vs = Vectorized<scalar_t>;
    using Vf = Vectorized<float>;
    int64_t i = 0;
    for (; i + Vs::size() <= n; i += Vs::size()) {
      auto [lo, hi] = at::vec::convert_to_float<scalar_t>(Vs::loadu(src + i));
      lo.store(buf + i);
      hi.store(buf + i + Vf::size());
    }
    for (; i < n; ++i) buf[i] = static_cast<float>(src[i]);
    return buf;
  }
}

// Narrow n floats of buf into dst.
template <typename scalar_t>
inline void store_chunk(const float* buf, int64_t n, scalar_t* dst) {
  using Vs = Vectorized<scalar_t>;
  using Vf = Vectorized<float>;
  int64_t i = 0;
  for (; i + Vs::size() <= n; i += Vs::size()) {
    Vs v = at::vec::convert_from_float<scalar_t>(Vf::loadu(buf + i),
                                                 Vf::loadu(buf + i + Vf::size()));
    v.store(dst + i);
  }
  for (; i < n; ++i) dst[i] = static_cast<scalar_t>(buf[i]);
}

template <typename T>
inline T nan_max(T a, T b) {
  // NaN in either argument wins, as torch.max does.
  if (a != a) return a;
  return (b != b || b > a) ? b : a;
}

// Sum of the lanes of v, in lane order.
template <typename T>
inline T lane_sum(const Vectorized<T>& v) {
  constexpr int64_t W = Vectorized<T>::size();
  alignas(64) T lanes[W];
  v.store(lanes);
  T sum = 0;
  for (int64_t k = 0; k < W; ++k) sum += lanes[k];
  return sum;
}

// Loads and stores of scalar_t as Vectorized<acc_t> (two halves for 16-bit types); `count` < kSize
// elements at the end of a range load zeros past it and store only `count`.
template <typename scalar_t>
struct Lanes {
  using acc_t = acc_type_t<scalar_t>;
  using Va = Vectorized<acc_t>;
  using Vs = Vectorized<scalar_t>;
  static constexpr int kParts = std::is_same_v<scalar_t, acc_t> ? 1 : 2;
  static constexpr int64_t kSize = Va::size() * kParts;
  static_assert(kSize == Vs::size(), "16-bit vectors hold two float vectors");

  static void load(const scalar_t* p, int64_t count, Va (&v)[kParts]) {
    const Vs s = count >= kSize ? Vs::loadu(p) : Vs::loadu(p, count);
    if constexpr (kParts == 1) {
      v[0] = s;
    } else {
      auto [lo, hi] = at::vec::convert_to_float<scalar_t>(s);
      v[0] = lo;
      v[1] = hi;
    }
  }
  static void store(scalar_t* p, int64_t count, const Va (&v)[kParts]) {
    Vs s;
    if constexpr (kParts == 1) {
      s = v[0];
    } else {
      s = at::vec::convert_from_float<scalar_t>(v[0], v[1]);
    }
    if (count >= kSize) {
      s.store(p);
    } else {
      s.store(p, static_cast<int>(count));
    }
  }
};

}  // namespace CPU_CAPABILITY
}  // namespace thermokern::cpu

// Online row statistics for softmax-family reductions, shared by CPU and CUDA.
//
// For a row x_1..x_C and inverse temperature k = 1/T (z = k x) we keep
//   m = max_j x_j              (in input units, exact; any shift m works in the formulas
//                               below, as long as e^{k (x - m)} cannot overflow),
//   d = sum_j e^{k (x_j - m)},
//   s = sum_j k (x_j - m) e^{k (x_j - m)}.
// Keeping m in input units and the shifted forms (x - m) makes every quantity free of the
// cancellation between large numbers that lse = max z + log d and E_p[z] suffer for logits
// near 1e4 (x - m is exact when x is close to m), also when T != 1:
//   log Z = lse = k m + log d,   H = log d - s / d,   log p_j = k (x_j - m) - log d.
//
// Two partial statistics over disjoint parts of a row merge exactly (up to rounding):
// rescale the one with the smaller maximum by e^{k (m_small - m_big)}.
#pragma once

#include <cmath>

#include "thermokern/common.h"

namespace thermokern {

#if defined(__CUDA_ARCH__)
TK_INLINE float tk_exp(float x) { return __expf(x); }
TK_INLINE double tk_exp(double x) { return ::exp(x); }
TK_INLINE float tk_log(float x) { return ::logf(x); }
TK_INLINE double tk_log(double x) { return ::log(x); }
#else
TK_INLINE float tk_exp(float x) { return std::exp(x); }
TK_INLINE double tk_exp(double x) { return std::exp(x); }
TK_INLINE float tk_log(float x) { return std::log(x); }
TK_INLINE double tk_log(double x) { return std::log(x); }
#endif

template <typename T>
struct RowStats {
  T m;  // running maximum of x (input units)
  T d;  // sum of e^{k (x - m)}
  T s;  // sum of k (x - m) e^{k (x - m)}
};

template <typename T>
TK_INLINE RowStats<T> row_stats_empty() {
  return RowStats<T>{-INFINITY, T(0), T(0)};
}

// Merge two partial statistics of the same row (inv_t = k = 1/T). A part whose maximum is
// -inf (all entries -inf, or empty) contributes nothing. NaN anywhere, or +inf maxima in
// both parts, makes every field NaN, so it survives later merges whatever their order.
template <typename T>
TK_INLINE RowStats<T> row_stats_merge(RowStats<T> a, RowStats<T> b, T inv_t) {
  if (a.m != a.m) return RowStats<T>{a.m, a.m, a.m};
  if (b.m != b.m) return RowStats<T>{b.m, b.m, b.m};
  if (a.m < b.m) {
    RowStats<T> t = a;
    a = b;
    b = t;
  }
  if (b.m == T(-INFINITY)) return a;
  const T delta = (b.m - a.m) * inv_t;  // <= 0; NaN if either is NaN or both are +inf
  if (delta != delta) return RowStats<T>{delta, delta, delta};
  const T scale = tk_exp(delta);
  RowStats<T> r;
  r.m = a.m;
  r.d = a.d + b.d * scale;
  r.s = a.s + (b.s + delta * b.d) * scale;
  return r;
}

// log-sum-exp of z = x / T over the row: m / T + log d.
template <typename T>
TK_INLINE T row_stats_lse(const RowStats<T>& r, T inv_t) {
  return r.m * inv_t + tk_log(r.d);
}

// log d, the normaliser relative to the maximum: log p_j = (x_j - m) / T - log d.
template <typename T>
TK_INLINE T row_stats_log_norm(const RowStats<T>& r) {
  return tk_log(r.d);
}

// Shannon entropy of softmax(x / T): log d - s / d.
template <typename T>
TK_INLINE T row_stats_entropy(const RowStats<T>& r) {
  return tk_log(r.d) - r.s / r.d;
}

}  // namespace thermokern

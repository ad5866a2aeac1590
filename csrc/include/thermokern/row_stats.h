// Online row statistics for softmax-family reductions, shared by CPU and CUDA.
//
// For a row z_1..z_C (already divided by the temperature) we keep
//   m = max_j z_j,   d = sum_j e^{z_j - m},   s = sum_j (z_j - m) e^{z_j - m}.
// Storing s in the shifted form (z - m) rather than sum z e^{z - m} keeps the entropy
//   H = log d - s / d
// free of the cancellation between two large numbers (lse and E_p[z]) that the
// unshifted form suffers for logits around 1e4. The log-sum-exp is m + log d.
//
// Two partial statistics over disjoint parts of a row merge exactly (up to rounding):
// rescale the one with the smaller maximum by e^{m_small - m_big}.
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
  T m;  // running maximum
  T d;  // sum of e^{z - m}
  T s;  // sum of (z - m) e^{z - m}
};

template <typename T>
TK_INLINE RowStats<T> row_stats_empty() {
  return RowStats<T>{-INFINITY, T(0), T(0)};
}

// Merge two partial statistics. NaN in either maximum propagates; a part whose
// maximum is -inf (all entries -inf, or empty) contributes nothing; two +inf maxima
// give NaN, as softmax over a row with +inf does.
template <typename T>
TK_INLINE RowStats<T> row_stats_merge(RowStats<T> a, RowStats<T> b) {
  if (a.m < b.m) {
    RowStats<T> t = a;
    a = b;
    b = t;
  }
  if (b.m == T(-INFINITY)) return a;
  const T delta = b.m - a.m;  // <= 0, NaN if either is NaN or both are +inf
  const T scale = tk_exp(delta);
  RowStats<T> r;
  r.m = a.m;
  r.d = a.d + b.d * scale;
  r.s = a.s + (b.s + delta * b.d) * scale;
  return r;
}

// log-sum-exp of the row: m + log d.
template <typename T>
TK_INLINE T row_stats_lse(const RowStats<T>& r) {
  return r.m + tk_log(r.d);
}

// Shannon entropy of softmax(z): log d - s / d.
template <typename T>
TK_INLINE T row_stats_entropy(const RowStats<T>& r) {
  return tk_log(r.d) - r.s / r.d;
}

}  // namespace thermokern

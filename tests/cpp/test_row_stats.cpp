// Tests of csrc/include/thermokern/row_stats.h (host build of the host/device header).
//
// Partial statistics of the parts of a row are computed the way the kernels compute a chunk
// (two passes: the maximum m of x, then d = sum e^y and s = sum y e^y with y = k (x - m),
// k = 1/T; see csrc/cpu/row_stats_kernel.h), or one element per part, and merged with
// row_stats_merge in shuffled and tree orders. The lse and entropy of the result must equal
// the single-pass values for the whole row z = k x computed in long double.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <type_traits>
#include <vector>

#include "thermokern/row_stats.h"
#include "tk_rng.h"
#include "tk_test.h"

namespace {

using thermokern::RowStats;
using thermokern::row_stats_empty;
using thermokern::row_stats_entropy;
using thermokern::row_stats_log_norm;
using thermokern::row_stats_lse;
using thermokern::row_stats_merge;

template <typename T>
constexpr T kInf = std::numeric_limits<T>::infinity();
template <typename T>
constexpr T kNaN = std::numeric_limits<T>::quiet_NaN();

using Rng = tk_test::SplitMix64;

// ---- reference: the whole row in long double -------------------------------------------

struct Ref {
  long double lse;
  long double entropy;
};

// lse and entropy of softmax(k x) for the row x, in long double.
template <typename T>
Ref reference(const std::vector<T>& x, T k) {
  constexpr long double inf = std::numeric_limits<long double>::infinity();
  constexpr long double nan = std::numeric_limits<long double>::quiet_NaN();
  long double m = -inf;
  for (T v : x) {
    if (std::isnan(v)) return {nan, nan};
    m = std::max<long double>(m, static_cast<long double>(k) * v);
  }
  if (m == -inf) return {-inf, nan};  // softmax of an all -inf row is NaN; its lse is -inf
  if (m == inf) return {inf, nan};
  long double d = 0, s = 0;
  for (T v : x) {
    if (v == -kInf<T>) continue;
    const long double y = static_cast<long double>(k) * v - m;
    const long double e = std::exp(y);
    d += e;
    s += y * e;
  }
  return {m + std::log(d), std::log(d) - s / d};
}

// ---- partial statistics in T -----------------------------------------------------------

template <typename T>
T nan_max(T a, T b) {
  if (a != a) return a;
  return (b != b || b > a) ? b : a;
}

// Two-pass statistics of p[0..n), as the kernels compute one chunk: m = max x (NaN wins),
// y = k (x - m), d = sum e^y, s = sum y e^y with -inf entries adding 0 to s.
template <typename T>
RowStats<T> part_stats(const T* p, size_t n, T k) {
  T m = -kInf<T>;
  for (size_t i = 0; i < n; ++i) m = nan_max(m, p[i]);
  if (m == -kInf<T>) return row_stats_empty<T>();
  T d = 0, s = 0;
  for (size_t i = 0; i < n; ++i) {
    const T y = (p[i] - m) * k;
    const T e = thermokern::tk_exp(y);
    d += e;
    s += (y == -kInf<T> ? T(0) : y * e);
  }
  return RowStats<T>{m, d, s};
}

// One element as a part of its own: {x, 1, 0} for finite x, the empty statistics for -inf,
// and (as a kernel computes it, y = k (x - x)) NaN d and s for NaN and +inf.
template <typename T>
RowStats<T> element_stats(T x, T k) {
  return part_stats(&x, 1, k);
}

// Random split of [0, n) into k >= 1 contiguous non-empty parts; returns the k+1 bounds.
std::vector<size_t> random_bounds(Rng& rng, size_t n, size_t parts) {
  parts = std::max<size_t>(1, std::min(parts, n));
  std::vector<size_t> cuts;
  while (cuts.size() < parts - 1) {
    const size_t c = 1 + rng.below(n - 1);
    if (std::find(cuts.begin(), cuts.end(), c) == cuts.end()) cuts.push_back(c);
  }
  std::sort(cuts.begin(), cuts.end());
  std::vector<size_t> b{0};
  b.insert(b.end(), cuts.begin(), cuts.end());
  b.push_back(n);
  return b;
}

template <typename T>
std::vector<RowStats<T>> split_stats(const std::vector<T>& x, const std::vector<size_t>& b, T k) {
  std::vector<RowStats<T>> parts;
  for (size_t i = 0; i + 1 < b.size(); ++i) {
    parts.push_back(part_stats(x.data() + b[i], b[i + 1] - b[i], k));
  }
  return parts;
}

// Left fold over the parts in a random order (and random argument order), starting from
// the empty statistics.
template <typename T>
RowStats<T> merge_shuffled(std::vector<RowStats<T>> parts, T k, Rng& rng) {
  for (size_t i = parts.size(); i > 1; --i) std::swap(parts[i - 1], parts[rng.below(i)]);
  RowStats<T> acc = row_stats_empty<T>();
  for (const RowStats<T>& p : parts) {
    acc = (rng.next() & 1) ? row_stats_merge(acc, p, k) : row_stats_merge(p, acc, k);
  }
  return acc;
}

// Pairwise tree, as the CUDA kernel's warp shuffles and shared-memory pass merge.
template <typename T>
RowStats<T> merge_tree(std::vector<RowStats<T>> parts, T k) {
  while (parts.size() > 1) {
    std::vector<RowStats<T>> next;
    for (size_t i = 0; i < parts.size(); i += 2) {
      next.push_back(i + 1 < parts.size() ? row_stats_merge(parts[i], parts[i + 1], k) : parts[i]);
    }
    parts.swap(next);
  }
  return parts.empty() ? row_stats_empty<T>() : parts[0];
}

// The online update: every element merged into a running statistic, left to right.
template <typename T>
RowStats<T> merge_online(const std::vector<T>& x, T k) {
  RowStats<T> acc = row_stats_empty<T>();
  for (T v : x) acc = row_stats_merge(acc, element_stats(v, k), k);
  return acc;
}

template <typename T>
bool bit_equal(T a, T b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

template <typename T>
bool bit_equal(const RowStats<T>& a, const RowStats<T>& b) {
  return bit_equal(a.m, b.m) && bit_equal(a.d, b.d) && bit_equal(a.s, b.s);
}

template <typename T>
bool all_nan(const RowStats<T>& r) {
  return std::isnan(r.m) && std::isnan(r.d) && std::isnan(r.s);
}

// Error bounds. lse = k m + log d: k m is rounded once; log d carries the relative error of
// d, which grows with the number of terms. H = log d - s / d with both terms in [0, H], so
// the same relative error on each gives an error relative to 1 + H.
template <typename T>
long double lse_tol(const Ref& r, size_t n) {
  const long double eps = std::numeric_limits<T>::epsilon();
  return eps * (4 * std::fabs(r.lse) + 8 * std::sqrt(static_cast<long double>(n)) + 8);
}

template <typename T>
long double entropy_tol(const Ref& r, size_t n) {
  const long double eps = std::numeric_limits<T>::epsilon();
  return eps * (8 * std::sqrt(static_cast<long double>(n)) + 8) * (1 + std::fabs(r.entropy));
}

template <typename T>
const char* type_name() {
  return std::is_same_v<T, float> ? "float" : "double";
}

template <typename T>
bool check_against(const RowStats<T>& got, T k, const Ref& ref, size_t n, const char* what) {
  const long double lse = row_stats_lse(got, k), h = row_stats_entropy(got);
  const long double tl = lse_tol<T>(ref, n), th = entropy_tol<T>(ref, n);
  const bool ok = std::fabs(lse - ref.lse) <= tl && std::fabs(h - ref.entropy) <= th &&
                  row_stats_log_norm(got) == thermokern::tk_log(got.d);
  return TK_CHECK_MSG(ok,
                      "%s %s n=%zu k=%.9g: lse %.17Lg vs ref %.17Lg (diff %.3Lg, tol %.3Lg); "
                      "entropy %.17Lg vs ref %.17Lg (diff %.3Lg, tol %.3Lg)",
                      type_name<T>(), what, n, static_cast<double>(k), lse, ref.lse,
                      std::fabs(lse - ref.lse), tl, h, ref.entropy, std::fabs(h - ref.entropy), th);
}

// Row generators. `kind` selects the distribution.
template <typename T>
std::vector<T> make_row(Rng& rng, size_t n, int kind) {
  std::vector<T> x(n);
  for (size_t i = 0; i < n; ++i) {
    double v;
    switch (kind) {
      case 0: v = rng.normal(); break;                    // unit logits
      case 1: v = 10.0 * rng.normal(); break;             // peaked softmax
      case 2: v = 100.0 * rng.normal(); break;            // nearly one-hot
      case 3: v = 0.01 * rng.normal(); break;             // nearly uniform
      case 4: v = 1e4 + rng.normal(); break;              // large offset
      case 5: v = -1e4 + 3.0 * rng.normal(); break;       // large negative offset
      case 6: v = -1e4 + 2e4 * rng.uniform(); break;      // spread over [-1e4, 1e4]
      default: v = (rng.next() & 1) ? 1e4 : -1e4; break;  // the two extremes only
    }
    x[i] = static_cast<T>(v);
  }
  return x;
}

constexpr int kKinds = 8;
const size_t kSizes[] = {1, 2, 3, 5, 17, 64, 100, 1000, 2049, 5000};
// Inverse temperatures k = 1/T: T = 1, 0.7, 2, 0.25, 3.
const double kInvT[] = {1.0, 1.0 / 0.7, 0.5, 4.0, 1.0 / 3.0};

template <typename T>
void random_splits_match_long_double() {
  Rng rng{0xc0ffee + sizeof(T)};
  for (double kd : kInvT) {
    const T k = static_cast<T>(kd);
    for (int kind = 0; kind < kKinds; ++kind) {
      for (size_t n : kSizes) {
        for (int rep = 0; rep < 2; ++rep) {
          const std::vector<T> x = make_row<T>(rng, n, kind);
          const Ref ref = reference(x, k);
          TK_CHECK_MSG(std::isfinite(ref.lse) && std::isfinite(ref.entropy), "reference finite");
          // Single part (the plain two-pass statistics).
          check_against(part_stats(x.data(), n, k), k, ref, n, "one part");
          // Random splits into up to 16 parts, merged in shuffled and in tree order.
          const std::vector<RowStats<T>> parts = split_stats(x, random_bounds(rng, n, 1 + rng.below(16)), k);
          check_against(merge_shuffled(parts, k, rng), k, ref, n, "shuffled merge");
          check_against(merge_tree(parts, k), k, ref, n, "tree merge");
          // Element by element: the online update, and a tree over single elements.
          if (n <= 2049) {
            check_against(merge_online(x, k), k, ref, n, "online merge");
            std::vector<RowStats<T>> elems;
            for (T v : x) elems.push_back(element_stats(v, k));
            check_against(merge_tree(elems, k), k, ref, n, "element tree merge");
          }
        }
      }
    }
  }
}

// log p_j = k (x_j - m) - log_norm is a normalised log-distribution whose entropy is H.
template <typename T>
void log_norm_normalises() {
  Rng rng{0x10 + sizeof(T)};
  for (double kd : kInvT) {
    const T k = static_cast<T>(kd);
    for (int kind = 0; kind < kKinds; ++kind) {
      const size_t n = 1 + rng.below(3000);
      const std::vector<T> x = make_row<T>(rng, n, kind);
      const RowStats<T> r = merge_tree(split_stats(x, random_bounds(rng, n, 7), k), k);
      const T log_norm = row_stats_log_norm(r);
      long double total = 0, h = 0;
      for (T v : x) {
        const long double lp = static_cast<long double>((v - r.m) * k) - log_norm;
        total += std::exp(lp);
        h -= std::exp(lp) * lp;
      }
      const long double eps = std::numeric_limits<T>::epsilon();
      TK_CHECK_NEAR(total, 1.0L, eps * (8 * std::sqrt(static_cast<long double>(n)) + 8));
      TK_CHECK_NEAR(h, static_cast<long double>(row_stats_entropy(r)),
                    eps * (8 * std::sqrt(static_cast<long double>(n)) + 8) * (1 + std::fabs(h)));
      TK_CHECK(row_stats_lse(r, k) == r.m * k + log_norm);
    }
  }
}

template <typename T>
void neg_inf_entries() {
  Rng rng{0xbeef + sizeof(T)};
  for (size_t n : kSizes) {
    for (int rep = 0; rep < 4; ++rep) {
      const T k = static_cast<T>(kInvT[rep % 5]);
      std::vector<T> x = make_row<T>(rng, n, rep % 3);
      // Mask a random fraction of the entries with -inf, keeping at least one finite entry.
      const double frac = 0.2 + 0.2 * rep;
      std::vector<T> kept;
      const size_t keep_at = rng.below(n);
      for (size_t i = 0; i < n; ++i) {
        if (i != keep_at && rng.uniform() < frac) {
          x[i] = -kInf<T>;
        } else {
          kept.push_back(x[i]);
        }
      }
      const Ref ref = reference(kept, k);  // -inf entries are simply absent
      const Ref ref_full = reference(x, k);
      TK_CHECK(ref.lse == ref_full.lse && ref.entropy == ref_full.entropy);
      const std::vector<RowStats<T>> parts = split_stats(x, random_bounds(rng, n, 1 + rng.below(12)), k);
      check_against(merge_shuffled(parts, k, rng), k, ref, n, "-inf entries, shuffled merge");
      check_against(merge_tree(parts, k), k, ref, n, "-inf entries, tree merge");
      check_against(merge_online(x, k), k, ref, n, "-inf entries, online merge");
    }
  }
}

template <typename T>
void neg_inf_part_contributes_nothing() {
  Rng rng{0x1234 + sizeof(T)};
  const std::vector<T> all_neg_inf(37, -kInf<T>);
  for (double kd : kInvT) {
    const T k = static_cast<T>(kd);
    const RowStats<T> ninf = part_stats(all_neg_inf.data(), all_neg_inf.size(), k);
    TK_CHECK(bit_equal(ninf, row_stats_empty<T>()));
    for (int kind = 0; kind < kKinds; ++kind) {
      const std::vector<T> x = make_row<T>(rng, 257, kind);
      const RowStats<T> a = part_stats(x.data(), x.size(), k);
      // Merging an all -inf part (or the empty statistics) is the identity, bit for bit, on
      // either side.
      TK_CHECK(bit_equal(row_stats_merge(a, ninf, k), a));
      TK_CHECK(bit_equal(row_stats_merge(ninf, a, k), a));
      TK_CHECK(bit_equal(row_stats_merge(a, row_stats_empty<T>(), k), a));
      TK_CHECK(bit_equal(row_stats_merge(row_stats_empty<T>(), a, k), a));
      // ... also when it sits between real parts of the row.
      std::vector<T> with_gap(x.begin(), x.begin() + 100);
      with_gap.insert(with_gap.end(), all_neg_inf.begin(), all_neg_inf.end());
      with_gap.insert(with_gap.end(), x.begin() + 100, x.end());
      const std::vector<RowStats<T>> parts =
          split_stats(with_gap, {0, 100, 100 + all_neg_inf.size(), with_gap.size()}, k);
      TK_CHECK(bit_equal(parts[1], row_stats_empty<T>()));
      check_against(merge_tree(parts, k), k, reference(x, k), x.size(), "all -inf middle part");
    }
    // A row of -inf only: lse = -inf (as torch.logsumexp), entropy NaN (softmax is NaN).
    const RowStats<T> e = merge_online(all_neg_inf, k);
    TK_CHECK(bit_equal(e, row_stats_empty<T>()));
    TK_CHECK(row_stats_lse(e, k) == -kInf<T>);
    TK_CHECK(std::isnan(row_stats_entropy(e)));
  }
}

// Rows of sizes 1, 2, 9 and 300, 20 each (kinds and temperatures cycling), into which
// `inject(x, n, rep)` writes special values; then `check(x, parts, k, n, rep)` with the row
// split into 1..8 random parts.
template <typename T, typename Inject, typename Check>
void special_value_rows(Rng& rng, Inject inject, Check check) {
  for (size_t n : {size_t{1}, size_t{2}, size_t{9}, size_t{300}}) {
    for (int rep = 0; rep < 20; ++rep) {
      const T k = static_cast<T>(kInvT[rep % 5]);
      std::vector<T> x = make_row<T>(rng, n, rep % kKinds);
      inject(x, n, rep);
      const std::vector<RowStats<T>> parts = split_stats(x, random_bounds(rng, n, 1 + rng.below(8)), k);
      check(x, parts, k, n, rep);
    }
  }
}

template <typename T>
void nan_propagates() {
  Rng rng{0x7a7 + sizeof(T)};
  special_value_rows<T>(
      rng,
      [&](std::vector<T>& x, size_t n, int rep) {
        x[rng.below(n)] = kNaN<T>;
        if (rep % 4 == 1 && n > 2) {  // also some -inf, possibly a whole -inf part
          for (size_t i = 0; i < n / 2; ++i) {
            if (!std::isnan(x[i])) x[i] = -kInf<T>;
          }
        }
        if (rep % 4 == 2) {  // NaN wins over +inf too
          const size_t i = rng.below(n);
          if (!std::isnan(x[i])) x[i] = kInf<T>;
        }
      },
      [&](const std::vector<T>& x, const std::vector<RowStats<T>>& parts, T k, size_t n, int rep) {
        std::vector<RowStats<T>> elems;
        for (T v : x) elems.push_back(element_stats(v, k));
        for (const RowStats<T>& r : {merge_shuffled(parts, k, rng), merge_tree(parts, k),
                                     merge_online(x, k), merge_tree(elems, k)}) {
          TK_CHECK_MSG(all_nan(r) && std::isnan(row_stats_lse(r, k)) && std::isnan(row_stats_entropy(r)),
                       "%s n=%zu rep=%d: m %g d %g s %g", type_name<T>(), n, rep,
                       static_cast<double>(r.m), static_cast<double>(r.d), static_cast<double>(r.s));
        }
      });
  // All-NaN statistics merged on either side of finite, +inf, -inf and empty partners stay
  // all NaN.
  const T k = T(1);
  const RowStats<T> nan_part = element_stats(kNaN<T>, k);
  TK_CHECK(all_nan(nan_part));
  const RowStats<T> partners[] = {RowStats<T>{T(3), T(2), T(-1)}, RowStats<T>{T(-1e4), T(1), T(0)},
                                  element_stats(kInf<T>, k), row_stats_empty<T>()};
  for (const RowStats<T>& p : partners) {
    TK_CHECK(all_nan(row_stats_merge(nan_part, p, k)));
    TK_CHECK(all_nan(row_stats_merge(p, nan_part, k)));
  }
}

template <typename T>
void pos_inf_gives_nan_entropy() {
  Rng rng{0x1f + sizeof(T)};
  special_value_rows<T>(
      rng,
      [&](std::vector<T>& x, size_t n, int rep) {
        if (rep % 4 == 1) x[rng.below(n)] = -kInf<T>;  // -inf first, +inf may overwrite it
        x[rng.below(n)] = kInf<T>;
        if (rep % 3 == 0) x[rng.below(n)] = kInf<T>;  // sometimes two
      },
      [&](const std::vector<T>& x, const std::vector<RowStats<T>>& parts, T k, size_t n, int rep) {
        for (const RowStats<T>& r : {merge_shuffled(parts, k, rng), merge_tree(parts, k), merge_online(x, k)}) {
          TK_CHECK_MSG(std::isnan(row_stats_entropy(r)), "%s n=%zu rep=%d: entropy %g",
                       type_name<T>(), n, rep, static_cast<double>(row_stats_entropy(r)));
        }
      });
  // Two +inf maxima merge to all-NaN statistics, whatever d and s say.
  const RowStats<T> a{kInf<T>, T(1), T(0)};
  TK_CHECK(all_nan(row_stats_merge(a, a, T(1))));
  TK_CHECK(all_nan(row_stats_merge(a, a, T(0.5))));
}

template <typename T>
void merge_is_order_independent() {
  Rng rng{0x0dd + sizeof(T)};
  for (int iter = 0; iter < 3000; ++iter) {
    const T k = static_cast<T>(kInvT[iter % 5]);
    const size_t n = 3 + rng.below(200);
    const int kind = static_cast<int>(rng.below(kKinds));
    std::vector<T> x = make_row<T>(rng, n, kind);
    if (iter % 5 == 0) x[rng.below(n)] = -kInf<T>;
    if (iter % 7 == 0) {  // equal maxima in different parts
      const T mx = *std::max_element(x.begin(), x.end());
      x[0] = mx;
      x[n - 1] = mx;
    }
    const std::vector<RowStats<T>> p = split_stats(x, random_bounds(rng, n, 3), k);
    // Commutative exactly: the larger maximum always becomes the base, and equal maxima
    // add d and s in either order.
    TK_CHECK(bit_equal(row_stats_merge(p[0], p[1], k), row_stats_merge(p[1], p[0], k)));
    TK_CHECK(bit_equal(row_stats_merge(p[1], p[2], k), row_stats_merge(p[2], p[1], k)));
    // Associative within rounding: every bracketing and order matches the reference.
    const Ref ref = reference(x, k);
    check_against(row_stats_merge(row_stats_merge(p[0], p[1], k), p[2], k), k, ref, n, "(p0 p1) p2");
    check_against(row_stats_merge(p[0], row_stats_merge(p[1], p[2], k), k), k, ref, n, "p0 (p1 p2)");
    check_against(row_stats_merge(row_stats_merge(p[2], p[0], k), p[1], k), k, ref, n, "(p2 p0) p1");
    check_against(row_stats_merge(p[1], row_stats_merge(p[2], p[0], k), k), k, ref, n, "p1 (p2 p0)");
  }
}

template <typename T>
void extreme_values() {
  Rng rng{0xe4 + sizeof(T)};
  for (double kd : kInvT) {
    const T k = static_cast<T>(kd);
    // Parts at +1e4 and -1e4: the small part is scaled by e^{-2e4 k} = 0, without overflow or
    // NaN, and the result is the big part's statistics.
    const std::vector<T> hi = make_row<T>(rng, 300, 4);  // 1e4 + N(0, 1)
    const std::vector<T> lo = make_row<T>(rng, 300, 5);  // -1e4 + 3 N(0, 1)
    const RowStats<T> sh = part_stats(hi.data(), hi.size(), k);
    const RowStats<T> sl = part_stats(lo.data(), lo.size(), k);
    for (const RowStats<T>& r : {row_stats_merge(sh, sl, k), row_stats_merge(sl, sh, k)}) {
      TK_CHECK(std::isfinite(r.m) && std::isfinite(r.d) && std::isfinite(r.s));
      TK_CHECK(r.m == sh.m && r.d == sh.d && r.s == sh.s);
    }
    std::vector<T> both = hi;
    both.insert(both.end(), lo.begin(), lo.end());
    check_against(row_stats_merge(sl, sh, k), k, reference(both, k), both.size(), "+-1e4 parts");
    // Rows near +-1e4: lse ~ +-1e4 k is finite, and the entropy keeps an absolute accuracy
    // independent of the 1e4 offset (m is exact and x - m is exact near the maximum).
    for (int kind : {4, 5, 6, 7}) {
      for (size_t n : {size_t{2}, size_t{64}, size_t{1000}, size_t{4096}}) {
        const std::vector<T> x = make_row<T>(rng, n, kind);
        const Ref ref = reference(x, k);
        const std::vector<RowStats<T>> parts = split_stats(x, random_bounds(rng, n, 1 + rng.below(16)), k);
        for (const RowStats<T>& r : {merge_shuffled(parts, k, rng), merge_tree(parts, k), merge_online(x, k)}) {
          TK_CHECK(std::isfinite(r.m) && std::isfinite(r.d) && std::isfinite(r.s));
          TK_CHECK(std::isfinite(row_stats_lse(r, k)) && std::isfinite(row_stats_entropy(r)));
          check_against(r, k, ref, n, "extreme row");
        }
      }
    }
  }
}

}  // namespace

TK_TEST(row_stats, random_splits_match_long_double_float) { random_splits_match_long_double<float>(); }
TK_TEST(row_stats, random_splits_match_long_double_double) { random_splits_match_long_double<double>(); }
TK_TEST(row_stats, log_norm_normalises_float) { log_norm_normalises<float>(); }
TK_TEST(row_stats, log_norm_normalises_double) { log_norm_normalises<double>(); }
TK_TEST(row_stats, neg_inf_entries_float) { neg_inf_entries<float>(); }
TK_TEST(row_stats, neg_inf_entries_double) { neg_inf_entries<double>(); }
TK_TEST(row_stats, neg_inf_part_contributes_nothing_float) { neg_inf_part_contributes_nothing<float>(); }
TK_TEST(row_stats, neg_inf_part_contributes_nothing_double) { neg_inf_part_contributes_nothing<double>(); }
TK_TEST(row_stats, nan_propagates_float) { nan_propagates<float>(); }
TK_TEST(row_stats, nan_propagates_double) { nan_propagates<double>(); }
TK_TEST(row_stats, pos_inf_gives_nan_entropy_float) { pos_inf_gives_nan_entropy<float>(); }
TK_TEST(row_stats, pos_inf_gives_nan_entropy_double) { pos_inf_gives_nan_entropy<double>(); }
TK_TEST(row_stats, merge_is_order_independent_float) { merge_is_order_independent<float>(); }
TK_TEST(row_stats, merge_is_order_independent_double) { merge_is_order_independent<double>(); }
TK_TEST(row_stats, extreme_values_float) { extreme_values<float>(); }
TK_TEST(row_stats, extreme_values_double) { extreme_values<double>(); }

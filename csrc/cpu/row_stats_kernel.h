// The row statistics of the softmax-family CPU kernels (softmax_entropy_kernel.h,
// cross_entropy_kernel.h), compiled once per ISA with them ([Note: per-ISA kernels] in isa.h):
// the forward's online statistics of a row (thermokern/row_stats.h) and the backward's sweep
// that recomputes p from them.
//
// [Note: one read of each row]
// A row is processed in chunks of kChunk elements (8 KB of fp32, well inside L1). Each chunk
// is swept twice, once for its maximum and once for sum e^{y} and sum y e^{y} with
// y = x/T - max, and then merged into the row's running statistics (row_stats.h). Memory
// sees every element once; the second sweep hits L1. 16-bit inputs are widened into a float
// buffer chunk by chunk.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include "dispatch.h"
#include "softmax_entropy_args.h"
#include "thermokern/row_stats.h"
#include "vec_math.h"

namespace thermokern::cpu {
inline namespace CPU_CAPABILITY {

constexpr int64_t kChunk = 2048;

// [Note: one sweep per chunk after the first]
// The max sweep before the exponentials is only needed to keep 2^t from overflowing. Once a
// row has a reference shift m (the first chunk's maximum), a later chunk is swept once,
// relative to m, tracking its maximum on the side, so that memory streams in while the
// exponentials run (4096 x 32000 fp32 forward: 34 ms -> 22 ms here). A chunk whose maximum
// exceeds m by more than kRefMargin (base-2 units), or that holds NaN/+inf (d comes out
// NaN), is redone with the two-sweep path and its maximum becomes the new m.
// The margin is about accuracy, not overflow: with m below the true maximum by g nats,
// H = log d - s/d cancels two numbers of size ~g, costing ~g ulp of float. 8 base-2 units
// (5.5 nats) keeps that under ~1e-6, and chunk maxima of real logits rarely differ more.
constexpr float kRefMargin = 8.0f;

// Sweep of a float chunk relative to the shift ref (finite), in base 2 (see [Note: the float
// exponential]): with t = (x - ref) k log2(e), d = sum 2^t and s = ln 2 sum t 2^t. Returns
// false when the chunk must be redone by chunk_stats (an element more than kRefMargin above
// ref in base-2 units, or NaN/+inf). chunk_stats' own second sweep is this with ref = max.
inline bool chunk_stats_ref(const float* p, int64_t n, float inv_t, float ref, RowStats<float>& out) {
  using V = Vectorized<float>;
  constexpr int64_t W = V::size();
  const float k2 = inv_t * kLog2e;
  const V vk2(k2), vref(ref);
  V d0(0), d1(0), s0(0), s1(0), tmax(-std::numeric_limits<float>::infinity());
  int64_t i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    V t0, t1;
    const V u0 = (V::loadu(p + i) - vref) * vk2;
    const V u1 = (V::loadu(p + i + W) - vref) * vk2;
    tmax = at::vec::clamp_min(tmax, at::vec::clamp_min(u0, u1));
    const V e0 = exp2_nonpos(u0, t0);
    const V e1 = exp2_nonpos(u1, t1);
    d0 = d0 + e0;
    d1 = d1 + e1;
    s0 = at::vec::fmadd(t0, e0, s0);
    s1 = at::vec::fmadd(t1, e1, s1);
  }
  for (; i + W <= n; i += W) {
    V t0;
    const V u0 = (V::loadu(p + i) - vref) * vk2;
    tmax = at::vec::clamp_min(tmax, u0);
    const V e0 = exp2_nonpos(u0, t0);
    d0 = d0 + e0;
    s0 = at::vec::fmadd(t0, e0, s0);
  }
  float d = lane_sum(d0 + d1), s = lane_sum(s0 + s1);
  alignas(64) float ml[W];
  tmax.store(ml);
  float mt = -std::numeric_limits<float>::infinity();
  for (int64_t k = 0; k < W; ++k) mt = std::max(mt, ml[k]);
  for (; i < n; ++i) {
    const float t = (p[i] - ref) * k2;
    mt = std::max(mt, t);
    const float e = std::exp2(t);
    d += e;
    s += (t == -std::numeric_limits<float>::infinity()) ? 0.0f : t * e;
  }
  if (!(mt <= kRefMargin) || d != d) return false;  // too far above ref, or NaN/+inf inside
  out = RowStats<float>{ref, d, s * kLn2};
  return true;
}

// Statistics of one chunk (row_stats.h): m = max x, d = sum e^y, s = sum y e^y with
// y = (x - m) / T, in the accumulation type.
template <typename acc_t>
inline RowStats<acc_t> chunk_stats(const acc_t* p, int64_t n, acc_t inv_t) {
  using V = Vectorized<acc_t>;
  constexpr int64_t W = V::size();
  constexpr acc_t kInf = std::numeric_limits<acc_t>::infinity();

  V vmax0(-kInf), vmax1(-kInf);
  int64_t i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    vmax0 = at::vec::maximum(vmax0, V::loadu(p + i));
    vmax1 = at::vec::maximum(vmax1, V::loadu(p + i + W));
  }
  for (; i + W <= n; i += W) vmax0 = at::vec::maximum(vmax0, V::loadu(p + i));
  vmax0 = at::vec::maximum(vmax0, vmax1);
  alignas(64) acc_t lanes[W];
  vmax0.store(lanes);
  acc_t mx = -kInf;
  for (int64_t k = 0; k < W; ++k) mx = nan_max(mx, lanes[k]);
  for (; i < n; ++i) mx = nan_max(mx, p[i]);
  if (mx == -kInf) return row_stats_empty<acc_t>();  // all -inf: contributes nothing
  if (mx != mx) {
    const acc_t nan = std::numeric_limits<acc_t>::quiet_NaN();
    return RowStats<acc_t>{nan, nan, nan};
  }

  if constexpr (std::is_same_v<acc_t, float>) {
    RowStats<float> out;
    if (chunk_stats_ref(p, n, inv_t, mx, out)) return out;
    const float nan = std::numeric_limits<float>::quiet_NaN();
    return RowStats<float>{mx, nan, nan};  // +inf in the chunk: softmax is undefined
  }
  const V vinv(inv_t), vmx(mx), vlow(std::numeric_limits<acc_t>::lowest());
  V d0(0), d1(0), s0(0), s1(0);
  i = 0;
  // y = (x - m) / T: the subtraction first keeps y exact for x near m, whatever T.
  // y * e^y is computed as max(y, lowest) * e^y so that x = -inf gives (-huge) * 0 = 0
  // instead of NaN, while a NaN y (x = m = +inf) still propagates.
  for (; i + 2 * W <= n; i += 2 * W) {
    V y0 = (V::loadu(p + i) - vmx) * vinv;
    V y1 = (V::loadu(p + i + W) - vmx) * vinv;
    V e0 = y0.exp();
    V e1 = y1.exp();
    d0 = d0 + e0;
    d1 = d1 + e1;
    s0 = at::vec::fmadd(at::vec::clamp_min(y0, vlow), e0, s0);
    s1 = at::vec::fmadd(at::vec::clamp_min(y1, vlow), e1, s1);
  }
  for (; i + W <= n; i += W) {
    V y0 = (V::loadu(p + i) - vmx) * vinv;
    V e0 = y0.exp();
    d0 = d0 + e0;
    s0 = at::vec::fmadd(at::vec::clamp_min(y0, vlow), e0, s0);
  }
  acc_t d = lane_sum(d0 + d1), s = lane_sum(s0 + s1);
  for (; i < n; ++i) {
    const acc_t y = (p[i] - mx) * inv_t;
    const acc_t e = std::exp(y);
    d += e;
    s += (y == -kInf ? acc_t(0) : y * e);
  }
  return RowStats<acc_t>{mx, d, s};
}

// Chunk sum of x (for label smoothing's mean logit), in the accumulation type.
template <typename acc_t>
inline acc_t chunk_sum(const acc_t* p, int64_t n) {
  using V = Vectorized<acc_t>;
  constexpr int64_t W = V::size();
  V a0(0), a1(0);
  int64_t i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    a0 = a0 + V::loadu(p + i);
    a1 = a1 + V::loadu(p + i + W);
  }
  for (; i + W <= n; i += W) a0 = a0 + V::loadu(p + i);
  acc_t sum = lane_sum(a0 + a1);
  for (; i < n; ++i) sum += p[i];
  return sum;
}

// Online statistics of one row (chunks merged in double: a few flops per chunk), plus the
// row sum of x when x_sum is given.
template <typename scalar_t>
RowStats<double> row_stats_of(const scalar_t* row, int64_t C, acc_type_t<scalar_t> inv_t,
                              acc_type_t<scalar_t>* buf, double* x_sum) {
  using acc_t = acc_type_t<scalar_t>;
  RowStats<double> st = row_stats_empty<double>();
  double sum = 0.0;
  for (int64_t c0 = 0; c0 < C; c0 += kChunk) {
    const int64_t n = std::min(kChunk, C - c0);
    const acc_t* p = load_chunk<scalar_t, acc_t>(row + c0, n, buf);
    RowStats<acc_t> cs;
    bool done = false;
    if constexpr (std::is_same_v<acc_t, float>) {
      // See [Note: one sweep per chunk after the first].
      const float ref = static_cast<float>(st.m);
      if (std::isfinite(ref)) done = chunk_stats_ref(p, n, inv_t, ref, cs);
    }
    if (!done) cs = chunk_stats<acc_t>(p, n, inv_t);
    st = row_stats_merge(st,
                         RowStats<double>{static_cast<double>(cs.m), static_cast<double>(cs.d),
                                          static_cast<double>(cs.s)},
                         static_cast<double>(inv_t));
    if (x_sum != nullptr) sum += static_cast<double>(chunk_sum<acc_t>(p, n));
  }
  if (x_sum != nullptr) *x_sum = sum;
  return st;
}

// Forward over rows for both ops (softmax_entropy, cross_entropy): the statistics of each row
// (and its sum of x when with_sum), written to a.entropy, a.shift and a.log_norm, then
// on_row(r, row, k, st, h, log_norm, x_sum) for the op's own outputs (k = 1/T of the row,
// h its entropy).
template <typename scalar_t, typename OnRow>
void row_stats_rows(const SoftmaxEntropyArgs& a, int64_t row_begin, int64_t row_end,
                    bool with_sum, OnRow on_row) {
  using acc_t = acc_type_t<scalar_t>;
  alignas(64) acc_t buf[std::is_same_v<scalar_t, acc_t> ? 1 : kChunk];
  const auto* x = static_cast<const scalar_t*>(a.x);
  const auto* inv_t = static_cast<const acc_t*>(a.inv_t);
  auto* entropy = static_cast<acc_t*>(a.entropy);
  auto* shift = static_cast<acc_t*>(a.shift);
  auto* log_norm = static_cast<acc_t*>(a.log_norm);
  for (int64_t r = row_begin; r < row_end; ++r) {
    const scalar_t* row = x + r * a.row_stride;
    const acc_t k = inv_t[r * a.inv_t_stride];
    double x_sum = 0.0;
    const RowStats<double> st = row_stats_of<scalar_t>(row, a.C, k, buf, with_sum ? &x_sum : nullptr);
    const double h = row_stats_entropy(st);
    const double ln = row_stats_log_norm(st);
    entropy[r] = static_cast<acc_t>(h);
    shift[r] = static_cast<acc_t>(st.m);
    log_norm[r] = static_cast<acc_t>(ln);
    on_row(r, row, static_cast<double>(k), st, h, ln, x_sum);
  }
}

// The target y = a.target[r] of row r of a target-indexed op (cross_entropy, token_logprobs;
// Args has target, ignore_index and C): true when it names a column; otherwise false, with
// `fill` set to what the row's outputs are (the per-row output, every gradient entry): 0 for
// ignore_index, NaN for a class outside [0, C) (the ops check the targets first; nothing is
// read at such a y).
template <typename Args, typename T>
inline bool live_target(const Args& a, int64_t r, int64_t& y, T& fill) {
  y = a.target[r];
  if (y != a.ignore_index && y >= 0 && y < a.C) return true;
  fill = y == a.ignore_index ? T(0) : std::numeric_limits<T>::quiet_NaN();
  return false;
}

// out_j = A p_j + B p_j log p_j + c over one chunk, with log p_j = k (x_j - m) - log_norm.
// Every backward pass has this form:
//   entropy:        A = coef H, B = coef, c = 0                 (coef = -g k)
//   cross-entropy:  A = g k (1 + beta H + 2 zw lse), B = g k beta, c = -g k eps / C,
//                   and -g k (1 - eps) added at the target column afterwards;
//   token logprobs: A = -k (g_l + g_H H), B = -k g_H, c = 0, and k g_l at the target column.
// Entries at -inf get c exactly (p = 0, no 0 * -inf).
template <typename acc_t>
inline void softmax_affine_chunk(const acc_t* p, int64_t n, acc_t k, acc_t m, acc_t log_norm,
                                 acc_t A, acc_t B, acc_t c, acc_t* out) {
  if constexpr (std::is_same_v<acc_t, float>) {
    // Base 2 (see [Note: the float exponential]): t = log2 p, B p log p = (B ln 2) 2^t t.
    using V = Vectorized<float>;
    constexpr int64_t W = V::size();
    const float k2 = k * kLog2e;
    const V vk2(k2), vm(m), vneg_ln2(-log_norm * kLog2e), vA(A), vB2(B * kLn2), vc(c);
    int64_t i = 0;
    for (; i + W <= n; i += W) {
      V tc;
      const V e = exp2_nonpos(at::vec::fmadd(V::loadu(p + i) - vm, vk2, vneg_ln2), tc);
      at::vec::fmadd(e * tc, vB2, at::vec::fmadd(e, vA, vc)).store(out + i);
    }
    for (; i < n; ++i) {
      const float t = (p[i] - m) * k2 - log_norm * kLog2e;
      if (t == -std::numeric_limits<float>::infinity()) {
        out[i] = c;
      } else {
        const float e = std::exp2(t);
        out[i] = A * e + B * kLn2 * e * t + c;
      }
    }
  } else {
    using V = Vectorized<acc_t>;
    constexpr int64_t W = V::size();
    const V vk(k), vm(m), vneg_ln(-log_norm), vA(A), vB(B), vc(c),
        vlow(std::numeric_limits<acc_t>::lowest());
    int64_t i = 0;
    for (; i + W <= n; i += W) {
      const V logp = at::vec::fmadd(V::loadu(p + i) - vm, vk, vneg_ln);
      const V e = logp.exp();
      at::vec::fmadd(e * at::vec::clamp_min(logp, vlow), vB, at::vec::fmadd(e, vA, vc)).store(out + i);
    }
    for (; i < n; ++i) {
      const acc_t logp = (p[i] - m) * k - log_norm;
      if (logp == -std::numeric_limits<acc_t>::infinity()) {
        out[i] = c;
      } else {
        const acc_t e = std::exp(logp);
        out[i] = A * e + B * e * logp + c;
      }
    }
  }
}

// Backward over rows for the row ops (softmax_entropy, cross_entropy, token_logprobs): per row,
// coeffs(r, k, A, B, c, y, y_term) sets (A, B, c, target column or -1, target term) and
// returns true, and the gradient row is written in the input dtype; or it sets only c and
// returns false, and the row is c everywhere (a row without gradient, 0, or an invalid
// target's NaN row; nothing of it is read).
template <typename scalar_t, typename Coeffs>
void softmax_affine_rows(const SoftmaxEntropyArgs& a, int64_t row_begin, int64_t row_end, Coeffs coeffs) {
  using acc_t = acc_type_t<scalar_t>;
  constexpr bool kWiden = !std::is_same_v<scalar_t, acc_t>;
  alignas(64) acc_t in_buf[kWiden ? kChunk : 1];
  alignas(64) acc_t out_buf[kWiden ? kChunk : 1];
  const auto* x = static_cast<const scalar_t*>(a.x);
  auto* grad_x = static_cast<scalar_t*>(a.grad_x);
  const auto* inv_t = static_cast<const acc_t*>(a.inv_t);
  const auto* shift = static_cast<const acc_t*>(a.shift);
  const auto* log_norm = static_cast<const acc_t*>(a.log_norm);
  for (int64_t r = row_begin; r < row_end; ++r) {
    const scalar_t* row = x + r * a.row_stride;
    scalar_t* grow = grad_x + r * a.C;
    const acc_t k = inv_t[r * a.inv_t_stride];
    acc_t A, B, c, y_term;
    int64_t y;
    if (!coeffs(r, k, A, B, c, y, y_term)) {
      std::fill_n(grow, a.C, static_cast<scalar_t>(c));
      continue;
    }
    for (int64_t c0 = 0; c0 < a.C; c0 += kChunk) {
      const int64_t n = std::min(kChunk, a.C - c0);
      const acc_t* p = load_chunk<scalar_t, acc_t>(row + c0, n, in_buf);
      acc_t* out = kWiden ? out_buf : reinterpret_cast<acc_t*>(grow + c0);
      softmax_affine_chunk<acc_t>(p, n, k, shift[r], log_norm[r], A, B, c, out);
      if (y >= c0 && y < c0 + n) out[y - c0] += y_term;
      if constexpr (kWiden) store_chunk<scalar_t>(out_buf, n, grow + c0);
    }
  }
}

}  // namespace CPU_CAPABILITY
}  // namespace thermokern::cpu

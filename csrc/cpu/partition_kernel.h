// partition_fwd / partition_bwd CPU kernels (logsumexp, log Z, thermodynamic statistics),
// compiled once per ISA ([Note: per-ISA kernels] in isa.h), with the maths of vec_math.h.
// The statistics are defined in csrc/thermokern.cpp, [Note: partition statistics].
//
// [Note: lanes]
// A task is one output row (I == 1: the reduced elements are contiguous) or a tile of W
// adjacent outputs (I > 1: the reduced elements of output i are I apart, so W outputs side by
// side form one vector per reduced index and nothing is transposed). Either way the kernel
// walks a sequence of vectors of W lanes; every lane keeps its own online statistics
// (ref, d, m1, m2), in base 2: t = (x' - ref) k log2(e), d = sum w 2^t, m1 = sum w t 2^t,
// m2 = sum w t^2 2^t. A row's lanes are merged at the end; a tile's lanes are its outputs.
// Elements are taken in chunks of kSteps vectors (8 KB of fp32). As in row_stats_kernel.h, a
// chunk is swept once relative to the lanes' current ref while its maximum is tracked on the
// side; when some lane's chunk maximum passes its ref by more than the margin (or a sum turns
// NaN), the chunk is redone in two sweeps: its maximum first, then the sums relative to it.
// Chunk sums are float (double for double input) and are added into double lane totals.
// A task whose data holds +inf or NaN (or excluded-only lanes at the end) is recomputed by a
// scalar double loop (rare), which is also what defines the special values.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/core/ScalarType.h>

#include "dispatch.h"
#include "partition_args.h"
#include "vec_math.h"

namespace thermokern::cpu {
inline namespace CPU_CAPABILITY {

constexpr int64_t kPartSteps = 128;

// 2^t, with t_clamped = max(t, low) so that t_clamped * 2^t is 0 (not NaN) for t = -inf.
inline Vectorized<float> exp2_acc(const Vectorized<float>& t, Vectorized<float>& t_clamped) {
  return exp2_nonpos(t, t_clamped);  // accurate for t <= 127 (the margins keep t <= 32)
}
inline Vectorized<double> exp2_acc(const Vectorized<double>& t, Vectorized<double>& t_clamped) {
  t_clamped = at::vec::clamp_min(t, Vectorized<double>(-1100.0));  // 2^-1100 == 0 in double
  return t_clamped.exp2();
}

template <typename T>
inline bool any_true(const Vectorized<T>& mask) {
  // Comparison results have all bits set in true lanes; zero_mask() has a bit per zero lane.
  return mask.zero_mask() != (1 << Vectorized<T>::size()) - 1;
}

template <typename T>
inline T lane_max_of(const Vectorized<T>& v) {
  constexpr int64_t W = Vectorized<T>::size();
  alignas(64) T l[W];
  v.store(l);
  T m = -std::numeric_limits<T>::infinity();
  for (int64_t k = 0; k < W; ++k) m = nan_max(m, l[k]);
  return m;
}

// Exact statistics of one output in double (the special-value path, and the definition):
// elements x'[n * stride], w[n * wstride], mask[n * mstride] for n < R (w and mask nullptr when
// absent).
template <typename scalar_t>
void partition_scalar(const scalar_t* x, const scalar_t* w, const bool* mask, int64_t R,
                      int64_t stride, int64_t wstride, int64_t mstride, bool negate, double k,
                      bool moments, double out[4]) {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  auto value = [&](int64_t n, double& xv, double& wv) {
    if (mask != nullptr && !mask[n * mstride]) return false;
    wv = w != nullptr ? static_cast<double>(w[n * wstride]) : 1.0;
    if (w != nullptr && wv == 0.0) return false;
    xv = static_cast<double>(x[n * stride]);
    if (negate) xv = -xv;
    return true;
  };
  double m = -kInf, xv = 0, wv = 0;
  for (int64_t n = 0; n < R; ++n)
    if (value(n, xv, wv)) m = nan_max(m, xv);
  if (m != m) {
    out[0] = out[1] = out[2] = out[3] = nan;
    return;
  }
  if (m == -kInf) {
    out[0] = -kInf;
    out[1] = out[2] = out[3] = 0.0;
    return;
  }
  double d = 0, m1 = 0, m2 = 0;
  if (m == kInf) {
    for (int64_t n = 0; n < R; ++n)
      if (value(n, xv, wv) && xv == kInf) d += wv;
    out[0] = kInf;
    out[1] = d;
    out[2] = out[3] = nan;
    return;
  }
  for (int64_t n = 0; n < R; ++n) {
    if (!value(n, xv, wv) || xv == -kInf) continue;
    const double u = k * (xv - m);
    const double e = wv * std::exp(u);
    d += e;
    if (moments) {
      m1 += u * e;
      m2 += u * u * e;
    }
  }
  out[0] = m;
  out[1] = d;
  out[2] = moments ? m1 : 0.0;
  out[3] = moments ? m2 : 0.0;
}

// Online base-2 statistics of W lanes (see [Note: lanes]).
template <typename acc_t, bool HasW, bool Moments>
struct LaneStats {
  using V = Vectorized<acc_t>;
  static constexpr int64_t W = V::size();
  static constexpr acc_t kInf = std::numeric_limits<acc_t>::infinity();
  // The one-sweep margin in base-2 units: 8 where the moments or signed weights make a low
  // ref cost accuracy (cancellation grows with the gap), 32 for plain sums (overflow-safe).
  static constexpr acc_t kMargin = (Moments || HasW) ? acc_t(8) : acc_t(32);

  V k2;                      // k log2(e) per lane
  int64_t valid;             // lanes that hold outputs (the rest only ever see -inf)
  alignas(64) acc_t ref[W];  // per lane: -inf until the lane sees an included element
  alignas(64) acc_t use[W];  // the shift the sweeps use: ref, or 0 while ref is -inf
  double D[W], M1[W], M2[W];
  bool special = false;  // +inf or NaN seen: the task is redone by partition_scalar

  // Data as stored: x' = -x when neg, handled inside the sweeps (t = (x + ref) (-k2)) so that
  // the input is read directly.
  bool neg = false;

  LaneStats(const V& k2_, int64_t valid_, bool neg_) : k2(k2_), valid(valid_), neg(neg_) {
    for (int64_t l = 0; l < W; ++l) {
      ref[l] = -kInf;
      use[l] = 0;
      D[l] = M1[l] = M2[l] = 0.0;
    }
  }

  // Vector s of the data. Without Excl, excluded elements already hold -inf (as x'). With
  // Excl the data is read as stored and an element is excluded here where its weight is 0 or
  // its mask value mp[...] (1 kept / 0, as acc_t; mp may be nullptr) is 0.
  template <bool Excl>
  V load_x(const acc_t* xp, const acc_t* wp, const acc_t* mp, int64_t at) const {
    V xv = V::loadu(xp + at);
    if constexpr (Excl) {
      const V zero(0);
      V out = zero;  // no bit set: nothing excluded
      if constexpr (HasW) out = V::loadu(wp + at) == zero;
      if (mp != nullptr) out = out | (V::loadu(mp + at) == zero);
      xv = V::blendv(xv, V(neg ? kInf : -kInf), out);
    }
    return xv;
  }

  // Sums of nsteps vectors xp[s * stride] (excluded elements: see load_x) relative to vr
  // (finite in every lane). Returns false when some lane passes vr by more than the margin or
  // a sum is NaN (+inf/NaN data); then nothing is added.
  template <bool Excl = false>
  bool sweep(const acc_t* xp, const acc_t* wp, const acc_t* mp, int64_t stride, int64_t nsteps,
             const V& vr_in, bool check) {
    V d0(0), m10(0), m20(0), tmax(-kInf);
    const V vr = neg ? V(0) - vr_in : vr_in;  // ref in units of the stored data
    const V ks = neg ? V(0) - k2 : k2;
    for (int64_t s = 0; s < nsteps; ++s) {
      const V t = (load_x<Excl>(xp, wp, mp, s * stride) - vr) * ks;
      if (check) tmax = at::vec::maximum(tmax, t);  // NaN propagates into tmax
      V tc;
      V e = exp2_acc(t, tc);
      if constexpr (HasW) e = e * V::loadu(wp + s * stride);
      d0 = d0 + e;
      if constexpr (Moments) {
        const V te = tc * e;
        m10 = m10 + te;
        m20 = at::vec::fmadd(tc, te, m20);
      }
    }
    if (check) {
      const acc_t mt = lane_max_of(tmax);
      if (!(mt <= kMargin)) return false;
    }
    alignas(64) acc_t ld[W], l1[W], l2[W];
    d0.store(ld);
    m10.store(l1);
    m20.store(l2);
    for (int64_t l = 0; l < W; ++l)
      if (ld[l] != ld[l]) return false;
    for (int64_t l = 0; l < W; ++l) {
      D[l] += ld[l];
      if constexpr (Moments) {
        M1[l] += l1[l];
        M2[l] += l2[l];
      }
    }
    return true;
  }

  // Move lane l's totals to a larger ref (delta2 = (old - new) k log2 e <= 0).
  void rebase(int64_t l, acc_t new_ref) {
    if (ref[l] != -kInf) {
      const double k2l = static_cast<double>(lane(k2, l));
      const double delta = (static_cast<double>(ref[l]) - static_cast<double>(new_ref)) * k2l;
      const double r = std::exp2(delta);
      if constexpr (Moments) {
        M2[l] = r * (M2[l] + 2.0 * delta * M1[l] + delta * delta * D[l]);
        M1[l] = r * (M1[l] + delta * D[l]);
      }
      D[l] *= r;
    }
    ref[l] = new_ref;
  }

  static acc_t lane(const V& v, int64_t l) {
    alignas(64) acc_t a[W];
    v.store(a);
    return a[l];
  }

  // mp (the mask as acc_t 1/0) is read only with Excl (see load_x).
  template <bool Excl = false>
  void chunk(const acc_t* xp, const acc_t* wp, int64_t stride, int64_t nsteps,
             const acc_t* mp = nullptr) {
    if (special) return;
    bool fresh = false;
    for (int64_t l = 0; l < valid; ++l) fresh |= ref[l] == -kInf;
    if (!fresh && sweep<Excl>(xp, wp, mp, stride, nsteps, V::loadu(use), true)) return;
    // Two sweeps: the chunk's lane maxima, then the sums relative to the new refs.
    V cm(-kInf);
    if (neg) {
      const V zero(0);
      for (int64_t s = 0; s < nsteps; ++s)
        cm = at::vec::maximum(cm, zero - load_x<Excl>(xp, wp, mp, s * stride));
    } else {
      for (int64_t s = 0; s < nsteps; ++s)
        cm = at::vec::maximum(cm, load_x<Excl>(xp, wp, mp, s * stride));
    }
    alignas(64) acc_t cml[W];
    cm.store(cml);
    for (int64_t l = 0; l < W; ++l) {
      const acc_t nr = nan_max(ref[l], cml[l]);
      if (!(nr < kInf)) {  // +inf or NaN
        special = true;
        return;
      }
      if (nr > ref[l]) rebase(l, nr);
      use[l] = ref[l] == -kInf ? acc_t(0) : ref[l];  // all -inf so far: any finite shift
    }
    // Only non-finite weights can make this sweep fail now; the scalar path gives their NaN.
    if (!sweep<Excl>(xp, wp, mp, stride, nsteps, V::loadu(use), false)) special = true;
  }
};

// Per-ISA scratch for gathering a chunk (conversion, negation, mask, weights, tails).
template <typename acc_t>
struct ChunkBuf {
  static constexpr int64_t W = Vectorized<acc_t>::size();
  alignas(64) acc_t x[kPartSteps * W];
  alignas(64) acc_t w[kPartSteps * W];
  alignas(64) acc_t m[kPartSteps * W];  // the mask as 1 (kept) / 0
};

// Gather nsteps vectors of a row into b: lane l of step s is element n = s * W + l (x[n],
// w[n * wstride], mask[n * mstride]), valid when n < count; invalid or excluded elements
// become -inf (weight 0). For weights or a mask with non-unit strides along the row (unit
// strides take the direct path of partition_fwd_task).
template <typename scalar_t, typename acc_t, bool HasW>
inline void gather(const scalar_t* x, const scalar_t* w, const bool* mask, int64_t wstride,
                   int64_t mstride, int64_t nsteps, int64_t count, bool negate,
                   ChunkBuf<acc_t>& b) {
  constexpr int64_t W = ChunkBuf<acc_t>::W;
  constexpr acc_t kNegInf = -std::numeric_limits<acc_t>::infinity();
  const acc_t sign = negate ? acc_t(-1) : acc_t(1);
  for (int64_t n = 0; n < count; ++n) {
    const acc_t wv = HasW ? static_cast<acc_t>(w[n * wstride]) : acc_t(1);
    const bool inc = wv != acc_t(0) && (mask == nullptr || mask[n * mstride]);
    b.x[n] = inc ? sign * static_cast<acc_t>(x[n]) : kNegInf;
    if constexpr (HasW) b.w[n] = inc ? wv : acc_t(0);
  }
  for (int64_t n = count; n < nsteps * W; ++n) {
    b.x[n] = kNegInf;
    if constexpr (HasW) b.w[n] = 0;
  }
}

// [Note: column tiles]
// For I > 1 a task owns up to kTileLanes groups of W adjacent outputs. Reading one group's
// column alone would take 64 bytes from every row, I elements apart: a new DRAM page per load,
// which runs at a fraction of the bandwidth. Instead each chunk of kTileRows rows of the whole
// tile is first copied row by row (long contiguous reads) into a buffer, and the lane groups
// then sweep the buffer from cache.
constexpr int64_t kTileLanes = 8;
constexpr int64_t kTileRows = 128;

template <typename scalar_t, typename acc_t, bool HasW>
struct TileBuf {
  static constexpr int64_t W = Vectorized<acc_t>::size();
  static constexpr int64_t kWidth = kTileLanes * W;
  alignas(64) acc_t x[kTileRows * kWidth];
  alignas(64) acc_t w[HasW ? kTileRows * kWidth : 1];
};

// Statistics of one output row (I == 1) or of one tile of up to kTileLanes * W adjacent
// outputs (I > 1).
template <typename scalar_t, bool HasW, bool Moments>
void partition_fwd_task(const PartitionArgs& a, int64_t o, int64_t i0) {
  using acc_t = acc_type_t<scalar_t>;
  using V = Vectorized<acc_t>;
  using Stats = LaneStats<acc_t, HasW, Moments>;
  constexpr int64_t W = V::size();
  constexpr double kLog2eD = 1.4426950408889634;
  constexpr double kLn2D = 0.6931471805599453;
  constexpr acc_t kNegInf = -std::numeric_limits<acc_t>::infinity();
  const int64_t R = a.R, I = a.I;
  const int64_t base = o * R * I + i0;
  const auto* x = static_cast<const scalar_t*>(a.x) + base;
  // Weight and mask of output (o, i0) and their steps along r (sr) and i (si).
  const auto* w = HasW ? static_cast<const scalar_t*>(a.weight) + o * a.ws[0] + i0 * a.ws[2]
                       : nullptr;
  const bool* mask = a.mask != nullptr ? a.mask + o * a.ms[0] + i0 * a.ms[2] : nullptr;
  const int64_t wsr = a.ws[1], wsi = a.ws[2], msr = a.ms[1], msi = a.ms[2];
  const auto* scale = static_cast<const acc_t*>(a.scale);
  const bool rows = I == 1;
  const int64_t j0 = o * I + i0;
  const int64_t outs = rows ? 1 : std::min<int64_t>(kTileLanes * W, I - i0);
  const int64_t groups = rows ? 1 : (outs + W - 1) / W;
  auto k2_of = [&](int64_t j) {
    return static_cast<acc_t>(static_cast<double>(scale[a.scale_stride * j]) * kLog2eD);
  };

  auto* shift = static_cast<acc_t*>(a.shift);
  auto* sum = static_cast<acc_t*>(a.sum);
  auto* m1 = static_cast<acc_t*>(a.m1);
  auto* m2 = static_cast<acc_t*>(a.m2);
  auto store = [&](int64_t j, double ref, double d, double t1, double t2) {
    shift[j] = static_cast<acc_t>(ref);
    sum[j] = static_cast<acc_t>(d);
    if constexpr (Moments) {
      m1[j] = static_cast<acc_t>(t1 * kLn2D);
      m2[j] = static_cast<acc_t>(t2 * kLn2D * kLn2D);
    }
  };
  auto exact = [&](int64_t l) {  // output j0 + l by the scalar path
    double out[4];
    const int64_t j = j0 + l;
    partition_scalar<scalar_t>(x + l, HasW ? w + l * wsi : nullptr,
                               mask ? mask + l * msi : nullptr, R, I, wsr, msr, a.negate,
                               static_cast<double>(scale[a.scale_stride * j]), Moments, out);
    store(j, out[0], out[1], 0.0, 0.0);
    if constexpr (Moments) {
      m1[j] = static_cast<acc_t>(out[2]);
      m2[j] = static_cast<acc_t>(out[3]);
    }
  };
  // Without mask and weights (plain) the data is read as stored (widened to acc_t) and
  // LaneStats negates. A row with unit-stride weights or mask (direct) is read the same way,
  // LaneStats excluding elements as it loads them; other strides go through gather (which
  // also negates).
  const bool plain = mask == nullptr && !HasW;
  const bool direct = !plain && (!HasW || wsr == 1) && (mask == nullptr || msr == 1);

  if (rows) {
    Stats st(V(k2_of(j0)), W, (plain || direct) && a.negate);
    ChunkBuf<acc_t> buf;
    for (int64_t c0 = 0; c0 < R && !st.special;) {
      const int64_t n = std::min(kPartSteps * W, R - c0);
      if (plain) {
        const acc_t* p = load_chunk<scalar_t, acc_t>(x + c0, n, buf.x);
        const int64_t full = n / W;
        if (full > 0) st.chunk(p, nullptr, W, full);
        if (n > full * W) {  // the tail, padded with -inf (which negation must keep -inf)
          alignas(64) acc_t tail[W];
          const acc_t pad = a.negate ? -kNegInf : kNegInf;
          for (int64_t l = 0; l < W; ++l) tail[l] = full * W + l < n ? p[full * W + l] : pad;
          st.chunk(tail, nullptr, W, 1);
        }
      } else if (direct) {
        const int64_t full = n / W;
        const acc_t* p = load_chunk<scalar_t, acc_t>(x + c0, full * W, buf.x);
        const acc_t* wp = HasW ? load_chunk<scalar_t, acc_t>(w + c0, full * W, buf.w) : nullptr;
        const acc_t* mp = nullptr;
        if (mask != nullptr) {  // as acc_t 1 / 0: a byte conversion loop that vectorises
          const auto* bytes = reinterpret_cast<const uint8_t*>(mask + c0);
          for (int64_t e = 0; e < full * W; ++e) buf.m[e] = static_cast<acc_t>(bytes[e]);
          mp = buf.m;
        }
        if (full > 0) st.template chunk<true>(p, wp, W, full, mp);
        if (n > full * W) {  // the tail: excluded and padding lanes hold (stored) -inf, weight 0
          alignas(64) acc_t tx[W], tw[W];
          const acc_t pad = a.negate ? -kNegInf : kNegInf;
          for (int64_t l = 0; l < W; ++l) {
            const int64_t e = c0 + full * W + l;
            const bool in = full * W + l < n;
            const acc_t wv = HasW && in ? static_cast<acc_t>(w[e]) : acc_t(in ? 1 : 0);
            const bool inc = in && wv != acc_t(0) && (mask == nullptr || mask[e]);
            tx[l] = inc ? static_cast<acc_t>(x[e]) : pad;
            tw[l] = inc ? wv : acc_t(0);
          }
          st.chunk(tx, HasW ? tw : nullptr, W, 1);
        }
      } else {
        const int64_t steps = (n + W - 1) / W;
        gather<scalar_t, acc_t, HasW>(x + c0, HasW ? w + c0 * wsr : nullptr,
                                      mask ? mask + c0 * msr : nullptr, wsr, msr, steps, n,
                                      a.negate, buf);
        st.chunk(buf.x, buf.w, W, steps);
      }
      c0 += n;
    }
    if (st.special) return exact(0);
    acc_t top = kNegInf;  // merge the row's lanes at the largest ref
    for (int64_t l = 0; l < W; ++l) top = std::max(top, st.ref[l]);
    if (top == kNegInf) return exact(0);
    double d = 0, t1 = 0, t2 = 0;
    for (int64_t l = 0; l < W; ++l) {
      if (st.ref[l] == kNegInf) continue;
      st.rebase(l, top);
      d += st.D[l];
      t1 += st.M1[l];
      t2 += st.M2[l];
    }
    return store(j0, top, d, t1, t2);
  }

  // Column tile: see [Note: column tiles].
  constexpr int64_t kWidth = TileBuf<scalar_t, acc_t, HasW>::kWidth;
  auto tb = std::make_unique<TileBuf<scalar_t, acc_t, HasW>>();
  alignas(64) acc_t k2v[W];
  std::vector<Stats> st;
  st.reserve(groups);
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t lanes = std::min(W, outs - g * W);
    for (int64_t l = 0; l < W; ++l) k2v[l] = k2_of(j0 + g * W + std::min(l, lanes - 1));
    st.emplace_back(V::loadu(k2v), lanes, plain && a.negate);
  }
  const acc_t pad = (plain && a.negate) ? -kNegInf : kNegInf;
  // Weights and mask with unit stride along the outputs, or one value per row: vector copies.
  const bool tile_vec = !plain && (!HasW || wsi == 0 || wsi == 1) && (mask == nullptr || msi == 0 || msi == 1);
  alignas(64) acc_t kept[kWidth];  // a row's mask as acc_t 1 / 0 (tile_vec, msi == 1)
  for (int64_t c0 = 0; c0 < R;) {
    const int64_t n = std::min(kTileRows, R - c0);
    for (int64_t r = 0; r < n; ++r) {
      acc_t* dst = tb->x + r * kWidth;
      const int64_t at = (c0 + r) * I;
      if (plain) {
        const acc_t* p = load_chunk<scalar_t, acc_t>(x + at, outs, dst);
        if (p != dst) std::copy(p, p + outs, dst);
        for (int64_t l = outs; l < groups * W; ++l) dst[l] = pad;
      } else if (tile_vec) {
        // Whole vectors: x widened into dst, the weights (unit stride, or one per row) and
        // the mask (likewise) blended in; then the tail and the padding one by one.
        const int64_t rr = c0 + r;
        acc_t* wdst = HasW ? tb->w + r * kWidth : nullptr;
        const acc_t* wsrc = nullptr;
        acc_t wrow = 1;
        if constexpr (HasW) {
          if (wsi == 1) {
            wsrc = load_chunk<scalar_t, acc_t>(w + rr * wsr, outs, wdst);
          } else {
            wrow = static_cast<acc_t>(w[rr * wsr]);
          }
        }
        bool row_kept = true, per_elem_mask = false;
        if (mask != nullptr) {
          if (msi == 1) {
            const auto* bytes = reinterpret_cast<const uint8_t*>(mask + rr * msr);
            for (int64_t l = 0; l < outs; ++l) kept[l] = static_cast<acc_t>(bytes[l]);
            per_elem_mask = true;
          } else {
            row_kept = mask[rr * msr];
          }
        }
        const acc_t* p = load_chunk<scalar_t, acc_t>(x + at, outs, dst);
        const int64_t full = row_kept ? outs / W * W : 0;
        const V zero(0), neg_inf(kNegInf), vsign(a.negate ? acc_t(-1) : acc_t(1));
        for (int64_t l = 0; l < full; l += W) {
          const V wv = wsrc != nullptr ? V::loadu(wsrc + l) : V(wrow);
          V out = HasW ? V(wv == zero) : zero;
          if (per_elem_mask) out = out | (V::loadu(kept + l) == zero);
          V::blendv(V::loadu(p + l) * vsign, neg_inf, out).store(dst + l);
          if constexpr (HasW) V::blendv(wv, zero, out).store(wdst + l);
        }
        for (int64_t l = full; l < groups * W; ++l) {
          acc_t xv = kNegInf, wv = 0;
          if (row_kept && l < outs) {
            wv = wsrc != nullptr ? wsrc[l] : wrow;
            if (wv != acc_t(0) && (!per_elem_mask || kept[l] != acc_t(0))) {
              xv = a.negate ? -p[l] : p[l];
            } else {
              wv = 0;
            }
          }
          dst[l] = xv;
          if constexpr (HasW) wdst[l] = wv;
        }
      } else {
        for (int64_t l = 0; l < groups * W; ++l) {
          acc_t xv = kNegInf, wv = 0;
          if (l < outs) {
            bool inc = mask == nullptr || mask[(c0 + r) * msr + l * msi];
            if constexpr (HasW) {
              wv = static_cast<acc_t>(w[(c0 + r) * wsr + l * wsi]);
              inc = inc && wv != acc_t(0);
            }
            if (inc) xv = a.negate ? -static_cast<acc_t>(x[at + l]) : static_cast<acc_t>(x[at + l]);
          }
          dst[l] = xv;
          if constexpr (HasW) tb->w[r * kWidth + l] = wv;
        }
      }
    }
    for (int64_t g = 0; g < groups; ++g)
      st[g].chunk(tb->x + g * W, HasW ? tb->w + g * W : nullptr, kWidth, n);
    c0 += n;
  }
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t lanes = std::min(W, outs - g * W);
    for (int64_t l = 0; l < lanes; ++l) {
      if (st[g].special || st[g].ref[l] == kNegInf) {
        exact(g * W + l);  // +inf/NaN seen, or nothing included: the scalar path's values
      } else {
        store(j0 + g * W + l, st[g].ref[l], st[g].D[l], st[g].M1[l], st[g].M2[l]);
      }
    }
  }
}

template <typename scalar_t>
void partition_fwd_tasks(const PartitionArgs& a, int64_t begin, int64_t end) {
  constexpr int64_t W = Vectorized<acc_type_t<scalar_t>>::size();
  const int64_t tile = kTileLanes * W;
  const int64_t tiles = a.I == 1 ? 1 : (a.I + tile - 1) / tile;
  for (int64_t t = begin; t < end; ++t) {
    const int64_t o = t / tiles, i0 = (t % tiles) * tile;
    const bool hw = a.weight != nullptr, mom = a.moments == 2;
    if (hw && mom) {
      partition_fwd_task<scalar_t, true, true>(a, o, i0);
    } else if (hw) {
      partition_fwd_task<scalar_t, true, false>(a, o, i0);
    } else if (mom) {
      partition_fwd_task<scalar_t, false, true>(a, o, i0);
    } else {
      partition_fwd_task<scalar_t, false, false>(a, o, i0);
    }
  }
}

// Backward over `len` consecutive elements of x starting at element e0; per-output values
// (shift, log_norm, k, coefficients) are read at index j0 + i * jstride (jstride 0: the
// elements share one output, a row; 1: element i belongs to output j0 + i). Element i's weight
// is weight[w0 + i * wstep], its mask value mask[m0 + i * mstep].
template <typename scalar_t>
void partition_bwd_line(const PartitionArgs& a, int64_t e0, int64_t len, int64_t j0,
                        int64_t jstride, int64_t w0, int64_t wstep, int64_t m0, int64_t mstep) {
  using acc_t = acc_type_t<scalar_t>;
  using V = Vectorized<acc_t>;
  constexpr int64_t W = V::size();
  constexpr acc_t kLog2e = static_cast<acc_t>(1.4426950408889634);
  const auto* x = static_cast<const scalar_t*>(a.x) + e0;
  const auto* w = a.weight != nullptr ? static_cast<const scalar_t*>(a.weight) + w0 : nullptr;
  const bool* mask = a.mask != nullptr ? a.mask + m0 : nullptr;
  auto* gx = static_cast<scalar_t*>(a.grad_x) + e0;
  auto* gw = a.grad_w != nullptr ? static_cast<scalar_t*>(a.grad_w) + e0 : nullptr;
  const auto* shift = static_cast<const acc_t*>(a.shift) + j0;
  const auto* log_norm = static_cast<const acc_t*>(a.log_norm) + j0;
  const auto* scale = static_cast<const acc_t*>(a.scale) + a.scale_stride * j0;
  const auto* coef = static_cast<const acc_t*>(a.coef) + j0;  // (n_coef, outputs): transposed
  const int64_t cs = a.coef_stride;
  const int64_t sstride = a.scale_stride * jstride;
  const acc_t sign = a.negate ? acc_t(-1) : acc_t(1);
  const V zero(0);

  // g = p (c0 + c1 u + c2 u^2), 0 where p == 0; u = k (x' - shift), p = 2^{(u - ln) log2 e}.
  auto grad_of = [&](const V& xv, const V& sh, const V& ln, const V& k, const V& c0, const V& c1,
                     const V& c2) {
    const V u = (xv - sh) * k;
    V tc;
    const V p = exp2_acc((u - ln) * V(kLog2e), tc);
    const V poly = at::vec::fmadd(at::vec::fmadd(c2, u, c1), u, c0);
    return V::blendv(p * poly, zero, p == zero);
  };

  if ((w == nullptr || wstep == 1) && (mask == nullptr || mstep == 1)) {
    // Vectorised: x (and the weights) widened per block, the mask as acc_t 1/0, per-output
    // values broadcast (rows) or loaded (tiles).
    constexpr int64_t kBlk = 2048;
    constexpr bool kSame = std::is_same_v<scalar_t, acc_t>;
    alignas(64) acc_t xbuf[kSame ? 1 : kBlk];
    alignas(64) acc_t obuf[kSame ? 1 : kBlk];
    alignas(64) acc_t wbuf[kSame ? 1 : kBlk];
    alignas(64) acc_t gwbuf[kSame ? 1 : kBlk];
    alignas(64) acc_t mbuf[kBlk];
    const auto* mask_bytes = reinterpret_cast<const uint8_t*>(mask);
    const V b_sh(shift[0]), b_ln(log_norm[0]), b_k(scale[0]);
    const V b_c0(coef[0]), b_c1(a.n_coef > 1 ? coef[cs] : acc_t(0)),
        b_c2(a.n_coef > 2 ? coef[2 * cs] : acc_t(0));
    const V all = zero == zero;
    for (int64_t b0 = 0; b0 < len; b0 += kBlk) {
      const int64_t nb = std::min(kBlk, len - b0);
      const acc_t* xs = load_chunk<scalar_t, acc_t>(x + b0, nb, xbuf);
      const acc_t* ws = w != nullptr ? load_chunk<scalar_t, acc_t>(w + b0, nb, wbuf) : nullptr;
      if (mask != nullptr) {
        for (int64_t i = 0; i < nb; ++i) mbuf[i] = static_cast<acc_t>(mask_bytes[b0 + i]);
      }
      acc_t* out;
      acc_t* gwout = nullptr;
      if constexpr (kSame) {
        out = gx + b0;
        if (gw != nullptr) gwout = gw + b0;
      } else {
        out = obuf;
        gwout = gwbuf;
      }
      for (int64_t i = 0; i < nb; i += W) {
        const int64_t n = std::min(W, nb - i);
        V xv = V::loadu(xs + i, n);
        if (a.negate) xv = zero - xv;
        V g, k;
        if (jstride == 0) {
          k = b_k;
          g = grad_of(xv, b_sh, b_ln, b_k, b_c0, b_c1, b_c2);
        } else {
          const int64_t j = b0 + i;
          k = sstride == 0 ? b_k : V::loadu(scale + j, n);
          const V c1 = a.n_coef > 1 ? V::loadu(coef + cs + j, n) : zero;
          const V c2 = a.n_coef > 2 ? V::loadu(coef + 2 * cs + j, n) : zero;
          g = grad_of(xv, V::loadu(shift + j, n), V::loadu(log_norm + j, n), k,
                      V::loadu(coef + j, n), c1, c2);
        }
        V gxv = g * k * V(sign);
        if (w != nullptr || mask != nullptr) {
          // Excluded elements (masked, or weight 0) get no input gradient; the weight
          // gradient is g wherever the mask keeps the element.
          const V keep = mask != nullptr ? V::loadu(mbuf + i, n) != zero : all;
          const V wv = w != nullptr ? V::loadu(ws + i, n) : V(1);
          gxv = V::blendv(zero, gxv * wv, keep & (wv != zero));
          if (gw != nullptr) V::blendv(zero, g, keep).store(gwout + i, n);
        }
        gxv.store(out + i, n);
      }
      if constexpr (!kSame) {
        store_chunk<scalar_t>(obuf, nb, gx + b0);
        if (gw != nullptr) store_chunk<scalar_t>(gwbuf, nb, gw + b0);
      }
    }
    return;
  }

  // Weights or a mask with other strides: gathered lane by lane.
  alignas(64) acc_t xb[W], wb[W], inc[W], keep[W], gxb[W], gwb[W];
  alignas(64) acc_t sh[W], ln[W], kk[W], c0[W], c1[W], c2[W];
  for (int64_t i = 0; i < len; i += W) {
    const int64_t n = std::min(W, len - i);
    for (int64_t l = 0; l < W; ++l) {
      const int64_t e = i + std::min(l, n - 1);
      const int64_t j = e * jstride;
      const acc_t xv = static_cast<acc_t>(x[e]);
      const bool kept = mask == nullptr || mask[e * mstep];
      const acc_t wv = w != nullptr ? static_cast<acc_t>(w[e * wstep]) : acc_t(1);
      xb[l] = a.negate ? -xv : xv;
      wb[l] = wv;
      keep[l] = kept ? acc_t(1) : acc_t(0);
      inc[l] = (kept && wv != acc_t(0)) ? acc_t(1) : acc_t(0);
      sh[l] = shift[j];
      ln[l] = log_norm[j];
      kk[l] = scale[e * sstride];
      c0[l] = coef[j];
      c1[l] = a.n_coef > 1 ? coef[cs + j] : acc_t(0);
      c2[l] = a.n_coef > 2 ? coef[2 * cs + j] : acc_t(0);
    }
    const V k = V::loadu(kk);
    const V g = grad_of(V::loadu(xb), V::loadu(sh), V::loadu(ln), k, V::loadu(c0), V::loadu(c1),
                        V::loadu(c2));
    V::blendv(zero, g * V::loadu(wb) * k * V(sign), V::loadu(inc) != zero).store(gxb);
    if (gw != nullptr) V::blendv(zero, g, V::loadu(keep) != zero).store(gwb);
    for (int64_t l = 0; l < n; ++l) {
      gx[i + l] = static_cast<scalar_t>(gxb[l]);
      if (gw != nullptr) gw[i + l] = static_cast<scalar_t>(gwb[l]);
    }
  }
}

template <typename scalar_t>
void partition_bwd_tasks(const PartitionArgs& a, int64_t begin, int64_t end) {
  // I == 1: task o is row o (R elements, one output); I > 1: task (o, r) is I elements, one
  // output each.
  for (int64_t t = begin; t < end; ++t) {
    if (a.I == 1) {
      partition_bwd_line<scalar_t>(a, t * a.R, a.R, t, 0, t * a.ws[0], a.ws[1], t * a.ms[0],
                                   a.ms[1]);
    } else {
      const int64_t o = t / a.R, r = t % a.R;
      partition_bwd_line<scalar_t>(a, t * a.I, a.I, o * a.I, 1, o * a.ws[0] + r * a.ws[1],
                                   a.ws[2], o * a.ms[0] + r * a.ms[1], a.ms[2]);
    }
  }
}

}  // namespace CPU_CAPABILITY

TK_DEFINE_ISA_ENTRY(partition_fwd, PartitionArgs, partition_fwd_tasks)
TK_DEFINE_ISA_ENTRY(partition_bwd, PartitionArgs, partition_bwd_tasks)

int64_t TK_CAT(partition_fwd_tasks, CPU_CAPABILITY)(const PartitionArgs& a) {
  const int64_t W = a.dtype == c10::ScalarType::Double
                        ? at::vec::Vectorized<double>::size()
                        : at::vec::Vectorized<float>::size();
  const int64_t tile = CPU_CAPABILITY::kTileLanes * W;
  return a.O * (a.I == 1 ? 1 : (a.I + tile - 1) / tile);
}


}  // namespace thermokern::cpu

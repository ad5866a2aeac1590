// partition statistics: CUDA implementation (TORCH_LIBRARY_IMPL(thermokern, CUDA)) of
// partition_fwd / partition_bwd; the semantics are in [Note: partition statistics]
// (csrc/thermokern.cpp): kernels and their launches for the entry points of
// thermokern/partition_plan.h (shared with the CPU).
//
// x is a contiguous (O, R, I) tensor reduced over R; output j = o * I + i. weight and mask may
// have any strides (Strides3; stride 0 in broadcast dims): the 16-byte-pack paths below read
// them at x's flat offsets, so they run only when both are contiguous (or absent); otherwise
// weight and mask are read one element at a time through their strides. Every thread keeps
// online statistics (PartState: the running maximum m of the included x', and relative to it
// d = sum w e^u, m1 = sum w u e^u, m2 = sum w u^2 e^u, plus pw = the sum of w over x' = +inf);
// states merge with the rescaling of [Note: partition statistics]. Excluded elements become
// x' = -inf, and a term whose e^u is 0 (x' = -inf, or underflow) adds exactly 0 to every sum.
//   I == 1 (rows): a group of G lanes per row (G a power of two, about R / VEC; G <= 32:
//     256 / G rows per block, shuffle merge; G > 32: one block per row, shuffles then shared
//     memory). 16-byte vector loads when weight and mask are contiguous and x, weight and mask
//     share the same alignment phase: each row has a scalar head up to the first aligned
//     element and a scalar tail; otherwise (VEC = 1) one strided element at a time.
//   I > 1 (middle dimension, no copy): a block per (o, tile of CX columns), CX = pow2 >= I
//     capped at 32, threads [rows] x [CX columns], so that a warp reads 32 consecutive
//     elements; the column states merge through shuffles (lanes of one column), then across
//     warps in shared memory.
//   With few work units and a long R, both split R into chunks: each block writes a partial
//   state to a workspace and a small kernel merges the chunks in order (deterministic).
// Backward: elementwise grid-stride over O * R * I (16-byte packs when weight and mask are
// contiguous and all pointers share an alignment phase), carrying (i, r, o) incrementally, so
// there is no division per element; the per-output row (scale, shift, log_norm, coef) is
// reloaded only when j changes.
// Offsets are int64 throughout; nothing syncs with the host.
#include <algorithm>
#include <cstdint>

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "common.cuh"
#include "thermokern/partition_plan.h"
#include "thermokern/row_stats.h"

namespace thermokern::cuda {

namespace {

constexpr int kTileThreads = 256;       // I > 1 blocks, backward blocks, blocks of row groups
constexpr int64_t kSplitTarget = 1024;  // split R when there are fewer work units than this

// Element strides of weight or mask over (O, R, I); all 0 when the tensor is absent.
struct Strides3 {
  int64_t s0, s1, s2;
  __device__ __forceinline__ int64_t at(int64_t o, int64_t r, int64_t i) const {
    return o * s0 + r * s1 + i * s2;
  }
};

template <typename T>
struct PartState {
  T m;   // maximum of the included x' so far (NaN sticks); the sums are relative to it
  T d;   // sum w e^u, u = k (x' - m)       } meaningful only while m is finite;
  T m1;  // sum w u e^u       (moments)     } all 0 while m = -inf
  T m2;  // sum w u^2 e^u     (moments)     }
  T pw;  // sum of w over the included x' = +inf
};

template <typename T>
__device__ __forceinline__ bool finite_val(T v) {
  return v > T(-INFINITY) && v < T(INFINITY);  // false for NaN
}

template <typename T>
__device__ __forceinline__ PartState<T> part_empty() {
  return PartState<T>{T(-INFINITY), T(0), T(0), T(0), T(0)};
}

// Rescale the sums by r = e^delta, delta = k (m_old - m_new) <= 0. r == 0 (delta = -inf from
// m_old = -inf or overflow, or underflow) clears them, so that no 0 * inf can appear.
template <bool MOM, typename T>
__device__ __forceinline__ void part_rescale(PartState<T>& s, T delta) {
  const T r = tk_exp(delta);
  if (!(r > T(0))) {
    s.d = T(0);
    s.m1 = T(0);
    s.m2 = T(0);
    return;
  }
  if constexpr (MOM) {
    s.m2 = r * (s.m2 + delta * (T(2) * s.m1 + delta * s.d));
    s.m1 = r * (s.m1 + delta * s.d);
  }
  s.d = r * s.d;
}

// Fold V elements (x' already -inf where excluded) with weights wv into s.
template <bool MOM, int V, typename T>
__device__ __forceinline__ void part_update(PartState<T>& s, const T (&xv)[V], const T (&wv)[V],
                                            T k) {
  T cm = T(-INFINITY);
#pragma unroll
  for (int q = 0; q < V; ++q) {
    cm = nan_max(cm, xv[q]);
    s.pw += xv[q] == T(INFINITY) ? wv[q] : T(0);
  }
  if (!(cm <= s.m)) {  // the maximum grows, or there is a NaN
    const T nm = nan_max(s.m, cm);
    if (finite_val(s.m) && finite_val(nm)) part_rescale<MOM>(s, (s.m - nm) * k);
    s.m = nm;  // from -inf the sums are 0 already; at +inf / NaN they are not used
  }
  if (!finite_val(s.m)) return;
#pragma unroll
  for (int q = 0; q < V; ++q) {
    const T u = (xv[q] - s.m) * k;  // <= 0; exact for x' near m
    const T e = tk_exp(u);
    const bool live = e != T(0);  // x' = -inf or underflow: adds exactly 0
    const T we = live ? wv[q] * e : T(0);
    s.d += we;
    if constexpr (MOM) {
      const T uu = live ? u : T(0);
      s.m1 += we * uu;
      s.m2 += we * uu * uu;
    }
  }
}

// Merge two states of the same output (commutative, so both lanes of a shuffle agree).
template <bool MOM, typename T>
__device__ __forceinline__ PartState<T> part_merge(PartState<T> a, PartState<T> b, T k) {
  const T m = nan_max(a.m, b.m);
  a.pw += b.pw;
  if (!finite_val(m)) {  // NaN or +inf: only pw is used; -inf: both are empty
    a.m = m;
    a.d = T(0);
    a.m1 = T(0);
    a.m2 = T(0);
    return a;
  }
  if (a.m < m) part_rescale<MOM>(a, (a.m - m) * k);  // a.m = -inf: cleared (already 0)
  if (b.m < m) part_rescale<MOM>(b, (b.m - m) * k);
  a.m = m;
  a.d += b.d;
  if constexpr (MOM) {
    a.m1 += b.m1;
    a.m2 += b.m2;
  }
  return a;
}

template <bool MOM, typename T>
__device__ __forceinline__ PartState<T> part_shfl_xor(const PartState<T>& s, int mask) {
  PartState<T> r;
  r.m = __shfl_xor_sync(0xffffffffu, s.m, mask);
  r.d = __shfl_xor_sync(0xffffffffu, s.d, mask);
  r.pw = __shfl_xor_sync(0xffffffffu, s.pw, mask);
  if constexpr (MOM) {
    r.m1 = __shfl_xor_sync(0xffffffffu, s.m1, mask);
    r.m2 = __shfl_xor_sync(0xffffffffu, s.m2, mask);
  } else {
    r.m1 = T(0);
    r.m2 = T(0);
  }
  return r;
}

// Shared-memory slots for block merges (one state per slot).
template <bool MOM, typename T, int N>
struct PartSmem {
  T m[N], d[N], pw[N];
  T m1[MOM ? N : 1], m2[MOM ? N : 1];

  __device__ __forceinline__ void put(int i, const PartState<T>& s) {
    m[i] = s.m;
    d[i] = s.d;
    pw[i] = s.pw;
    if constexpr (MOM) {
      m1[i] = s.m1;
      m2[i] = s.m2;
    }
  }
  __device__ __forceinline__ PartState<T> get(int i) const {
    if constexpr (MOM) {
      return PartState<T>{m[i], d[i], m1[i], m2[i], pw[i]};
    } else {
      return PartState<T>{m[i], d[i], T(0), T(0), pw[i]};
    }
  }
};

// Outputs: the final statistics (splits == 1), or per-chunk partial states in ws (field f,
// chunk s, output j at (f * splits + s) * n_out + j; fields m, d, pw[, m1, m2]).
template <typename T>
struct PartOut {
  T* shift;
  T* sum;
  T* m1;  // moments only
  T* m2;
  T* ws;  // splits > 1 only
  int64_t n_out;
  int64_t splits;
};

template <bool MOM, typename T>
__device__ __forceinline__ void part_write_final(const PartState<T>& s, int64_t j,
                                                 const PartOut<T>& out) {
  T sum, m1, m2;
  if (s.m != s.m) {  // NaN
    sum = m1 = m2 = s.m;
  } else if (s.m == T(INFINITY)) {
    sum = s.pw;
    m1 = m2 = T(NAN);
  } else {  // finite, or -inf (nothing included: all 0)
    sum = s.d;
    m1 = s.m1;
    m2 = s.m2;
  }
  out.shift[j] = s.m;
  out.sum[j] = sum;
  if constexpr (MOM) {
    out.m1[j] = m1;
    out.m2[j] = m2;
  }
}

template <bool MOM, typename T>
__device__ __forceinline__ void part_store(const PartState<T>& s, int64_t j, int64_t split,
                                           const PartOut<T>& out) {
  if (out.splits == 1) {
    part_write_final<MOM>(s, j, out);
    return;
  }
  const int64_t f = out.splits * out.n_out;
  T* p = out.ws + split * out.n_out + j;
  p[0] = s.m;
  p[f] = s.d;
  p[2 * f] = s.pw;
  if constexpr (MOM) {
    p[3 * f] = s.m1;
    p[4 * f] = s.m2;
  }
}

template <bool MOM, typename T>
__device__ __forceinline__ PartState<T> part_load(const PartOut<T>& out, int64_t j,
                                                  int64_t split) {
  const int64_t f = out.splits * out.n_out;
  const T* p = out.ws + split * out.n_out + j;
  if constexpr (MOM) {
    return PartState<T>{p[0], p[f], p[3 * f], p[4 * f], p[2 * f]};
  } else {
    return PartState<T>{p[0], p[f], T(0), T(0), p[2 * f]};
  }
}

// One element: x[e], w[ew], mk[em].
template <bool MOM, typename scalar_t, typename acc_t>
__device__ __forceinline__ void part_element(PartState<acc_t>& st, const scalar_t* x,
                                             const scalar_t* w, const uint8_t* mk, int64_t e,
                                             int64_t ew, int64_t em, acc_t k, bool negate) {
  const acc_t a = static_cast<acc_t>(x[e]);
  acc_t xv[1] = {negate ? -a : a};
  const acc_t wv[1] = {w != nullptr ? static_cast<acc_t>(w[ew]) : acc_t(1)};
  if ((mk != nullptr && mk[em] == 0) || wv[0] == acc_t(0)) xv[0] = -INFINITY;
  part_update<MOM>(st, xv, wv, k);
}

// Pack v of the weight (1 where there is none) and of the mask (keep: true where there is none).
template <int VEC, typename scalar_t, typename acc_t>
__device__ __forceinline__ void load_weight_mask(const Pack<scalar_t, VEC>* wp, const Pack<uint8_t, VEC>* mp,
                                                 int64_t v, acc_t (&wv)[VEC], bool (&keep)[VEC]) {
  Pack<scalar_t, VEC> pw;
  Pack<uint8_t, VEC> pm;
  if (wp != nullptr) pw = wp[v];
  if (mp != nullptr) pm = mp[v];
#pragma unroll
  for (int q = 0; q < VEC; ++q) {
    wv[q] = wp != nullptr ? static_cast<acc_t>(pw.v[q]) : acc_t(1);
    keep[q] = mp == nullptr || pm.v[q] != 0;
  }
}

// Elements e0 .. e0 + len - 1 of one row, lane `lane` of G, with weight and mask contiguous
// (read at x's offsets): a scalar head up to the first VEC-aligned element (phase: x's element
// offset from 16-byte alignment, shared by weight and mask), VEC-packs, then a scalar tail.
template <bool MOM, int VEC, typename scalar_t, typename acc_t>
__device__ __forceinline__ void rows_accumulate(PartState<acc_t>& st, const scalar_t* x,
                                                const scalar_t* w, const uint8_t* mk, int64_t e0,
                                                int64_t len, int phase, int lane, int G, acc_t k,
                                                bool negate) {
  static_assert(VEC > 1, "VEC == 1 reads weight and mask through their strides");
  int64_t head = (VEC - static_cast<int>((phase + e0) & (VEC - 1))) & (VEC - 1);
  if (head > len) head = len;
  for (int64_t t = lane; t < head; t += G) {
    part_element<MOM>(st, x, w, mk, e0 + t, e0 + t, e0 + t, k, negate);
  }
  const int64_t n_vec = (len - head) / VEC;
  const int64_t ev = e0 + head;
  const auto* xp = reinterpret_cast<const Pack<scalar_t, VEC>*>(x + ev);
  const auto* wp = w != nullptr ? reinterpret_cast<const Pack<scalar_t, VEC>*>(w + ev) : nullptr;
  const auto* mp = mk != nullptr ? reinterpret_cast<const Pack<uint8_t, VEC>*>(mk + ev) : nullptr;
  for (int64_t v = lane; v < n_vec; v += G) {
    const Pack<scalar_t, VEC> px = xp[v];
    acc_t xv[VEC], wv[VEC];
    bool keep[VEC];
    load_weight_mask(wp, mp, v, wv, keep);
#pragma unroll
    for (int q = 0; q < VEC; ++q) {
      const acc_t a = static_cast<acc_t>(px.v[q]);
      xv[q] = (!keep[q] || wv[q] == acc_t(0)) ? acc_t(-INFINITY) : (negate ? -a : a);
    }
    part_update<MOM>(st, xv, wv, k);
  }
  for (int64_t t = head + n_vec * VEC + lane; t < len; t += G) {
    part_element<MOM>(st, x, w, mk, e0 + t, e0 + t, e0 + t, k, negate);
  }
}

// I == 1: rows of length R at x + row * R. G lanes per row (power of two): G <= 32 with
// blockDim = kTileThreads (several rows per block), or G = blockDim > 32 (a row per block).
// Work unit = row * splits + chunk; chunk c covers [c * chunk, min(R, (c + 1) * chunk)).
// VEC > 1: weight and mask contiguous (w_st, m_st unused); VEC == 1: read through w_st, m_st.
template <typename scalar_t, typename acc_t, int VEC, bool MOM>
__global__ void __launch_bounds__(kMaxThreads) partition_fwd_rows_kernel(
    const scalar_t* __restrict__ x, const scalar_t* __restrict__ w,
    const uint8_t* __restrict__ mk, Strides3 w_st, Strides3 m_st, int64_t N, int64_t R,
    int64_t chunk, int phase, int G, const acc_t* __restrict__ scale, int64_t scale_stride,
    bool negate, PartOut<acc_t> out) {
  __shared__ PartSmem<MOM, acc_t, kMaxThreads / kWarp> smem;
  const int rows_per_block = blockDim.x / G;
  const int grp = threadIdx.x / G, lane = threadIdx.x % G;
  const int64_t S = out.splits;
  const int64_t units = N * S;
  // `base` is the same for the whole block, so every lane runs every shuffle and barrier.
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * rows_per_block; base < units;
       base += static_cast<int64_t>(gridDim.x) * rows_per_block) {
    const int64_t unit = base + grp;
    const bool valid = unit < units;
    const int64_t row = S == 1 ? unit : unit / S;
    const int64_t split = unit - row * S;
    const acc_t k = valid ? scale[row * scale_stride] : acc_t(1);
    PartState<acc_t> st = part_empty<acc_t>();
    if (valid) {
      const int64_t rb = split * chunk;
      const int64_t len = R - rb < chunk ? R - rb : chunk;
      if constexpr (VEC > 1) {
        if (len > 0) {
          rows_accumulate<MOM, VEC>(st, x, w, mk, row * R + rb, len, phase, lane, G, k, negate);
        }
      } else {
        for (int64_t r = rb + lane; r < rb + len; r += G) {
          part_element<MOM>(st, x, w, mk, row * R + r, w_st.at(row, r, 0), m_st.at(row, r, 0),
                            k, negate);
        }
      }
    }
    const int width = G < kWarp ? G : kWarp;
    for (int mask = width / 2; mask > 0; mask >>= 1) {
      st = part_merge<MOM>(st, part_shfl_xor<MOM>(st, mask), k);
    }
    if (G > kWarp) {  // the whole block is one row: merge the warps
      const int warp = threadIdx.x / kWarp, wl = threadIdx.x % kWarp;
      const int n_warps = blockDim.x / kWarp;
      if (wl == 0) smem.put(warp, st);
      __syncthreads();
      if (warp == 0) {
        st = wl < n_warps ? smem.get(wl) : part_empty<acc_t>();
        for (int mask = kWarp / 2; mask > 0; mask >>= 1) {
          st = part_merge<MOM>(st, part_shfl_xor<MOM>(st, mask), k);
        }
      }
      __syncthreads();  // smem is reused by the next row
    }
    if (lane == 0 && valid) part_store<MOM>(st, row, split, out);
  }
}

// I > 1: block = CX columns x (blockDim / CX) rows of one o (CX a power of two <= 32);
// thread (ry, cx) reads x[o, r, i] for r = ry, ry + RY, ... in its chunk, i = tile * CX + cx.
template <typename scalar_t, typename acc_t, bool MOM>
__global__ void __launch_bounds__(kTileThreads) partition_fwd_mid_kernel(
    const scalar_t* __restrict__ x, const scalar_t* __restrict__ w,
    const uint8_t* __restrict__ mk, Strides3 w_st, Strides3 m_st, int64_t O, int64_t R,
    int64_t I, int64_t chunk, int CX, const acc_t* __restrict__ scale, int64_t scale_stride,
    bool negate, PartOut<acc_t> out) {
  __shared__ PartSmem<MOM, acc_t, kTileThreads> smem;
  const int cx = threadIdx.x % CX, ry = threadIdx.x / CX;
  const int RY = blockDim.x / CX;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int n_warps = blockDim.x / kWarp;
  const int64_t S = out.splits;
  const int64_t n_ct = (I + CX - 1) / CX;
  const int64_t units = O * n_ct * S;
  for (int64_t unit = blockIdx.x; unit < units; unit += gridDim.x) {  // uniform per block
    const int64_t tile = S == 1 ? unit : unit / S;
    const int64_t split = unit - tile * S;
    const int64_t o = tile / n_ct;
    const int64_t i = (tile - o * n_ct) * CX + cx;
    const bool valid = i < I;
    const int64_t j = o * I + i;
    const acc_t k = valid ? scale[j * scale_stride] : acc_t(1);
    PartState<acc_t> st = part_empty<acc_t>();
    if (valid) {
      const int64_t rb = split * chunk;
      const int64_t re = R - rb < chunk ? R : rb + chunk;
      const int64_t step = static_cast<int64_t>(RY) * I;
      const int64_t w_step = RY * w_st.s1, m_step = RY * m_st.s1;
      int64_t e = (o * R + rb + ry) * I + i;
      int64_t ew = w_st.at(o, rb + ry, i), em = m_st.at(o, rb + ry, i);
      for (int64_t r = rb + ry; r < re; r += RY, e += step, ew += w_step, em += m_step) {
        part_element<MOM>(st, x, w, mk, e, ew, em, k, negate);
      }
    }
    // Lanes of one column in a warp differ in the bits >= CX of the lane index.
    for (int mask = kWarp / 2; mask >= CX; mask >>= 1) {
      st = part_merge<MOM>(st, part_shfl_xor<MOM>(st, mask), k);
    }
    if (n_warps > 1) {
      if (lane < CX) smem.put(warp * CX + lane, st);
      __syncthreads();
      if (threadIdx.x < CX) {  // warp 0, lane cx: its own state is slot cx already
        for (int wi = 1; wi < n_warps; ++wi) {
          st = part_merge<MOM>(st, smem.get(wi * CX + cx), k);
        }
      }
      __syncthreads();  // smem is reused by the next tile
    }
    if (threadIdx.x < CX && valid) part_store<MOM>(st, j, split, out);
  }
}

// Merge the per-chunk partial states in chunk order and write the statistics.
template <typename acc_t, bool MOM>
__global__ void partition_fwd_finalize_kernel(const acc_t* __restrict__ scale,
                                              int64_t scale_stride, PartOut<acc_t> out) {
  for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < out.n_out;
       j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const acc_t k = scale[j * scale_stride];
    PartState<acc_t> st = part_load<MOM>(out, j, 0);
    for (int64_t s = 1; s < out.splits; ++s) st = part_merge<MOM>(st, part_load<MOM>(out, j, s), k);
    part_write_final<MOM>(st, j, out);
  }
}

// ---------------------------------------------------------------------------------------
// Backward.

template <typename acc_t>
struct BwdArgs {
  const acc_t* scale;
  int64_t scale_stride;
  const acc_t* shift;
  const acc_t* log_norm;
  const acc_t* coef;  // (n_out, n_coef)
  int n_coef;
  bool negate;
};

template <typename acc_t>
struct BwdRow {
  acc_t k, shift, log_norm, c0, c1, c2;
};

template <typename acc_t>
__device__ __forceinline__ BwdRow<acc_t> bwd_row(const BwdArgs<acc_t>& a, int64_t j) {
  BwdRow<acc_t> p;
  p.k = a.scale[j * a.scale_stride];
  p.shift = a.shift[j];
  p.log_norm = a.log_norm[j];
  const acc_t* c = a.coef + j * a.n_coef;
  p.c0 = c[0];
  p.c1 = a.n_coef > 1 ? c[1] : acc_t(0);
  p.c2 = a.n_coef > 2 ? c[2] : acc_t(0);
  return p;
}

// grad_x and g (the grad_weight value) of one element.
template <typename acc_t>
__device__ __forceinline__ void bwd_element(const BwdRow<acc_t>& p, const BwdArgs<acc_t>& a,
                                            acc_t xval, acc_t wval, bool keep, acc_t& gx,
                                            acc_t& gw) {
  const acc_t u = ((a.negate ? -xval : xval) - p.shift) * p.k;
  const acc_t pr = tk_exp(u - p.log_norm);
  acc_t poly = p.c0;  // missing coefficients are never multiplied (no 0 * inf)
  if (a.n_coef > 1) poly += p.c1 * u;
  if (a.n_coef > 2) poly += p.c2 * u * u;
  const acc_t g = pr == acc_t(0) ? acc_t(0) : pr * poly;
  const bool included = keep && wval != acc_t(0);
  gx = included ? (a.negate ? -p.k : p.k) * wval * g : acc_t(0);
  gw = keep ? g : acc_t(0);
}

// One element at flat offset e, with weight and mask contiguous (read at e too).
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void bwd_scalar(const scalar_t* x, const scalar_t* w,
                                           const uint8_t* mk, int64_t e, int64_t R, int64_t I,
                                           const BwdArgs<acc_t>& a, scalar_t* grad_x,
                                           scalar_t* grad_w) {
  const int64_t j = (e / (R * I)) * I + e % I;
  const BwdRow<acc_t> p = bwd_row(a, j);
  const acc_t wval = w != nullptr ? static_cast<acc_t>(w[e]) : acc_t(1);
  const bool keep = mk == nullptr || mk[e] != 0;
  acc_t gx, gw;
  bwd_element(p, a, static_cast<acc_t>(x[e]), wval, keep, gx, gw);
  grad_x[e] = static_cast<scalar_t>(gx);
  if (grad_w != nullptr) grad_w[e] = static_cast<scalar_t>(gw);
}

// VEC > 1: elements [0, head) and [head + n_vec * VEC, total) one at a time (fewer than VEC
// each), the packs in between grid-stride; weight and mask are contiguous and every pointer
// shares the alignment phase of x (w_st, m_st unused). VEC == 1 (head = 0): every element,
// weight and mask read through w_st, m_st.
template <typename scalar_t, typename acc_t, int VEC>
__global__ void __launch_bounds__(kTileThreads) partition_bwd_kernel(
    const scalar_t* __restrict__ x, const scalar_t* __restrict__ w,
    const uint8_t* __restrict__ mk, Strides3 w_st, Strides3 m_st, int64_t total, int64_t R,
    int64_t I, int64_t head, BwdArgs<acc_t> a, scalar_t* __restrict__ grad_x,
    scalar_t* __restrict__ grad_w) {
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t n_threads = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t n_vec = (total - head) / VEC;
  if constexpr (VEC > 1) {
    const int64_t tail = head + n_vec * VEC;
    if (tid < head) bwd_scalar(x, w, mk, tid, R, I, a, grad_x, grad_w);
    if (tid < total - tail) bwd_scalar(x, w, mk, tail + tid, R, I, a, grad_x, grad_w);
  }
  if (tid >= n_vec) return;
  // e = (o * R + r) * I + i for the first element of this thread's pack, and the grid step.
  const int64_t e = head + tid * VEC;
  int64_t i = e % I, r = (e / I) % R, o = (e / I) / R;
  const int64_t step = n_threads * VEC;
  const int64_t si = step % I, sr = (step / I) % R, so = (step / I) / R;

  const auto* xp = reinterpret_cast<const Pack<scalar_t, VEC>*>(x + head);
  const auto* wp = w != nullptr ? reinterpret_cast<const Pack<scalar_t, VEC>*>(w + head) : nullptr;
  const auto* mp = mk != nullptr ? reinterpret_cast<const Pack<uint8_t, VEC>*>(mk + head) : nullptr;
  auto* gxp = reinterpret_cast<Pack<scalar_t, VEC>*>(grad_x + head);
  auto* gwp = grad_w != nullptr ? reinterpret_cast<Pack<scalar_t, VEC>*>(grad_w + head) : nullptr;
  int64_t cached = -1;
  BwdRow<acc_t> p{};
  for (int64_t v = tid; v < n_vec; v += n_threads) {
    const Pack<scalar_t, VEC> px = xp[v];
    acc_t wv[VEC];
    bool keep[VEC];
    if constexpr (VEC == 1) {
      wv[0] = w != nullptr ? static_cast<acc_t>(w[w_st.at(o, r, i)]) : acc_t(1);
      keep[0] = mk == nullptr || mk[m_st.at(o, r, i)] != 0;
    } else {
      load_weight_mask(wp, mp, v, wv, keep);
    }
    Pack<scalar_t, VEC> ox, ow;
    int64_t ii = i, rr = r, oo = o;
#pragma unroll
    for (int q = 0; q < VEC; ++q) {
      const int64_t j = oo * I + ii;
      if (j != cached) {
        p = bwd_row(a, j);
        cached = j;
      }
      acc_t gx, gw;
      bwd_element(p, a, static_cast<acc_t>(px.v[q]), wv[q], keep[q], gx, gw);
      ox.v[q] = static_cast<scalar_t>(gx);
      ow.v[q] = static_cast<scalar_t>(gw);
      if (++ii == I) {
        ii = 0;
        if (++rr == R) {
          rr = 0;
          ++oo;
        }
      }
    }
    gxp[v] = ox;
    if (gwp != nullptr) gwp[v] = ow;
    // (o, r, i) += (so, sr, si) with carries (each digit sum stays below twice its base).
    i += si;
    int64_t carry = 0;
    if (i >= I) {
      i -= I;
      carry = 1;
    }
    r += sr + carry;
    carry = 0;
    if (r >= R) {
      r -= R;
      carry = 1;
    }
    o += so + carry;
  }
}

// ---------------------------------------------------------------------------------------
// Host side.

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Element offset of p from the previous vec-element boundary (vec a power of two).
template <typename T>
int elem_phase(const void* p, int vec) {
  const uintptr_t elem = reinterpret_cast<uintptr_t>(p) / sizeof(T);
  return static_cast<int>(elem % static_cast<uintptr_t>(vec));
}

Strides3 strides3(const int64_t (&s)[3]) { return Strides3{s[0], s[1], s[2]}; }

// in.dense_wm: weight and mask are contiguous or absent, so the pack path may read them at x's
// offsets; their strides serve the strided path.
template <typename scalar_t, typename acc_t, bool MOM>
void partition_fwd_launch(const PartitionPlan& in, const scalar_t* w, const uint8_t* mk,
                          PartOut<acc_t> out, cudaStream_t stream) {
  const int64_t O = in.O, R = in.R, I = in.I;
  const Strides3 w_st = strides3(in.weight_strides), m_st = strides3(in.mask_strides);
  const bool dense_wm = in.dense_wm, negate = in.negate;
  const scalar_t* xp = in.x.const_data_ptr<scalar_t>();
  const acc_t* sp = in.scale.const_data_ptr<acc_t>();
  const int64_t ss = in.scale_stride;
  constexpr int kVec = static_cast<int>(16 / sizeof(scalar_t));
  constexpr int kFields = MOM ? 5 : 3;
  at::Tensor ws;
  auto alloc_ws = [&] {
    ws = at::empty({kFields * out.splits * out.n_out}, in.x.options().dtype(in.scale.scalar_type()));
    out.ws = ws.mutable_data_ptr<acc_t>();
  };
  if (I == 1) {
    int vec = kVec;
    const int phase = elem_phase<scalar_t>(xp, vec);
    if (!dense_wm || (w != nullptr && elem_phase<scalar_t>(w, vec) != phase) ||
        (mk != nullptr && elem_phase<uint8_t>(mk, vec) != phase)) {
      vec = 1;
    }
    const int64_t per_row = ceil_div(R, vec);
    int G = 1;
    while (G < kMaxThreads && G < per_row) G *= 2;
    const int threads = G > kWarp ? G : kTileThreads;
    const int rows_per_block = threads / G;
    int64_t chunk = R;
    if (G == kMaxThreads && O < kSplitTarget) {
      const int64_t s = std::min(ceil_div(kSplitTarget, O), R / (int64_t{kMaxThreads} * vec * 4));
      if (s > 1) {
        chunk = ceil_div(ceil_div(R, s), vec) * vec;
        out.splits = ceil_div(R, chunk);
      }
    }
    if (out.splits > 1) alloc_ws();
    const int64_t blocks = std::min(ceil_div(O * out.splits, rows_per_block), kMaxBlocks);
    auto launch = [&](auto kernel) {
      kernel<<<blocks, threads, 0, stream>>>(xp, w, mk, w_st, m_st, O, R, chunk,
                                            vec == 1 ? 0 : phase, G, sp, ss, negate, out);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    if (vec == kVec) {
      launch(partition_fwd_rows_kernel<scalar_t, acc_t, kVec, MOM>);
    } else {
      launch(partition_fwd_rows_kernel<scalar_t, acc_t, 1, MOM>);
    }
  } else {
    int CX = 2;
    while (CX < kWarp && CX < I) CX *= 2;
    int64_t ry = 1;
    while (ry < R && CX * ry < kTileThreads) ry *= 2;
    const int threads = static_cast<int>(std::max<int64_t>(CX * ry, kWarp));
    const int RY = threads / CX;
    const int64_t tiles = O * ceil_div(I, CX);
    int64_t chunk = R;
    if (tiles < kSplitTarget) {
      const int64_t s = std::min(ceil_div(kSplitTarget, tiles), R / (int64_t{RY} * 8));
      if (s > 1) {
        chunk = ceil_div(R, s);
        out.splits = ceil_div(R, chunk);
      }
    }
    if (out.splits > 1) alloc_ws();
    const int64_t blocks = std::min(tiles * out.splits, kMaxBlocks);
    partition_fwd_mid_kernel<scalar_t, acc_t, MOM><<<blocks, threads, 0, stream>>>(
        xp, w, mk, w_st, m_st, O, R, I, chunk, CX, sp, ss, negate, out);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  if (out.splits > 1) {
    const int64_t blocks = std::min(ceil_div(out.n_out, kTileThreads), kMaxBlocks);
    partition_fwd_finalize_kernel<acc_t, MOM><<<blocks, kTileThreads, 0, stream>>>(sp, ss, out);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

// Pointers to weight (as scalar_t) and mask, or nullptr.
template <typename scalar_t>
const scalar_t* weight_ptr(const PartitionPlan& in) {
  return in.weight.has_value() ? in.weight->const_data_ptr<scalar_t>() : nullptr;
}

const uint8_t* mask_ptr(const PartitionPlan& in) {
  return in.mask.has_value() ? reinterpret_cast<const uint8_t*>(in.mask->const_data_ptr<bool>())
                             : nullptr;
}

void launch_fwd(const PartitionFwdPlan& p) {
  const PartitionPlan& in = p.in;
  const c10::cuda::CUDAGuard guard(in.x.device());
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.x.scalar_type(), "partition_fwd_cuda",
                                  [&] {
    using acc_t = at::opmath_type<scalar_t>;
    PartOut<acc_t> out{p.shift.mutable_data_ptr<acc_t>(), p.sum.mutable_data_ptr<acc_t>(),
                       nullptr, nullptr, nullptr, in.outputs, 1};
    if (p.moments == 2) {
      out.m1 = p.m1.mutable_data_ptr<acc_t>();
      out.m2 = p.m2.mutable_data_ptr<acc_t>();
      partition_fwd_launch<scalar_t, acc_t, true>(in, weight_ptr<scalar_t>(in), mask_ptr(in), out,
                                                  stream);
    } else {
      partition_fwd_launch<scalar_t, acc_t, false>(in, weight_ptr<scalar_t>(in), mask_ptr(in), out,
                                                   stream);
    }
  });
}

void launch_bwd(const PartitionBwdPlan& p) {
  const PartitionPlan& in = p.in;
  const c10::cuda::CUDAGuard guard(in.x.device());
  const int64_t total = in.x.numel(), R = in.R, I = in.I;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.x.scalar_type(), "partition_bwd_cuda",
                                  [&] {
    using acc_t = at::opmath_type<scalar_t>;
    constexpr int kVec = static_cast<int>(16 / sizeof(scalar_t));
    const scalar_t* xp = in.x.const_data_ptr<scalar_t>();
    const scalar_t* w = weight_ptr<scalar_t>(in);
    const uint8_t* mk = mask_ptr(in);
    scalar_t* gx = p.grad_x.mutable_data_ptr<scalar_t>();
    scalar_t* gw = p.weight_grad ? p.grad_w.mutable_data_ptr<scalar_t>() : nullptr;
    const Strides3 w_st = strides3(in.weight_strides), m_st = strides3(in.mask_strides);
    const int phase = elem_phase<scalar_t>(xp, kVec);
    const bool aligned = in.dense_wm &&
                         (w == nullptr || elem_phase<scalar_t>(w, kVec) == phase) &&
                         (mk == nullptr || elem_phase<uint8_t>(mk, kVec) == phase) &&
                         elem_phase<scalar_t>(gx, kVec) == phase &&
                         (gw == nullptr || elem_phase<scalar_t>(gw, kVec) == phase);
    const BwdArgs<acc_t> args{in.scale.const_data_ptr<acc_t>(), in.scale_stride,
                              p.shift.const_data_ptr<acc_t>(), p.log_norm.const_data_ptr<acc_t>(),
                              p.coef.const_data_ptr<acc_t>(), static_cast<int>(p.coef.size(1)),
                              in.negate};
    auto launch = [&](auto kernel, int vec) {
      const int64_t head = std::min<int64_t>((vec - phase % vec) % vec, total);
      const int64_t n_vec = (total - head) / vec;
      const int64_t blocks =
          std::min(std::max<int64_t>(ceil_div(n_vec, kTileThreads), 1), kMaxBlocks);
      kernel<<<blocks, kTileThreads, 0, stream>>>(xp, w, mk, w_st, m_st, total, R, I, head, args,
                                                  gx, gw);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    if (aligned && kVec > 1) {
      launch(partition_bwd_kernel<scalar_t, acc_t, kVec>, kVec);
    } else {
      launch(partition_bwd_kernel<scalar_t, acc_t, 1>, 1);
    }
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(thermokern, CUDA, m) {
  m.impl("partition_fwd", &partition_fwd_op<launch_fwd>);
  m.impl("partition_bwd", &partition_bwd_op<launch_bwd>);
}

}  // namespace thermokern::cuda

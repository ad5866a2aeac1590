// Helpers shared by the CUDA translation units (softmax_entropy.cu, cross_entropy.cu,
// partition.cu, langevin.cu, mala.cu): launch constants, 16-byte vector packs, the warp/block
// merge of online row statistics (row_stats.h), the grid-stride loop over Philox counters, and
// the host-side choice of vector width and block size.
//
// Everything here sits in an unnamed namespace: each .cu that includes this header gets its
// own internal-linkage copy (the same one its kernels, also in an unnamed namespace, use), so
// the translation units cannot clash at link time.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include <c10/cuda/CUDAStream.h>

#include "thermokern/philox.h"
#include "thermokern/row_stats.h"

namespace thermokern::cuda {

namespace {

constexpr int kWarp = 32;
constexpr int kMaxThreads = 512;
constexpr int64_t kMaxBlocks = 1 << 20;  // grid-stride beyond this many rows

template <typename scalar_t, int VEC>
struct alignas(sizeof(scalar_t) * VEC) Pack {
  scalar_t v[VEC];
};

template <typename T>
__device__ __forceinline__ T nan_max(T a, T b) {
  if (a != a) return a;
  return (b != b || b > a) ? b : a;
}

template <typename T>
__device__ __forceinline__ RowStats<T> shfl_xor_stats(const RowStats<T>& r, int mask) {
  return RowStats<T>{__shfl_xor_sync(0xffffffffu, r.m, mask),
                     __shfl_xor_sync(0xffffffffu, r.d, mask),
                     __shfl_xor_sync(0xffffffffu, r.s, mask)};
}

// One thread per Philox counter (grid-stride) over a tensor of n elements: f(c, z) for each
// counter c this thread owns, z the four normals of counter offset + c under key seed
// ([Note: Langevin noise layout] in philox.h) when `noise`, else zeros; element 4c + k takes
// z.v[k]. seed and offset are read from device memory (a CUDA-graph replay sees in-place updates).
template <typename acc_t, typename F>
__device__ __forceinline__ void for_each_counter(const int64_t* __restrict__ seed_ptr,
                                                 const int64_t* __restrict__ offset_ptr, int64_t n, bool noise,
                                                 F&& f) {
  const uint64_t seed = static_cast<uint64_t>(*seed_ptr);
  const uint64_t offset = static_cast<uint64_t>(*offset_ptr);
  const int64_t n_ctr = (n + 3) / 4;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < n_ctr; c += stride) {
    Normal4<acc_t> z{{acc_t(0), acc_t(0), acc_t(0), acc_t(0)}};
    if (noise) z = langevin_normal4<acc_t>(seed, offset + static_cast<uint64_t>(c));
    f(c, z);
  }
}

// Stands in for the sum when block_merge has none to add up.
struct NoSum {};

// Merge the statistics of all threads of the block, and add up `sum` when WITH_SUM (it rides
// along the same shuffles and the same shared-memory round); the results are valid in thread 0.
// Sum is T& when there is a sum (or may be, as in block_merge<false>(r, sum, inv_t)), NoSum
// otherwise. Use block_merge below rather than this.
// Fold VEC more elements of a row (converted to T) into one thread's online statistics
// (m, d, s) of row_stats.h. A NaN becomes the maximum and propagates; -inf entries add nothing.
template <typename T, int VEC>
__device__ __forceinline__ void online_update(const T (&xv)[VEC], T inv_t, T& m, T& d, T& s) {
  T cm = -INFINITY;
#pragma unroll
  for (int k = 0; k < VEC; ++k) cm = nan_max(cm, xv[k]);
  if (!(cm <= m)) {  // new maximum, or NaN (which then propagates)
    if (m != -INFINITY) {
      const T delta = (m - cm) * inv_t;
      const T sc = tk_exp(delta);
      s = (s + delta * d) * sc;
      d = d * sc;
    }
    m = cm;
  }
  if (m == -INFINITY) return;  // everything so far is -inf: nothing to add
#pragma unroll
  for (int k = 0; k < VEC; ++k) {
    const T y = (xv[k] - m) * inv_t;  // exact for x near m, whatever T
    const T e = tk_exp(y);
    d += e;
    s += (y == -INFINITY) ? T(0) : y * e;
  }
}

template <bool WITH_SUM, typename T, typename Sum>
__device__ RowStats<T> block_merge_impl(RowStats<T> r, Sum sum, T inv_t) {
  __shared__ T sm[kMaxThreads / kWarp], sd[kMaxThreads / kWarp], ss[kMaxThreads / kWarp];
  __shared__ T ssum[WITH_SUM ? kMaxThreads / kWarp : 1];
  for (int mask = kWarp / 2; mask > 0; mask >>= 1) {
    r = row_stats_merge(r, shfl_xor_stats(r, mask), inv_t);
    if constexpr (WITH_SUM) sum += __shfl_xor_sync(0xffffffffu, sum, mask);
  }
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int n_warps = blockDim.x / kWarp;
  if (lane == 0) {
    sm[warp] = r.m;
    sd[warp] = r.d;
    ss[warp] = r.s;
    if constexpr (WITH_SUM) ssum[warp] = sum;
  }
  __syncthreads();
  if (warp == 0) {
    r = lane < n_warps ? RowStats<T>{sm[lane], sd[lane], ss[lane]} : row_stats_empty<T>();
    if constexpr (WITH_SUM) sum = lane < n_warps ? ssum[lane] : T(0);
    for (int mask = kWarp / 2; mask > 0; mask >>= 1) {
      r = row_stats_merge(r, shfl_xor_stats(r, mask), inv_t);
      if constexpr (WITH_SUM) sum += __shfl_xor_sync(0xffffffffu, sum, mask);
    }
  }
  __syncthreads();  // the shared buffers are reused by the next row
  return r;
}

// The statistics of the block, and the block sum of `sum` when WITH_SUM (left alone otherwise);
// valid in thread 0.
template <bool WITH_SUM, typename T>
__device__ __forceinline__ RowStats<T> block_merge(RowStats<T> r, T& sum, T inv_t) {
  return block_merge_impl<WITH_SUM, T, T&>(r, sum, inv_t);
}

// The statistics of the block alone; valid in thread 0. (NoSum rather than a dummy T: passing
// a dummy by reference changes the sm_90 register allocation of the kernels.)
template <typename T>
__device__ __forceinline__ RowStats<T> block_merge(RowStats<T> r, T inv_t) {
  return block_merge_impl<false, T>(r, NoSum{}, inv_t);
}

int threads_for(int64_t n_vec) {
  int t = kWarp;
  while (t < kMaxThreads && t < n_vec) t *= 2;
  return t;
}

// Largest vector width (elements per 16-byte load) that the pointers, row stride and C allow.
template <typename scalar_t>
int vec_width(const void* a, const void* b, int64_t row_stride, int64_t C) {
  int vec = static_cast<int>(16 / sizeof(scalar_t));
  while (vec > 1) {
    const uintptr_t bytes = static_cast<uintptr_t>(vec) * sizeof(scalar_t);
    if (reinterpret_cast<uintptr_t>(a) % bytes == 0 && reinterpret_cast<uintptr_t>(b) % bytes == 0 &&
        row_stride % vec == 0 && C % vec == 0) {
      break;
    }
    vec /= 2;
  }
  return vec;
}

// Call fn(std::integral_constant<int, VEC>) for the runtime width, instantiating only the
// widths whose packs fit one 16-byte load of scalar_t.
template <typename scalar_t, typename Fn>
void dispatch_vec(int vec, Fn&& fn) {
  constexpr int kMax = static_cast<int>(16 / sizeof(scalar_t));
  if constexpr (kMax >= 8) {
    if (vec == 8) return fn(std::integral_constant<int, 8>{});
  }
  if constexpr (kMax >= 4) {
    if (vec == 4) return fn(std::integral_constant<int, 4>{});
  }
  if constexpr (kMax >= 2) {
    if (vec == 2) return fn(std::integral_constant<int, 2>{});
  }
  return fn(std::integral_constant<int, 1>{});
}

// Launches a row kernel (one thread block per row, grid-stride beyond kMaxBlocks rows) over
// N rows of C elements, row_stride apart, read from x and written to out (may be x): calls
// launch(std::integral_constant<int, VEC>, blocks, threads, stream) with the widest vector
// width that x, out, the row stride and C allow, on the current stream.
template <typename scalar_t, typename Launch>
void launch_rows(const scalar_t* x, const void* out, int64_t N, int64_t C, int64_t row_stride,
                 Launch&& launch) {
  const int vec = vec_width<scalar_t>(x, out, row_stride, C);
  const int threads = threads_for((C + vec - 1) / vec);
  const int64_t blocks = std::min<int64_t>(N, kMaxBlocks);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  dispatch_vec<scalar_t>(vec, [&](auto vec_c) { launch(vec_c, blocks, threads, stream); });
}

}  // namespace

}  // namespace thermokern::cuda

// What the CUDA row ops (softmax_entropy.cu, cross_entropy.cu, token_logprobs.cu) share on top of
// common.cuh: a block's statistics of one row (forward), the backward's sweep that recomputes
// log p from them, the rows without gradient of the target-indexed backwards, and the host-side
// launch over the rows of a plan (thermokern/softmax_entropy_plan.h). The CPU counterparts are
// csrc/cpu/row_stats_kernel.h and rows.h.
//
// Like common.cuh, everything sits in an unnamed namespace (one copy per translation unit).
#pragma once

#include <cstdint>
#include <utility>

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "common.cuh"
#include "thermokern/row_stats.h"
#include "thermokern/softmax_entropy_plan.h"

namespace thermokern::cuda {

namespace {

// The rows of a row op as its kernels take them (the device side of a RowsPlan, built by
// RowLaunch): row r of the (N, C) logits starts at x + r * row_stride (unit stride inside a
// row) and has 1/T = inv_t[r * inv_t_stride] (stride 0: one value for every row).
template <typename scalar_t, typename acc_t>
struct RowsView {
  const scalar_t* x;
  int64_t N, C, row_stride;
  const acc_t* inv_t;
  int64_t inv_t_stride;

  __device__ __forceinline__ const scalar_t* row(int64_t r) const { return x + r * row_stride; }
  __device__ __forceinline__ acc_t inv_t_of(int64_t r) const { return inv_t[r * inv_t_stride]; }
};

// The per-row statistics (row_stats.h), (N,) each: written by the forwards (T = acc_t), read
// by the backwards (T = const acc_t).
template <typename T>
struct StatsView {
  T* entropy;
  T* shift;
  T* log_norm;

  // A forward's statistics of row r (entropy h, shift m, log_norm ln).
  __device__ __forceinline__ void store(int64_t r, T h, T m, T ln) const {
    entropy[r] = h;
    shift[r] = m;
    log_norm[r] = ln;
  }
};

// The statistics (row_stats.h) of one row read by the whole block: n_vec packs of VEC elements
// from xrow (16-byte aligned when VEC > 1), folded per thread (online_update) and merged
// (block_merge); valid in thread 0.
template <typename acc_t, int VEC, typename scalar_t>
__device__ __forceinline__ RowStats<acc_t> block_row_stats(const scalar_t* xrow, int64_t n_vec,
                                                           acc_t inv_t) {
  const Pack<scalar_t, VEC>* rp = reinterpret_cast<const Pack<scalar_t, VEC>*>(xrow);
  acc_t m = -INFINITY, d = 0, s = 0;
  for (int64_t v = threadIdx.x; v < n_vec; v += blockDim.x) {
    const Pack<scalar_t, VEC> p = rp[v];
    acc_t xv[VEC];
#pragma unroll
    for (int k = 0; k < VEC; ++k) xv[k] = static_cast<acc_t>(p.v[k]);
    online_update(xv, inv_t, m, d, s);
  }
  return block_merge(RowStats<acc_t>{m, d, s}, inv_t);
}

// The backward sweep of one row by the whole block: for each element j (this thread's packs
// among n_vec), with log p_j = k (x_j - m) - log_norm (recomputed from the forward's
// statistics), grow[j] = value(j, log p_j) in scalar_t. xrow and grow are 16-byte aligned when
// VEC > 1.
template <typename acc_t, int VEC, typename scalar_t, typename Value>
__device__ __forceinline__ void logp_row_sweep(const scalar_t* xrow, scalar_t* grow, int64_t n_vec,
                                               acc_t inv_t, acc_t m, acc_t log_norm,
                                               Value value) {
  const Pack<scalar_t, VEC>* rp = reinterpret_cast<const Pack<scalar_t, VEC>*>(xrow);
  Pack<scalar_t, VEC>* gp = reinterpret_cast<Pack<scalar_t, VEC>*>(grow);
  for (int64_t v = threadIdx.x; v < n_vec; v += blockDim.x) {
    const Pack<scalar_t, VEC> p = rp[v];
    Pack<scalar_t, VEC> out;
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const acc_t logp = (static_cast<acc_t>(p.v[j]) - m) * inv_t - log_norm;
      out.v[j] = static_cast<scalar_t>(value(v * VEC + j, logp));
    }
    gp[v] = out;
  }
}

// The backward row of a target-indexed op (cross_entropy, token_logprobs) whose target y gives
// no gradient: 0 when y == ignore_index, NaN when y is outside [0, C) (never used as an index).
// Writes this thread's packs of such a row (grow: n_vec packs) and returns true; returns false,
// writing nothing, for a valid target. The branch is the same for the whole block.
template <typename acc_t, int VEC, typename scalar_t>
__device__ __forceinline__ bool fill_dead_target_row(scalar_t* grow, int64_t n_vec, int64_t y,
                                                     int64_t ignore_index, int64_t C) {
  if (y != ignore_index && y >= 0 && y < C) return false;
  const scalar_t fill = static_cast<scalar_t>(y == ignore_index ? acc_t(0) : acc_t(NAN));
  Pack<scalar_t, VEC> out;
#pragma unroll
  for (int j = 0; j < VEC; ++j) out.v[j] = fill;
  Pack<scalar_t, VEC>* gp = reinterpret_cast<Pack<scalar_t, VEC>*>(grow);
  for (int64_t v = threadIdx.x; v < n_vec; v += blockDim.x) gp[v] = out;
  return true;
}

// The types and launch configuration of one row kernel (see launch_row_op): scalar (the
// logits' type), acc (its accumulation type) and vec (elements per vector load) for the
// kernel's template arguments, the rows as the kernels take them, and the launch: calling it
// runs kernel(args...) on the op's grid and stream.
template <typename scalar_t, int VEC>
struct RowLaunch {
  using scalar = scalar_t;
  using acc = at::opmath_type<scalar_t>;
  static constexpr int vec = VEC;
  RowsView<scalar_t, acc> rows;
  int64_t blocks;
  int threads;
  cudaStream_t stream;

  static StatsView<acc> stats_out(const RowStatsTensors& t) {
    return {t.entropy.mutable_data_ptr<acc>(), t.shift.mutable_data_ptr<acc>(),
            t.log_norm.mutable_data_ptr<acc>()};
  }
  static StatsView<const acc> stats_in(const RowStatsTensors& t) {
    return {t.entropy.const_data_ptr<acc>(), t.shift.const_data_ptr<acc>(),
            t.log_norm.const_data_ptr<acc>()};
  }

  template <typename... Params, typename... Args>
  void operator()(void (*kernel)(Params...), Args&&... args) const {
    kernel<<<blocks, threads, 0, stream>>>(std::forward<Args>(args)...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

// Runs a row kernel over the rows of a plan, under a guard of the logits' device: calls
// body(RowLaunch<scalar_t, VEC>) for the logits' dtype and the widest vector width that the
// logits, `out` (the (rows, C) output, or nullptr for none) and the row stride allow
// (launch_rows, common.cuh).
template <typename Body>
void launch_row_op(const RowsPlan& r, const void* out, Body&& body) {
  const c10::cuda::CUDAGuard guard(r.logits.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, r.logits.scalar_type(),
                                  "thermokern_row_op_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const RowsView<scalar_t, acc_t> rows{r.logits.const_data_ptr<scalar_t>(), r.rows, r.C,
                                         r.row_stride, r.inv_t.const_data_ptr<acc_t>(),
                                         r.inv_t_stride};
    launch_rows<scalar_t>(rows.x, out != nullptr ? out : rows.x, r.rows, r.C, r.row_stride,
                          [&](auto vec_c, int64_t blocks, int threads, cudaStream_t stream) {
      body(RowLaunch<scalar_t, decltype(vec_c)::value>{rows, blocks, threads, stream});
    });
  });
}

}  // namespace

}  // namespace thermokern::cuda

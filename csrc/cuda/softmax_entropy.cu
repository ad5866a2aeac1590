// softmax_entropy: CUDA implementation (TORCH_LIBRARY_IMPL(thermokern, CUDA)): kernels and their
// launches for the entry points of thermokern/softmax_entropy_plan.h (shared with the CPU).
//
// One thread block per row (grid-stride over rows). Forward: each thread keeps online
// statistics (row_stats.h) over the elements it owns, read with 16-byte vector loads when the
// row is aligned; warps merge with shuffles, then the block through shared memory. Backward
// recomputes log p = (x - max) / T - log_norm and writes -(g/T) p (log p + H) in one sweep.
// 1/T comes from a device tensor, inv_t[row * inv_t_stride] (stride 0: one value for all rows).
// Offsets are int64 throughout (rows * stride can exceed 2^31); nothing syncs with the host.
#include <cstdint>

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "common.cuh"
#include "thermokern/row_stats.h"
#include "thermokern/softmax_entropy_plan.h"

namespace thermokern::cuda {

namespace {

template <typename scalar_t, typename acc_t, int VEC>
__global__ void softmax_entropy_fwd_kernel(const scalar_t* __restrict__ x,  // (N, C), row stride
                                           int64_t N, int64_t C, int64_t row_stride,
                                           const acc_t* __restrict__ inv_t_ptr,
                                           int64_t inv_t_stride,
                                           acc_t* __restrict__ entropy,    // (N,)
                                           acc_t* __restrict__ shift,      // (N,)
                                           acc_t* __restrict__ log_norm) { // (N,)
  const int64_t n_vec = C / VEC;  // VEC > 1 only when C % VEC == 0
  for (int64_t row = blockIdx.x; row < N; row += gridDim.x) {
    const acc_t inv_t = inv_t_ptr[row * inv_t_stride];
    const Pack<scalar_t, VEC>* rp =
        reinterpret_cast<const Pack<scalar_t, VEC>*>(x + row * row_stride);
    acc_t m = -INFINITY, d = 0, s = 0;
    for (int64_t v = threadIdx.x; v < n_vec; v += blockDim.x) {
      const Pack<scalar_t, VEC> p = rp[v];
      acc_t xv[VEC];
#pragma unroll
      for (int k = 0; k < VEC; ++k) xv[k] = static_cast<acc_t>(p.v[k]);
      online_update(xv, inv_t, m, d, s);
    }
    const RowStats<acc_t> r = block_merge(RowStats<acc_t>{m, d, s}, inv_t);
    if (threadIdx.x == 0) {
      entropy[row] = row_stats_entropy(r);
      shift[row] = r.m;
      log_norm[row] = row_stats_log_norm(r);
    }
  }
}

template <typename scalar_t, typename acc_t, int VEC>
__global__ void softmax_entropy_bwd_kernel(const acc_t* __restrict__ grad,     // (N,)
                                           const scalar_t* __restrict__ x,     // (N, C)
                                           const acc_t* __restrict__ entropy,  // (N,)
                                           const acc_t* __restrict__ shift,    // (N,)
                                           const acc_t* __restrict__ log_norm, // (N,)
                                           scalar_t* __restrict__ grad_x,      // (N, C) contig
                                           int64_t N, int64_t C, int64_t row_stride,
                                           const acc_t* __restrict__ inv_t_ptr,
                                           int64_t inv_t_stride) {
  const int64_t n_vec = C / VEC;
  for (int64_t row = blockIdx.x; row < N; row += gridDim.x) {
    const acc_t inv_t = inv_t_ptr[row * inv_t_stride];
    const Pack<scalar_t, VEC>* rp =
        reinterpret_cast<const Pack<scalar_t, VEC>*>(x + row * row_stride);
    Pack<scalar_t, VEC>* gp = reinterpret_cast<Pack<scalar_t, VEC>*>(grad_x + row * C);
    const acc_t coef = -grad[row] * inv_t;
    const acc_t mx = shift[row];
    const acc_t ln = log_norm[row];
    const acc_t h = entropy[row];
    for (int64_t v = threadIdx.x; v < n_vec; v += blockDim.x) {
      const Pack<scalar_t, VEC> p = rp[v];
      Pack<scalar_t, VEC> out;
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const acc_t logp = (static_cast<acc_t>(p.v[k]) - mx) * inv_t - ln;
        const acc_t g = (logp == -INFINITY) ? acc_t(0) : coef * tk_exp(logp) * (logp + h);
        out.v[k] = static_cast<scalar_t>(g);
      }
      gp[v] = out;
    }
  }
}

void launch_fwd(const SoftmaxEntropyFwdPlan& p) {
  const RowsPlan& r = p.rows;
  const c10::cuda::CUDAGuard guard(r.logits.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, r.logits.scalar_type(),
                                  "softmax_entropy_fwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = r.logits.const_data_ptr<scalar_t>();
    launch_rows<scalar_t>(xp, xp, r.rows, r.C, r.row_stride,
                          [&](auto vec_c, int64_t blocks, int threads, cudaStream_t stream) {
      constexpr int VEC = decltype(vec_c)::value;
      softmax_entropy_fwd_kernel<scalar_t, acc_t, VEC><<<blocks, threads, 0, stream>>>(
          xp, r.rows, r.C, r.row_stride, r.inv_t.const_data_ptr<acc_t>(), r.inv_t_stride,
          p.out.entropy.mutable_data_ptr<acc_t>(), p.out.shift.mutable_data_ptr<acc_t>(),
          p.out.log_norm.mutable_data_ptr<acc_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

void launch_bwd(const RowsBwdPlan& p) {
  const RowsPlan& r = p.rows;
  const c10::cuda::CUDAGuard guard(r.logits.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, r.logits.scalar_type(),
                                  "softmax_entropy_bwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = r.logits.const_data_ptr<scalar_t>();
    scalar_t* gxp = p.grad_x.mutable_data_ptr<scalar_t>();
    launch_rows<scalar_t>(xp, gxp, r.rows, r.C, r.row_stride,
                          [&](auto vec_c, int64_t blocks, int threads, cudaStream_t stream) {
      constexpr int VEC = decltype(vec_c)::value;
      softmax_entropy_bwd_kernel<scalar_t, acc_t, VEC><<<blocks, threads, 0, stream>>>(
          p.grad.const_data_ptr<acc_t>(), xp, p.stats.entropy.const_data_ptr<acc_t>(),
          p.stats.shift.const_data_ptr<acc_t>(), p.stats.log_norm.const_data_ptr<acc_t>(), gxp,
          r.rows, r.C, r.row_stride, r.inv_t.const_data_ptr<acc_t>(), r.inv_t_stride);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(thermokern, CUDA, m) {
  m.impl("softmax_entropy_fwd", &softmax_entropy_fwd_op<launch_fwd>);
  m.impl("softmax_entropy_bwd", &softmax_entropy_bwd_op<launch_bwd>);
}

}  // namespace thermokern::cuda

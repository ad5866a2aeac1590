// cross_entropy: entropy-regularised cross-entropy, CUDA implementation
// (TORCH_LIBRARY_IMPL(thermokern, CUDA)): kernels and their launches for the entry points of
// thermokern/cross_entropy_plan.h (shared with the CPU).
//
// Per row, with k = 1/T = inv_t[row * inv_t_stride], z = k x and y the target class:
//   loss = CE(z, y; eps) - beta H(softmax z) + zw lse(z)^2    (0 when y == ignore_index)
// Same structure as softmax_entropy.cu: one thread block per row (grid-stride over rows), online row
// statistics (row_stats.h) per thread over 16-byte vector loads, merged through warp shuffles
// and shared memory. The forward writes the softmax_entropy statistics (entropy, shift,
// log_norm) as well, and the backward recomputes p from them in one sweep:
//   grad_x_j = g k [p_j (1 + beta (log p_j + H) + 2 zw lse) - (1 - eps) [j == y] - eps / C].
// A target outside [0, C) that is not ignore_index is never used as an index: its row gets a
// NaN loss and a NaN gradient row (the Python layer validates targets first when it can).
// Offsets are int64 throughout; nothing syncs with the host.
//
// [Note: cancellation-free cross-entropy]
// With m the row maximum and log d = log_norm, lse = k m + log d, so
//   CE = (1 - eps)(lse - k x_y) + eps (lse - k mean x) = log d + k (m - (1 - eps) x_y - eps mean x).
// For large logits (~1e4) m - x_y is exact, but a plain float sum of x can lose 1e-3 or more
// to rounding. With label smoothing every thread therefore sums x_j - r with the per-row
// reference r = x_y (r = 0 when x_y is not finite, or the target is not a valid class; x_y = -inf
// makes the loss +inf anyway), and
//   m - (1 - eps) x_y - eps mean x = (m - r) - (1 - eps)(x_y - r) - eps mean(x - r),
// where every term is of the size of the spread of the row, not of the logits.
#include <cstdint>

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "common.cuh"
#include "thermokern/cross_entropy_plan.h"
#include "thermokern/row_stats.h"

namespace thermokern::cuda {

namespace {

// Forward. HAS_SMOOTHING: label_smoothing > 0 (then the row sum of x - ref is needed).
template <typename scalar_t, typename acc_t, int VEC, bool HAS_SMOOTHING>
__global__ void cross_entropy_fwd_kernel(const scalar_t* __restrict__ x,  // (N, C), row stride
                                      const int64_t* __restrict__ target,  // (N,)
                                      int64_t N, int64_t C, int64_t row_stride,
                                      const acc_t* __restrict__ inv_t_ptr, int64_t inv_t_stride,
                                      acc_t beta, acc_t eps, int64_t ignore_index, acc_t zw,
                                      acc_t* __restrict__ loss,       // (N,)
                                      acc_t* __restrict__ entropy,    // (N,)
                                      acc_t* __restrict__ shift,      // (N,)
                                      acc_t* __restrict__ log_norm) { // (N,)
  const int64_t n_vec = C / VEC;  // VEC > 1 only when C % VEC == 0
  for (int64_t row = blockIdx.x; row < N; row += gridDim.x) {
    const acc_t inv_t = inv_t_ptr[row * inv_t_stride];
    const scalar_t* xrow = x + row * row_stride;
    // The target logit: read by thread 0 for the loss, and by every thread when it is the
    // reference of the smoothing sum (see [Note: cancellation-free cross-entropy]).
    int64_t y = ignore_index;
    acc_t xy = 0, ref = 0;
    if (HAS_SMOOTHING || threadIdx.x == 0) {
      y = target[row];
      if (y != ignore_index && y >= 0 && y < C) {
        xy = static_cast<acc_t>(xrow[y]);
        if (HAS_SMOOTHING && xy > -INFINITY && xy < INFINITY) ref = xy;  // finite
      }
    }
    const Pack<scalar_t, VEC>* rp = reinterpret_cast<const Pack<scalar_t, VEC>*>(xrow);
    acc_t m = -INFINITY, d = 0, s = 0, sx = 0;
    for (int64_t v = threadIdx.x; v < n_vec; v += blockDim.x) {
      const Pack<scalar_t, VEC> p = rp[v];
      acc_t xv[VEC];
#pragma unroll
      for (int j = 0; j < VEC; ++j) xv[j] = static_cast<acc_t>(p.v[j]);
      if constexpr (HAS_SMOOTHING) {
#pragma unroll
        for (int j = 0; j < VEC; ++j) sx += xv[j] - ref;  // -inf entries make it -inf: loss +inf
      }
      online_update(xv, inv_t, m, d, s);
    }
    const RowStats<acc_t> r = block_merge<HAS_SMOOTHING>(RowStats<acc_t>{m, d, s}, sx, inv_t);
    if (threadIdx.x == 0) {
      const acc_t h = row_stats_entropy(r);
      const acc_t ln = row_stats_log_norm(r);
      entropy[row] = h;
      shift[row] = r.m;
      log_norm[row] = ln;
      acc_t l;
      if (y == ignore_index) {
        l = 0;
      } else if (y < 0 || y >= C) {
        l = NAN;  // invalid target: no read happened
      } else {
        acc_t gap;  // m - (1 - eps) x_y - eps mean x
        if constexpr (HAS_SMOOTHING) {
          gap = (r.m - ref) - (acc_t(1) - eps) * (xy - ref) - eps * (sx / static_cast<acc_t>(C));
        } else {
          gap = r.m - xy;
        }
        l = ln + inv_t * gap - beta * h;
        if (zw != acc_t(0)) {
          const acc_t lse = r.m * inv_t + ln;
          l += zw * lse * lse;
        }
      }
      loss[row] = l;
    }
  }
}

template <typename scalar_t, typename acc_t, int VEC>
__global__ void cross_entropy_bwd_kernel(const acc_t* __restrict__ grad,      // (N,)
                                      const scalar_t* __restrict__ x,      // (N, C)
                                      const int64_t* __restrict__ target,  // (N,)
                                      const acc_t* __restrict__ entropy,   // (N,)
                                      const acc_t* __restrict__ shift,     // (N,)
                                      const acc_t* __restrict__ log_norm,  // (N,)
                                      scalar_t* __restrict__ grad_x,       // (N, C) contig
                                      int64_t N, int64_t C, int64_t row_stride,
                                      const acc_t* __restrict__ inv_t_ptr, int64_t inv_t_stride,
                                      acc_t beta, acc_t eps, int64_t ignore_index, acc_t zw) {
  const int64_t n_vec = C / VEC;
  const acc_t eps_c = eps / static_cast<acc_t>(C);  // the smoothing term, every column
  const acc_t on_y = acc_t(1) - eps;                // the target column's extra term
  for (int64_t row = blockIdx.x; row < N; row += gridDim.x) {
    Pack<scalar_t, VEC>* gp = reinterpret_cast<Pack<scalar_t, VEC>*>(grad_x + row * C);
    const int64_t y = target[row];
    if (y == ignore_index || y < 0 || y >= C) {
      // Ignored row: no gradient. Invalid target: NaN row, and no read at y. The branch is
      // the same for the whole block.
      const scalar_t fill = static_cast<scalar_t>(y == ignore_index ? acc_t(0) : acc_t(NAN));
      Pack<scalar_t, VEC> out;
#pragma unroll
      for (int j = 0; j < VEC; ++j) out.v[j] = fill;
      for (int64_t v = threadIdx.x; v < n_vec; v += blockDim.x) gp[v] = out;
      continue;
    }
    const acc_t inv_t = inv_t_ptr[row * inv_t_stride];
    const Pack<scalar_t, VEC>* rp =
        reinterpret_cast<const Pack<scalar_t, VEC>*>(x + row * row_stride);
    const acc_t gk = grad[row] * inv_t;
    const acc_t mx = shift[row];
    const acc_t ln = log_norm[row];
    // p_j (1 + beta (log p_j + H) + 2 zw lse) = p_j (a + beta log p_j)
    acc_t a = acc_t(1) + beta * entropy[row];
    if (zw != acc_t(0)) a += acc_t(2) * zw * (mx * inv_t + ln);
    for (int64_t v = threadIdx.x; v < n_vec; v += blockDim.x) {
      const Pack<scalar_t, VEC> p = rp[v];
      Pack<scalar_t, VEC> out;
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        const acc_t logp = (static_cast<acc_t>(p.v[j]) - mx) * inv_t - ln;
        // p = 0 at -inf: no 0 * (-inf)
        acc_t t = (logp == -INFINITY) ? acc_t(0) : tk_exp(logp) * (a + beta * logp);
        t -= eps_c;
        if (v * VEC + j == y) t -= on_y;
        out.v[j] = static_cast<scalar_t>(gk * t);
      }
      gp[v] = out;
    }
  }
}

void launch_fwd(const CrossEntropyFwdPlan& p) {
  const RowsPlan& r = p.rows;
  const CrossEntropyScalars& s = p.scalars;
  const c10::cuda::CUDAGuard guard(r.logits.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, r.logits.scalar_type(),
                                  "cross_entropy_fwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = r.logits.const_data_ptr<scalar_t>();
    launch_rows<scalar_t>(xp, xp, r.rows, r.C, r.row_stride,
                          [&](auto vec_c, int64_t blocks, int threads, cudaStream_t stream) {
      constexpr int VEC = decltype(vec_c)::value;
      auto launch = [&](auto kernel) {
        kernel<<<blocks, threads, 0, stream>>>(
            xp, p.target.const_data_ptr<int64_t>(), r.rows, r.C, r.row_stride,
            r.inv_t.const_data_ptr<acc_t>(), r.inv_t_stride, static_cast<acc_t>(s.entropy_weight),
            static_cast<acc_t>(s.label_smoothing), s.ignore_index,
            static_cast<acc_t>(s.z_loss_weight), p.loss.mutable_data_ptr<acc_t>(),
            p.out.entropy.mutable_data_ptr<acc_t>(), p.out.shift.mutable_data_ptr<acc_t>(),
            p.out.log_norm.mutable_data_ptr<acc_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      };
      if (s.label_smoothing > 0.0) {
        launch(cross_entropy_fwd_kernel<scalar_t, acc_t, VEC, true>);
      } else {
        launch(cross_entropy_fwd_kernel<scalar_t, acc_t, VEC, false>);
      }
    });
  });
}

void launch_bwd(const CrossEntropyBwdPlan& p) {
  const RowsPlan& r = p.bwd.rows;
  const RowStatsTensors& st = p.bwd.stats;
  const CrossEntropyScalars& s = p.scalars;
  const c10::cuda::CUDAGuard guard(r.logits.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, r.logits.scalar_type(),
                                  "cross_entropy_bwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = r.logits.const_data_ptr<scalar_t>();
    scalar_t* gxp = p.bwd.grad_x.mutable_data_ptr<scalar_t>();
    launch_rows<scalar_t>(xp, gxp, r.rows, r.C, r.row_stride,
                          [&](auto vec_c, int64_t blocks, int threads, cudaStream_t stream) {
      constexpr int VEC = decltype(vec_c)::value;
      cross_entropy_bwd_kernel<scalar_t, acc_t, VEC><<<blocks, threads, 0, stream>>>(
          p.bwd.grad.const_data_ptr<acc_t>(), xp, p.target.const_data_ptr<int64_t>(),
          st.entropy.const_data_ptr<acc_t>(), st.shift.const_data_ptr<acc_t>(),
          st.log_norm.const_data_ptr<acc_t>(), gxp, r.rows, r.C, r.row_stride,
          r.inv_t.const_data_ptr<acc_t>(), r.inv_t_stride, static_cast<acc_t>(s.entropy_weight),
          static_cast<acc_t>(s.label_smoothing), s.ignore_index,
          static_cast<acc_t>(s.z_loss_weight));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(thermokern, CUDA, m) {
  m.impl("cross_entropy_fwd", &cross_entropy_fwd_op<launch_fwd>);
  m.impl("cross_entropy_bwd", &cross_entropy_bwd_op<launch_bwd>);
}

}  // namespace thermokern::cuda

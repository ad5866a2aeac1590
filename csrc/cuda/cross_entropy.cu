// cross_entropy: entropy-regularised cross-entropy, CUDA implementation
// (TORCH_LIBRARY_IMPL(thermokern, CUDA)): kernels and their launches for the entry points of
// thermokern/cross_entropy_plan.h (shared with the CPU).
//
// Per row, with k = 1/T = inv_t[row * inv_t_stride], z = k x and y the target class:
//   loss = CE(z, y; eps) - beta H(softmax z) + zw lse(z)^2    (0 when y == ignore_index)
// Same structure as softmax_entropy.cu: one thread block per row (grid-stride over rows), online row
// statistics (row_stats.h) per thread over 16-byte vector loads, merged through warp shuffles
// and shared memory (the pieces shared with the other row ops are in rows.cuh). The forward
// writes the softmax_entropy statistics (entropy, shift, log_norm) as well, and the backward
// recomputes p from them in one sweep:
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

#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "rows.cuh"
#include "thermokern/cross_entropy_plan.h"
#include "thermokern/row_stats.h"

namespace thermokern::cuda {

namespace {

// Forward. HAS_SMOOTHING: label_smoothing > 0 (then the row sum of x - ref is needed).
template <typename scalar_t, typename acc_t, int VEC, bool HAS_SMOOTHING>
__global__ void cross_entropy_fwd_kernel(RowsView<scalar_t, acc_t> a,
                                         const int64_t* __restrict__ target,  // (N,)
                                         acc_t beta, acc_t eps, int64_t ignore_index, acc_t zw,
                                         acc_t* __restrict__ loss,  // (N,)
                                         StatsView<acc_t> out) {
  const int64_t C = a.C;
  const int64_t n_vec = C / VEC;  // VEC > 1 only when C % VEC == 0
  for (int64_t row = blockIdx.x; row < a.N; row += gridDim.x) {
    const acc_t inv_t = a.inv_t_of(row);
    const scalar_t* xrow = a.row(row);
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
      out.store(row, h, r.m, ln);
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
__global__ void cross_entropy_bwd_kernel(const acc_t* __restrict__ grad,  // (N,)
                                         RowsView<scalar_t, acc_t> a,
                                         const int64_t* __restrict__ target,  // (N,)
                                         StatsView<const acc_t> st,
                                         scalar_t* grad_x,  // (N, C) contig, may be the logits
                                         acc_t beta, acc_t eps, int64_t ignore_index, acc_t zw) {
  const int64_t C = a.C;
  const int64_t n_vec = C / VEC;
  const acc_t eps_c = eps / static_cast<acc_t>(C);  // the smoothing term, every column
  const acc_t on_y = acc_t(1) - eps;                // the target column's extra term
  for (int64_t row = blockIdx.x; row < a.N; row += gridDim.x) {
    scalar_t* grow = grad_x + row * C;
    const int64_t y = target[row];
    // Ignored row: no gradient. Invalid target: NaN row, and no read at y.
    if (fill_dead_target_row<acc_t, VEC>(grow, n_vec, y, ignore_index, C)) continue;
    const acc_t inv_t = a.inv_t_of(row);
    const acc_t gk = grad[row] * inv_t;
    const acc_t mx = st.shift[row];
    const acc_t ln = st.log_norm[row];
    // p_j (1 + beta (log p_j + H) + 2 zw lse) = p_j (w + beta log p_j)
    acc_t w = acc_t(1) + beta * st.entropy[row];
    if (zw != acc_t(0)) w += acc_t(2) * zw * (mx * inv_t + ln);
    logp_row_sweep<acc_t, VEC>(a.row(row), grow, n_vec, inv_t, mx, ln, [&](int64_t j, acc_t logp) {
      // p = 0 at -inf: no 0 * (-inf)
      acc_t t = (logp == -INFINITY) ? acc_t(0) : tk_exp(logp) * (w + beta * logp);
      t -= eps_c;
      if (j == y) t -= on_y;
      return gk * t;
    });
  }
}

void launch_fwd(const CrossEntropyFwdPlan& p) {
  const CrossEntropyScalars& s = p.scalars;
  launch_row_op(p.rows, nullptr, [&](auto launch) {
    using L = decltype(launch);
    using acc_t = typename L::acc;
    const auto run = [&](auto kernel) {
      launch(kernel, launch.rows, p.target.const_data_ptr<int64_t>(),
             static_cast<acc_t>(s.entropy_weight), static_cast<acc_t>(s.label_smoothing),
             s.ignore_index, static_cast<acc_t>(s.z_loss_weight),
             p.loss.mutable_data_ptr<acc_t>(), L::stats_out(p.out));
    };
    if (s.label_smoothing > 0.0) {
      run(cross_entropy_fwd_kernel<typename L::scalar, acc_t, L::vec, true>);
    } else {
      run(cross_entropy_fwd_kernel<typename L::scalar, acc_t, L::vec, false>);
    }
  });
}

void launch_bwd(const CrossEntropyBwdPlan& p) {
  const CrossEntropyScalars& s = p.scalars;
  launch_row_op(p.bwd.rows, p.bwd.grad_x.const_data_ptr(), [&](auto launch) {
    using L = decltype(launch);
    using acc_t = typename L::acc;
    launch(cross_entropy_bwd_kernel<typename L::scalar, acc_t, L::vec>,
           p.bwd.grad.const_data_ptr<acc_t>(), launch.rows, p.target.const_data_ptr<int64_t>(),
           L::stats_in(p.bwd.stats), p.bwd.grad_x.mutable_data_ptr<typename L::scalar>(),
           static_cast<acc_t>(s.entropy_weight), static_cast<acc_t>(s.label_smoothing),
           s.ignore_index, static_cast<acc_t>(s.z_loss_weight));
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(thermokern, CUDA, m) {
  TK_IMPL_ROW_OP(m, cross_entropy);
}

}  // namespace thermokern::cuda

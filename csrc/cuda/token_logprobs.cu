// token_logprobs: log-probabilities of the targets with the row entropy, CUDA implementation
// (TORCH_LIBRARY_IMPL(thermokern, CUDA)): kernels and their launches for the entry points of
// thermokern/token_logprobs_plan.h (shared with the CPU); the contract is [Note: token
// log-probabilities] in csrc/thermokern.cpp.
//
// Per row, with k = 1/T = inv_t[row * inv_t_stride] and y the target class:
//   logp = log p_y = k (x_y - m) - log d    (0 when y == ignore_index)
// Same structure as softmax_entropy.cu: one thread block per row (grid-stride over rows), the
// block's online row statistics (block_row_stats, rows.cuh); thread 0 reads the target logit
// before the sweep and writes logp beside the softmax_entropy statistics. The backward
// recomputes p from them in one sweep (logp_row_sweep):
//   grad_x_j = -k [p_j (g_l + g_H (log p_j + H)) - g_l [j == y]],
// a term carrying p_j = 0 being 0 (no 0 * -inf); without grad_entropy g_H = 0.
// A target outside [0, C) that is not ignore_index is never used as an index: its row gets a
// NaN logp and a NaN gradient row. Offsets are int64 throughout; nothing syncs with the host.
#include <cstdint>

#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "rows.cuh"
#include "thermokern/row_stats.h"
#include "thermokern/token_logprobs_plan.h"

namespace thermokern::cuda {

namespace {

template <typename scalar_t, typename acc_t, int VEC>
__global__ void token_logprobs_fwd_kernel(RowsView<scalar_t, acc_t> a,
                                          const int64_t* __restrict__ target,  // (N,)
                                          int64_t ignore_index,
                                          acc_t* __restrict__ logp,  // (N,)
                                          StatsView<acc_t> out) {
  const int64_t n_vec = a.C / VEC;  // VEC > 1 only when C % VEC == 0
  for (int64_t row = blockIdx.x; row < a.N; row += gridDim.x) {
    const acc_t inv_t = a.inv_t_of(row);
    // The target and its logit, read by thread 0 ahead of the sweep (an invalid target: no read).
    int64_t y = ignore_index;
    acc_t xy = 0;
    if (threadIdx.x == 0) {
      y = target[row];
      if (y != ignore_index && y >= 0 && y < a.C) xy = static_cast<acc_t>(a.row(row)[y]);
    }
    const RowStats<acc_t> r = block_row_stats<acc_t, VEC>(a.row(row), n_vec, inv_t);
    if (threadIdx.x == 0) {
      const acc_t ln = row_stats_log_norm(r);
      out.store(row, row_stats_entropy(r), r.m, ln);
      acc_t lp = 0;
      if (y != ignore_index) lp = (y < 0 || y >= a.C) ? acc_t(NAN) : (xy - r.m) * inv_t - ln;
      logp[row] = lp;
    }
  }
}

template <typename scalar_t, typename acc_t, int VEC>
__global__ void token_logprobs_bwd_kernel(const acc_t* __restrict__ grad_logp,     // (N,)
                                          const acc_t* __restrict__ grad_entropy,  // (N,) or null
                                          RowsView<scalar_t, acc_t> a,
                                          const int64_t* __restrict__ target,  // (N,)
                                          StatsView<const acc_t> st,
                                          scalar_t* grad_x,  // (N, C) contig, may be the logits
                                          int64_t ignore_index) {
  const int64_t n_vec = a.C / VEC;
  for (int64_t row = blockIdx.x; row < a.N; row += gridDim.x) {
    scalar_t* grow = grad_x + row * a.C;
    const int64_t y = target[row];
    if (fill_dead_target_row<acc_t, VEC>(grow, n_vec, y, ignore_index, a.C)) continue;
    const acc_t inv_t = a.inv_t_of(row);
    const acc_t gl = grad_logp[row];
    // p_j (g_l + g_H (log p_j + H)) = p_j (w0 + g_H log p_j)
    acc_t gh = 0, w0 = gl;
    if (grad_entropy != nullptr) {
      gh = grad_entropy[row];
      w0 += gh * st.entropy[row];
    }
    const acc_t neg_k = -inv_t;
    logp_row_sweep<acc_t, VEC>(a.row(row), grow, n_vec, inv_t, st.shift[row], st.log_norm[row],
                               [&](int64_t j, acc_t lp) {
      // p = 0 at -inf: no 0 * (-inf)
      acc_t t = (lp == -INFINITY) ? acc_t(0) : tk_exp(lp) * (w0 + gh * lp);
      if (j == y) t -= gl;
      return neg_k * t;
    });
  }
}

void launch_fwd(const TokenLogprobsFwdPlan& p) {
  launch_row_op(p.rows, nullptr, [&](auto launch) {
    using L = decltype(launch);
    launch(token_logprobs_fwd_kernel<typename L::scalar, typename L::acc, L::vec>, launch.rows,
           p.target.const_data_ptr<int64_t>(), p.ignore_index,
           p.logp.mutable_data_ptr<typename L::acc>(), L::stats_out(p.out));
  });
}

void launch_bwd(const TokenLogprobsBwdPlan& p) {
  launch_row_op(p.bwd.rows, p.bwd.grad_x.const_data_ptr(), [&](auto launch) {
    using L = decltype(launch);
    using acc_t = typename L::acc;
    const acc_t* g_h = p.grad_entropy.defined() ? p.grad_entropy.const_data_ptr<acc_t>() : nullptr;
    launch(token_logprobs_bwd_kernel<typename L::scalar, acc_t, L::vec>,
           p.bwd.grad.const_data_ptr<acc_t>(), g_h, launch.rows, p.target.const_data_ptr<int64_t>(),
           L::stats_in(p.bwd.stats), p.bwd.grad_x.mutable_data_ptr<typename L::scalar>(),
           p.ignore_index);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(thermokern, CUDA, m) {
  TK_IMPL_ROW_OP(m, token_logprobs);
}

}  // namespace thermokern::cuda

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

#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "rows.cuh"
#include "thermokern/row_stats.h"
#include "thermokern/softmax_entropy_plan.h"

namespace thermokern::cuda {

namespace {

template <typename scalar_t, typename acc_t, int VEC>
__global__ void softmax_entropy_fwd_kernel(RowsView<scalar_t, acc_t> a, StatsView<acc_t> out) {
  const int64_t n_vec = a.C / VEC;  // VEC > 1 only when C % VEC == 0
  for (int64_t row = blockIdx.x; row < a.N; row += gridDim.x) {
    const RowStats<acc_t> r = block_row_stats<acc_t, VEC>(a.row(row), n_vec, a.inv_t_of(row));
    if (threadIdx.x == 0) out.store(row, row_stats_entropy(r), r.m, row_stats_log_norm(r));
  }
}

template <typename scalar_t, typename acc_t, int VEC>
__global__ void softmax_entropy_bwd_kernel(const acc_t* __restrict__ grad,  // (N,)
                                           RowsView<scalar_t, acc_t> a, StatsView<const acc_t> st,
                                           scalar_t* grad_x) {  // (N, C) contig, may be the logits
  const int64_t n_vec = a.C / VEC;
  for (int64_t row = blockIdx.x; row < a.N; row += gridDim.x) {
    const acc_t inv_t = a.inv_t_of(row);
    const acc_t coef = -grad[row] * inv_t;
    const acc_t h = st.entropy[row];
    logp_row_sweep<acc_t, VEC>(a.row(row), grad_x + row * a.C, n_vec, inv_t, st.shift[row],
                               st.log_norm[row], [&](int64_t, acc_t logp) {
      return (logp == -INFINITY) ? acc_t(0) : coef * tk_exp(logp) * (logp + h);
    });
  }
}

void launch_fwd(const SoftmaxEntropyFwdPlan& p) {
  launch_row_op(p.rows, nullptr, [&](auto launch) {
    using L = decltype(launch);
    launch(softmax_entropy_fwd_kernel<typename L::scalar, typename L::acc, L::vec>, launch.rows,
           L::stats_out(p.out));
  });
}

void launch_bwd(const RowsBwdPlan& p) {
  launch_row_op(p.rows, p.grad_x.const_data_ptr(), [&](auto launch) {
    using L = decltype(launch);
    launch(softmax_entropy_bwd_kernel<typename L::scalar, typename L::acc, L::vec>,
           p.grad.const_data_ptr<typename L::acc>(), launch.rows, L::stats_in(p.stats),
           p.grad_x.mutable_data_ptr<typename L::scalar>());
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(thermokern, CUDA, m) {
  TK_IMPL_ROW_OP(m, softmax_entropy);
}

}  // namespace thermokern::cuda

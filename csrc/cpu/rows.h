// Host side shared by the CPU row ops (softmax_entropy.cpp, cross_entropy.cpp,
// token_logprobs.cpp): the kernel arguments from their plans (thermokern/softmax_entropy_plan.h),
// the parallel loop over rows and the check of target values.
#pragma once

#include <algorithm>
#include <cstdint>

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "softmax_entropy_args.h"
#include "thermokern/softmax_entropy_plan.h"

namespace thermokern::cpu {

// [Note: grain size]
// at::parallel_for splits rows across threads. A task of ~64K elements (256 KB of fp32)
// amortises the thread hand-off (a few microseconds) while still giving every core work for
// N x C = 4096 x 32000; rows are never split, so small-N, huge-C inputs use fewer threads.
inline int64_t row_grain(int64_t C) { return std::max<int64_t>(1, (int64_t{1} << 16) / C); }

template <typename Args>
void run_rows(void (*fn)(const Args&, int64_t, int64_t), const Args& a, int64_t rows) {
  if (rows == 0) return;
  at::parallel_for(0, rows, row_grain(a.C), [&](int64_t begin, int64_t end) { fn(a, begin, end); });
}

// The targets of the target-indexed row ops (cross_entropy, token_logprobs), checked before
// any kernel runs: a clear error naming the row instead of a NaN output (the kernels still
// never read out of bounds). target: contiguous int64.
inline void check_target_values(const at::Tensor& target, int64_t C, int64_t ignore_index) {
  const int64_t* p = target.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < target.numel(); ++i) {
    const int64_t y = p[i];
    TORCH_CHECK_VALUE(y == ignore_index || (y >= 0 && y < C), "target: class index ", y,
                      " at row ", i, " is outside [0, ", C, ") and is not ignore_index (",
                      ignore_index, ")");
  }
}

// The rows and temperatures of a plan.
inline void set_rows(SoftmaxEntropyArgs& a, const RowsPlan& p) {
  a.dtype = p.logits.scalar_type();
  a.x = p.logits.const_data_ptr();
  a.C = p.C;
  a.row_stride = p.row_stride;
  a.inv_t = p.inv_t.const_data_ptr();
  a.inv_t_stride = p.inv_t_stride;
}

// The statistics the forwards write.
inline void set_row_stats_out(SoftmaxEntropyArgs& a, const RowStatsTensors& out) {
  a.entropy = out.entropy.mutable_data_ptr();
  a.shift = out.shift.mutable_data_ptr();
  a.log_norm = out.log_norm.mutable_data_ptr();
}

// Everything of a backward but the op's own scalars.
inline void set_rows_bwd(SoftmaxEntropyArgs& a, const RowsBwdPlan& p) {
  set_rows(a, p.rows);
  a.grad = p.grad.const_data_ptr();
  a.entropy = const_cast<void*>(p.stats.entropy.const_data_ptr());  // read only
  a.shift = const_cast<void*>(p.stats.shift.const_data_ptr());
  a.log_norm = const_cast<void*>(p.stats.log_norm.const_data_ptr());
  a.grad_x = p.grad_x.mutable_data_ptr();
}

}  // namespace thermokern::cpu

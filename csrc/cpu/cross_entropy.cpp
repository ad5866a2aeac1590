// cross_entropy: CPU implementation (TORCH_LIBRARY_IMPL(thermokern, CPU)): the launches of the
// entry points of thermokern/cross_entropy_plan.h (shared with CUDA) on the kernels of
// cross_entropy_kernel.h.
#include <cstdint>

#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "cross_entropy_args.h"
#include "rows.h"
#include "thermokern/cross_entropy_plan.h"

namespace thermokern::cpu {

namespace {

void set_loss_args(CrossEntropyArgs& a, const at::Tensor& target, const CrossEntropyScalars& s) {
  a.target = target.const_data_ptr<int64_t>();
  a.entropy_weight = s.entropy_weight;
  a.label_smoothing = s.label_smoothing;
  a.ignore_index = s.ignore_index;
  a.z_loss_weight = s.z_loss_weight;
}

void launch_fwd(const CrossEntropyFwdPlan& p) {
  check_target_values(p.target, p.rows.C, p.scalars.ignore_index);
  CrossEntropyArgs a;
  set_rows(a, p.rows);
  set_row_stats_out(a, p.out);
  set_loss_args(a, p.target, p.scalars);
  a.loss = p.loss.mutable_data_ptr();
  run_rows(TK_ISA_VARIANT(cross_entropy_fwd), a, p.rows.rows);
}

void launch_bwd(const CrossEntropyBwdPlan& p) {
  CrossEntropyArgs a;
  set_rows_bwd(a, p.bwd);
  set_loss_args(a, p.target, p.scalars);
  run_rows(TK_ISA_VARIANT(cross_entropy_bwd), a, p.bwd.rows.rows);
}

}  // namespace

TORCH_LIBRARY_IMPL(thermokern, CPU, m) {
  TK_IMPL_ROW_OP(m, cross_entropy);
}

}  // namespace thermokern::cpu

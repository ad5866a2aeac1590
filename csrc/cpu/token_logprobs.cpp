// token_logprobs: CPU implementation (TORCH_LIBRARY_IMPL(thermokern, CPU)): the launches of the
// entry points of thermokern/token_logprobs_plan.h (shared with CUDA) on the kernels of
// token_logprobs_kernel.h.
#include <torch/library.h>

#include "rows.h"
#include "thermokern/token_logprobs_plan.h"
#include "token_logprobs_args.h"

namespace thermokern::cpu {

namespace {

// The targets, checked before any kernel runs (both ops raise on a class outside [0, C) that
// is not ignore_index; see check_target_values).
TokenLogprobsArgs target_args(const at::Tensor& target, int64_t C, int64_t ignore_index) {
  check_target_values(target, C, ignore_index);
  TokenLogprobsArgs a;
  a.target = target.const_data_ptr<int64_t>();
  a.ignore_index = ignore_index;
  return a;
}

void launch_fwd(const TokenLogprobsFwdPlan& p) {
  TokenLogprobsArgs a = target_args(p.target, p.rows.C, p.ignore_index);
  set_rows(a, p.rows);
  set_row_stats_out(a, p.out);
  a.logp = p.logp.mutable_data_ptr();
  run_rows(TK_ISA_VARIANT(token_logprobs_fwd), a, p.rows.rows);
}

void launch_bwd(const TokenLogprobsBwdPlan& p) {
  const RowsPlan& rows = p.bwd.rows;
  TokenLogprobsArgs a = target_args(p.target, rows.C, p.ignore_index);
  set_rows_bwd(a, p.bwd);
  a.grad_entropy = p.grad_entropy.defined() ? p.grad_entropy.const_data_ptr() : nullptr;
  run_rows(TK_ISA_VARIANT(token_logprobs_bwd), a, rows.rows);
}

}  // namespace

TORCH_LIBRARY_IMPL(thermokern, CPU, m) {
  TK_IMPL_ROW_OP(m, token_logprobs);
}

}  // namespace thermokern::cpu

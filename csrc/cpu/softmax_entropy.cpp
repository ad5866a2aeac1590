// softmax_entropy: CPU implementation (TORCH_LIBRARY_IMPL(thermokern, CPU)): the launches of the
// entry points of thermokern/softmax_entropy_plan.h (shared with CUDA) on the kernels of
// softmax_entropy_kernel.h.
#include <torch/library.h>

#include "rows.h"
#include "softmax_entropy_args.h"
#include "thermokern/softmax_entropy_plan.h"

namespace thermokern::cpu {

namespace {

void launch_fwd(const SoftmaxEntropyFwdPlan& p) {
  SoftmaxEntropyArgs a;
  set_rows(a, p.rows);
  set_row_stats_out(a, p.out);
  run_rows(TK_ISA_VARIANT(softmax_entropy_fwd), a, p.rows.rows);
}

void launch_bwd(const RowsBwdPlan& p) {
  SoftmaxEntropyArgs a;
  set_rows_bwd(a, p);
  run_rows(TK_ISA_VARIANT(softmax_entropy_bwd), a, p.rows.rows);
}

}  // namespace

TORCH_LIBRARY_IMPL(thermokern, CPU, m) {
  TK_IMPL_ROW_OP(m, softmax_entropy);
}

}  // namespace thermokern::cpu

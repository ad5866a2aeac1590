// partition_fwd / partition_bwd: CPU implementation (TORCH_LIBRARY_IMPL(thermokern, CPU)): the
// launches of the entry points of thermokern/partition_plan.h (shared with CUDA) on the kernels
// of partition_kernel.h.
#include <algorithm>
#include <cstdint>

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "partition_args.h"
#include "thermokern/partition_plan.h"

namespace thermokern::cpu {

namespace {

PartitionArgs base_args(const PartitionPlan& p) {
  PartitionArgs a;
  a.dtype = p.x.scalar_type();
  a.x = p.x.const_data_ptr();
  a.weight = p.weight.has_value() ? p.weight->const_data_ptr() : nullptr;
  a.mask = p.mask.has_value() ? p.mask->const_data_ptr<bool>() : nullptr;
  std::copy(p.weight_strides, p.weight_strides + 3, a.ws);
  std::copy(p.mask_strides, p.mask_strides + 3, a.ms);
  a.O = p.O;
  a.R = p.R;
  a.I = p.I;
  a.scale = p.scale.const_data_ptr();
  a.scale_stride = p.scale_stride;
  a.negate = p.negate;
  return a;
}

// Tasks of ~64K elements each (see [Note: grain size] in rows.h).
int64_t grain(int64_t elements_per_task) {
  return std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(1, elements_per_task));
}

void run_tasks(PartitionFn fn, const PartitionArgs& a, int64_t tasks, int64_t per_task) {
  if (tasks == 0) return;
  at::parallel_for(0, tasks, grain(per_task), [&](int64_t begin, int64_t end) { fn(a, begin, end); });
}

void launch_fwd(const PartitionFwdPlan& p) {
  PartitionArgs a = base_args(p.in);
  a.moments = p.moments;
  a.shift = p.shift.mutable_data_ptr();
  a.sum = p.sum.mutable_data_ptr();
  a.m1 = p.moments ? p.m1.mutable_data_ptr() : nullptr;
  a.m2 = p.moments ? p.m2.mutable_data_ptr() : nullptr;
  const int64_t per_task = a.R * (a.I == 1 ? 1 : std::min<int64_t>(a.I, 128));  // column tiles
  const Isa isa = active_isa();  // the task count depends on the ISA's vector width
  run_tasks(TK_ISA_VARIANT_FOR(isa, partition_fwd), a, TK_ISA_VARIANT_FOR(isa, partition_fwd_tasks)(a),
            per_task);
}

void launch_bwd(const PartitionBwdPlan& p) {
  const at::Tensor coef_t = p.coef.t().contiguous();  // (n_coef, outputs): unit stride per term
  PartitionArgs a = base_args(p.in);
  a.shift = const_cast<void*>(p.shift.const_data_ptr());
  a.log_norm = p.log_norm.const_data_ptr();
  a.coef = coef_t.const_data_ptr();
  a.n_coef = p.coef.size(1);
  a.coef_stride = p.coef.size(0);
  a.grad_x = p.grad_x.mutable_data_ptr();
  a.grad_w = p.weight_grad ? p.grad_w.mutable_data_ptr() : nullptr;
  const int64_t tasks = a.I == 1 ? a.O : a.O * a.R;
  run_tasks(TK_ISA_VARIANT(partition_bwd), a, tasks, a.I == 1 ? a.R : a.I);
}

}  // namespace

TORCH_LIBRARY_IMPL(thermokern, CPU, m) {
  m.impl("partition_fwd", &partition_fwd_op<launch_fwd>);
  m.impl("partition_bwd", &partition_bwd_op<launch_bwd>);
}

}  // namespace thermokern::cpu

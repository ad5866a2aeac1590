// sgld_step_: CPU implementation (TORCH_LIBRARY_IMPL(thermokern, CPU)): the launch of the entry
// point of thermokern/sgld_plan.h (shared with CUDA) on the kernel of sgld_kernel.h.
//
// One parallel region per call, whatever the number of tensors: the tensors' Philox counters
// are concatenated into one work space that at::parallel_for splits ([Note: the SGLD CPU
// kernel] in sgld_kernel.h).
#include <cstdint>

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "sgld_args.h"
#include "thermokern/plan.h"
#include "thermokern/sgld_plan.h"

namespace thermokern::cpu {

namespace {

// [Note: SGLD grain size]
// The same grain as langevin_step ([Note: Langevin grain size]): 16K counters (64K elements,
// 256 KB of each fp32 tensor) per task keep the hand-off (a few microseconds) below 2% of the
// task, and small tensors share a task with their neighbours instead of costing one each.
constexpr int64_t kSgldGrain = int64_t{1} << 14;

void launch(const SgldPlan& p) {
  SgldArgs a;
  a.dtype = p.dtype;
  a.seed = cpu_u64(p.seed);
  a.offset = cpu_u64(p.offset);
  a.lr = p.lr;
  a.noise_std = p.noise_std;
  a.weight_decay = p.weight_decay;
  a.tensors = p.table.data();
  a.n_tensors = static_cast<int64_t>(p.table.size());
  const SgldFn fn = TK_ISA_VARIANT(sgld_step);
  at::parallel_for(0, p.units, kSgldGrain, [&](int64_t begin, int64_t end) { fn(a, begin, end); });
}

// A work unit of the CPU kernel is one Philox counter.
constexpr auto sgld_step_cpu_ = &sgld_step_op<1, launch>;

}  // namespace

TORCH_LIBRARY_IMPL(thermokern, CPU, m) { m.impl("sgld_step_", sgld_step_cpu_); }
// A sparse grad selects this key: the checks then name it (instead of "no kernel").
TORCH_LIBRARY_IMPL(thermokern, SparseCPU, m) { m.impl("sgld_step_", sgld_step_cpu_); }

}  // namespace thermokern::cpu

// sgld_step_: CPU implementation (TORCH_LIBRARY_IMPL(thermokern, CPU)).
//
// One parallel region per call, whatever the number of tensors: the tensors' Philox counters
// are concatenated into one work space that at::parallel_for splits ([Note: the SGLD CPU
// kernel] in sgld_kernel.h). Non-contiguous params are updated through a contiguous copy that
// is written back; non-contiguous grads are read through a contiguous copy.
#include <cstdint>
#include <vector>

#include <ATen/MemoryOverlap.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "isa.h"
#include "thermokern/sgld.h"

namespace thermokern::cpu {

namespace {

// [Note: SGLD grain size]
// The same grain as langevin_step ([Note: Langevin grain size]): 16K counters (64K elements,
// 256 KB of each fp32 tensor) per task keep the hand-off (a few microseconds) below 2% of the
// task, and small tensors share a task with their neighbours instead of costing one each.
constexpr int64_t kSgldGrain = int64_t{1} << 14;

void sgld_step_cpu_(at::TensorList params, at::TensorList grads, const at::Tensor& seed,
                    const at::Tensor& offset, at::IntArrayRef counter_starts, double lr,
                    double noise_std, double weight_decay) {
  check_sgld(params, grads, seed, offset, counter_starts, lr, noise_std, weight_decay);
  if (params.empty()) return;
  const size_t n = params.size();
  std::vector<SgldTensor> table;
  table.reserve(n);
  std::vector<at::Tensor> keep;  // contiguous copies of grads and params, alive for the call
  std::vector<std::pair<at::Tensor, at::Tensor>> write_back;  // (param, its contiguous copy)
  int64_t work = 0;
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& p = params[i];
    const at::Tensor& g = grads[i];
    if (p.numel() == 0) continue;
    at::assert_no_internal_overlap(p);
    // grad may be the param itself (the gradient of |p|^2 / 2), not a shifted view of it.
    at::assert_no_partial_overlap(p, g);
    at::Tensor pc = p;
    if (!p.is_contiguous()) {
      pc = p.contiguous();
      write_back.emplace_back(p, pc);
    }
    at::Tensor gc = g.is_same(p) ? pc : g.contiguous();
    SgldTensor t;
    t.param = pc.data_ptr();
    t.grad = gc.const_data_ptr();
    t.numel = p.numel();
    t.counter_start = static_cast<uint64_t>(counter_starts[i]);
    t.work_begin = work;
    work += (t.numel + 3) / 4;
    table.push_back(t);
    keep.push_back(std::move(pc));
    keep.push_back(std::move(gc));
  }
  if (table.empty()) return;
  SgldArgs a;
  a.dtype = params[0].scalar_type();
  a.seed = static_cast<uint64_t>(*seed.const_data_ptr<int64_t>());
  a.offset = static_cast<uint64_t>(*offset.const_data_ptr<int64_t>());
  a.lr = lr;
  a.noise_std = noise_std;
  a.weight_decay = weight_decay;
  a.tensors = table.data();
  a.n_tensors = static_cast<int64_t>(table.size());
  const SgldFn fn = sgld_kernel();
  at::parallel_for(0, work, kSgldGrain, [&](int64_t begin, int64_t end) { fn(a, begin, end); });
  for (auto& [p, pc] : write_back) p.copy_(pc);
}

}  // namespace

TORCH_LIBRARY_IMPL(thermokern, CPU, m) { m.impl("sgld_step_", &sgld_step_cpu_); }
// A sparse grad selects this key: the checks then name it (instead of "no kernel").
TORCH_LIBRARY_IMPL(thermokern, SparseCPU, m) { m.impl("sgld_step_", &sgld_step_cpu_); }

}  // namespace thermokern::cpu

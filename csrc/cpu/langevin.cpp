// langevin_step: CPU implementation (TORCH_LIBRARY_IMPL(thermokern, CPU)): the launches of the
// entry points of thermokern/langevin_plan.h (shared with CUDA) on the kernels of
// langevin_kernel.h.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "langevin_args.h"
#include "thermokern/langevin_plan.h"

namespace thermokern::cpu {

namespace {

// [Note: Langevin grain size]
// The Philox counters (4 elements each) are cut into tasks of 16K counters: 64K elements,
// 256 KB of each fp32 tensor and ~0.1 ms of work on one core, so taking a task (one atomic
// increment) costs nothing. The threads of at::parallel_for take tasks from a shared counter
// until none is left, rather than one fixed half each: on a machine shared with other
// processes a thread that loses its core for a while no longer holds the whole step back
// (float32, 16M elements, 2 threads: the median went from ~18 ms to the ~13 ms that the
// undisturbed runs reach).
constexpr int64_t kCounterGrain = int64_t{1} << 14;

int64_t counters_of(int64_t n) { return (n + 3) / 4; }

void run_counters(LangevinFn fn, const LangevinArgs& a) {
  const int64_t n_ctr = counters_of(a.n);
  const int64_t n_tasks = (n_ctr + kCounterGrain - 1) / kCounterGrain;
  if (n_tasks <= 1 || at::get_num_threads() == 1 || at::in_parallel_region()) {
    if (n_ctr > 0) fn(a, 0, n_ctr);
    return;
  }
  std::atomic<int64_t> next{0};
  const int64_t workers = std::min<int64_t>(at::get_num_threads(), n_tasks);
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    for (int64_t t = next.fetch_add(1); t < n_tasks; t = next.fetch_add(1)) {
      fn(a, t * kCounterGrain, std::min(n_ctr, (t + 1) * kCounterGrain));
    }
  });
}

LangevinArgs args_of(const at::Tensor& x, const at::Tensor& grad, const at::Tensor& seed,
                     const at::Tensor& offset, const LangevinScalars& scalars, int64_t n) {
  LangevinArgs a;
  static_cast<LangevinScalars&>(a) = scalars;
  a.dtype = x.scalar_type();
  a.n = n;
  a.seed = cpu_u64(seed);
  a.offset = cpu_u64(offset);
  a.x = x.const_data_ptr();
  a.grad = grad.const_data_ptr();
  return a;
}

// langevin_step and langevin_step_: the step of p.x into p.out.
void launch_fwd(const LangevinFwdPlan& p) {
  LangevinArgs a = args_of(p.x, p.grad, p.seed, p.offset, p.scalars, p.n);
  a.out = p.out.data_ptr();
  run_counters(TK_ISA_VARIANT(langevin_fwd), a);
}

void launch_bwd(const LangevinBwdPlan& p) {
  LangevinArgs a = args_of(p.x, p.grad, p.seed, p.offset, p.scalars, p.n);
  a.grad_out = p.grad_out.const_data_ptr();
  a.grad_x = p.grad_x.data_ptr();
  a.grad_grad = p.grad_grad.data_ptr();
  run_counters(TK_ISA_VARIANT(langevin_bwd), a);
}

}  // namespace

std::vector<uint32_t> langevin_words(uint64_t seed, uint64_t offset, int64_t n) {
  TORCH_CHECK_VALUE(n >= 0, "n: expected a count >= 0, got ", n);
  std::vector<uint32_t> out(static_cast<size_t>(n) * 4);
  LangevinArgs a;
  a.dtype = at::kFloat;
  a.seed = seed;
  a.offset = offset;
  a.n = 4 * n;
  a.out = out.data();
  run_counters(TK_ISA_VARIANT(langevin_words), a);
  return out;
}

TORCH_LIBRARY_IMPL(thermokern, CPU, m) {
  m.impl("langevin_step", &langevin_step_op<launch_fwd>);
  m.impl("langevin_step_", &langevin_step_inplace_op<launch_fwd>);
  m.impl("langevin_step_bwd", &langevin_step_bwd_op<launch_bwd>);
}

}  // namespace thermokern::cpu

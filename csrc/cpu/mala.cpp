// mala_accept and mala_proposal: CPU implementation (TORCH_LIBRARY_IMPL(thermokern, CPU)): the
// launches of the entry points of thermokern/mala_plan.h (shared with CUDA) on the kernels of
// mala_kernel.h.
#include <algorithm>
#include <cstdint>

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "mala_args.h"
#include "thermokern/mala_plan.h"

namespace thermokern::cpu {

namespace {

// [Note: MALA grain size]
// at::parallel_for splits the chains; a task should carry ~32K elements (4 reads of 128 KB in
// float32, ~20 us) so that the hand-off (a few us) stays small, and never less than one chain.
// 4096 chains of 2-D toy samples are then one task: they take ~80 us in all (19 ns a chain,
// Philox and the log series dominate).
constexpr int64_t kGrainElements = int64_t{1} << 15;

MalaLayoutArgs layout_args(const MalaLayout& l, const at::Tensor& x) {
  MalaLayoutArgs a;
  a.dtype = x.scalar_type();
  a.chains = l.chains;
  a.numel = l.numel;
  a.row = l.row;
  a.seed = cpu_u64(l.seed);
  a.offset = cpu_u64(l.offset);
  return a;
}

void launch(const MalaPlan& p) {
  MalaArgs a;
  static_cast<MalaLayoutArgs&>(a) = layout_args(p.layout, p.x);
  a.step_size = p.step_size;
  a.temperature = p.temperature;
  if (p.chain_step.defined()) {
    a.chain_step = p.chain_step.values.const_data_ptr();
    a.chain_step_stride = p.chain_step.stride;
  }
  if (p.chain_temp.defined()) {
    a.chain_temp = p.chain_temp.values.const_data_ptr();
    a.chain_temp_stride = p.chain_temp.stride;
  }
  a.x = p.x.const_data_ptr();
  a.x_prop = p.x_prop.const_data_ptr();
  a.grad = p.grad.const_data_ptr();
  a.grad_prop = p.grad_prop.const_data_ptr();
  a.energy = p.energy.const_data_ptr();
  a.energy_prop = p.energy_prop.const_data_ptr();
  a.x_new = p.x_new.data_ptr();
  a.accepted = p.accepted.data_ptr<bool>();
  a.log_alpha = p.log_alpha.data_ptr();
  const int64_t grain = std::max<int64_t>(1, kGrainElements / std::max<int64_t>(a.row, 1));
  const MalaFn fn = TK_ISA_VARIANT(mala_accept);
  at::parallel_for(0, p.layout.chains, grain, [&](int64_t begin, int64_t end) { fn(a, begin, end); });
}

// at::parallel_for's split of the counters, at least 16K a thread (the Langevin kernel's
// grain). Not langevin.cpp's shared task counter ([Note: Langevin grain size]): that measured
// 5 % slower for this kernel on the quiet 2-core machine (1024 x 4096 float32, per-chain
// parameters: 2.08 against 1.98 ms, medians of nine alternating runs).
constexpr int64_t kProposalGrain = int64_t{1} << 14;

void launch_proposal(const MalaProposalPlan& p) {
  MalaProposalArgs a;
  static_cast<MalaLayoutArgs&>(a) = layout_args(p.layout, p.x);
  a.x = p.x.const_data_ptr();
  a.grad = p.grad.const_data_ptr();
  a.out = p.out.data_ptr();
  a.step = p.step.values.const_data_ptr();
  a.temp = p.temp.values.const_data_ptr();
  a.step_stride = p.step.stride;
  a.temp_stride = p.temp.stride;
  const MalaProposalFn fn = TK_ISA_VARIANT(mala_proposal);
  at::parallel_for(0, (p.layout.numel + 3) / 4, kProposalGrain, [&](int64_t b, int64_t e) { fn(a, b, e); });
}

}  // namespace

TORCH_LIBRARY_IMPL(thermokern, CPU, m) {
  m.impl("mala_accept", &mala_accept_op<launch>);
  m.impl("mala_proposal", &mala_proposal_op<launch_proposal>);
}

}  // namespace thermokern::cpu

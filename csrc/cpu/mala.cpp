// mala_accept: CPU implementation (TORCH_LIBRARY_IMPL(thermokern, CPU)).
#include <algorithm>
#include <cstdint>
#include <tuple>

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "isa.h"
#include "mala.h"
#include "thermokern/checks.h"
#include "thermokern/mala_checks.h"

namespace thermokern::cpu {

namespace {

// [Note: MALA grain size]
// at::parallel_for splits the chains; a task should carry ~32K elements (4 reads of 128 KB in
// float32, ~20 us) so that the hand-off (a few us) stays small, and never less than one chain.
// 4096 chains of 2-D toy samples are then one task: they take ~80 us in all (19 ns a chain,
// Philox and the log series dominate).
constexpr int64_t kGrainElements = int64_t{1} << 15;

MalaFn mala_kernel() {
  switch (active_isa()) {
#if defined(__x86_64__)
    case Isa::Avx512: return mala_accept_AVX512;
    case Isa::Avx2: return mala_accept_AVX2;
#endif
    default: return mala_accept_DEFAULT;
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> mala_accept_cpu(
    const at::Tensor& x, const at::Tensor& x_prop, const at::Tensor& grad,
    const at::Tensor& grad_prop, const at::Tensor& energy, const at::Tensor& energy_prop,
    const at::Tensor& seed, const at::Tensor& offset, double step_size, double temperature) {
  check_mala_accept(x, x_prop, grad, grad_prop, energy, energy_prop, seed, offset, step_size,
                    temperature);
  const int64_t chains = x.size(0);
  const auto acc = acc_dtype(x.scalar_type());
  at::Tensor x_new = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  at::Tensor accepted = at::empty({chains}, x.options().dtype(at::kBool));
  at::Tensor log_alpha = at::empty({chains}, x.options().dtype(acc));
  maybe_poison(x_new);
  maybe_poison(log_alpha);
  if (chains == 0) return {x_new, accepted, log_alpha};
  const at::Tensor xc = x.contiguous(), xpc = x_prop.contiguous();
  const at::Tensor gc = grad.contiguous(), gpc = grad_prop.contiguous();
  const at::Tensor ec = energy.contiguous(), epc = energy_prop.contiguous();
  MalaArgs a;
  a.dtype = x.scalar_type();
  a.chains = chains;
  a.numel = x.numel();
  a.row = a.numel / chains;
  a.seed = static_cast<uint64_t>(*seed.const_data_ptr<int64_t>());
  a.offset = static_cast<uint64_t>(*offset.const_data_ptr<int64_t>());
  a.step_size = step_size;
  a.temperature = temperature;
  a.x = xc.const_data_ptr();
  a.x_prop = xpc.const_data_ptr();
  a.grad = gc.const_data_ptr();
  a.grad_prop = gpc.const_data_ptr();
  a.energy = ec.const_data_ptr();
  a.energy_prop = epc.const_data_ptr();
  a.x_new = x_new.data_ptr();
  a.accepted = accepted.data_ptr<bool>();
  a.log_alpha = log_alpha.data_ptr();
  const int64_t grain = std::max<int64_t>(1, kGrainElements / std::max<int64_t>(a.row, 1));
  const MalaFn fn = mala_kernel();
  at::parallel_for(0, chains, grain, [&](int64_t begin, int64_t end) { fn(a, begin, end); });
  return {x_new, accepted, log_alpha};
}

}  // namespace

TORCH_LIBRARY_IMPL(thermokern, CPU, m) { m.impl("mala_accept", &mala_accept_cpu); }

}  // namespace thermokern::cpu

// partition_fwd / partition_bwd: CPU implementation (TORCH_LIBRARY_IMPL(thermokern, CPU)).
// The kernels are in partition_kernel.h (one build per ISA, see isa.h).
#include <algorithm>
#include <cstdint>
#include <optional>
#include <tuple>

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "isa.h"
#include "memory.h"
#include "thermokern/checks.h"

namespace thermokern::cpu {

namespace {

PartitionArgs base_args(const at::Tensor& x, const std::optional<at::Tensor>& weight,
                        const std::optional<at::Tensor>& mask, const at::Tensor& scale,
                        bool negate) {
  PartitionArgs a;
  a.dtype = x.scalar_type();
  a.x = x.const_data_ptr();
  a.weight = weight.has_value() ? weight->const_data_ptr() : nullptr;
  a.mask = mask.has_value() ? mask->const_data_ptr<bool>() : nullptr;
  for (int d = 0; d < 3; ++d) {
    a.ws[d] = weight.has_value() ? weight->stride(d) : 0;
    a.ms[d] = mask.has_value() ? mask->stride(d) : 0;
  }
  a.O = x.size(0);
  a.R = x.size(1);
  a.I = x.size(2);
  a.scale = scale.const_data_ptr();
  a.scale_stride = scale.size(0) == 1 ? 0 : 1;
  a.negate = negate;
  return a;
}

// Tasks of ~64K elements each (see [Note: grain size] in entropy.cpp).
int64_t grain(int64_t elements_per_task) {
  return std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(1, elements_per_task));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> partition_fwd_cpu(
    const at::Tensor& x, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& mask, const at::Tensor& scale, bool negate,
    int64_t moments) {
  check_partition_fwd(x, weight, mask, scale, moments);
  const int64_t outputs = x.size(0) * x.size(2);
  const auto opts = x.options().dtype(acc_dtype(x.scalar_type()));
  at::Tensor shift = at::empty({outputs}, opts), sum = at::empty({outputs}, opts);
  at::Tensor m1 = at::empty({moments ? outputs : 0}, opts);
  at::Tensor m2 = at::empty({moments ? outputs : 0}, opts);
  for (at::Tensor* t : {&shift, &sum, &m1, &m2}) maybe_poison(*t);
  PartitionArgs a = base_args(x, weight, mask, scale, negate);
  a.moments = moments;
  a.shift = shift.mutable_data_ptr();
  a.sum = sum.mutable_data_ptr();
  a.m1 = moments ? m1.mutable_data_ptr() : nullptr;
  a.m2 = moments ? m2.mutable_data_ptr() : nullptr;
  const Kernels& k = kernels();
  const int64_t tasks = k.partition_fwd_tasks(a);
  if (tasks > 0) {
    const int64_t per_task = a.R * (a.I == 1 ? 1 : std::min<int64_t>(a.I, 128));  // column tiles
    at::parallel_for(0, tasks, grain(per_task),
                     [&](int64_t begin, int64_t end) { k.partition_fwd(a, begin, end); });
  }
  return {shift, sum, m1, m2};
}

std::tuple<at::Tensor, at::Tensor> partition_bwd_cpu(
    const at::Tensor& x, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& mask, const at::Tensor& scale, bool negate,
    const at::Tensor& shift, const at::Tensor& log_norm, const at::Tensor& coef,
    bool weight_grad) {
  check_partition_bwd(x, weight, mask, scale, shift, log_norm, coef, weight_grad);
  at::Tensor grad_x = at::empty(x.sizes(), x.options());
  at::Tensor grad_w = at::empty({weight_grad ? x.numel() : 0}, x.options());
  advise_huge_pages(grad_x);
  maybe_poison(grad_x);
  maybe_poison(grad_w);
  const at::Tensor coef_t = coef.t().contiguous();  // (n_coef, outputs): unit stride per term
  PartitionArgs a = base_args(x, weight, mask, scale, negate);
  a.shift = const_cast<void*>(shift.const_data_ptr());
  a.log_norm = log_norm.const_data_ptr();
  a.coef = coef_t.const_data_ptr();
  a.n_coef = coef.size(1);
  a.coef_stride = coef.size(0);
  a.grad_x = grad_x.mutable_data_ptr();
  a.grad_w = weight_grad ? grad_w.mutable_data_ptr() : nullptr;
  const Kernels& k = kernels();
  const int64_t tasks = a.I == 1 ? a.O : a.O * a.R;
  const int64_t per_task = a.I == 1 ? a.R : a.I;
  if (tasks > 0) {
    at::parallel_for(0, tasks, grain(per_task),
                     [&](int64_t begin, int64_t end) { k.partition_bwd(a, begin, end); });
  }
  return {grad_x, weight_grad ? grad_w.view(x.sizes()) : grad_w};
}

}  // namespace

TORCH_LIBRARY_IMPL(thermokern, CPU, m) {
  m.impl("partition_fwd", &partition_fwd_cpu);
  m.impl("partition_bwd", &partition_bwd_cpu);
}

}  // namespace thermokern::cpu

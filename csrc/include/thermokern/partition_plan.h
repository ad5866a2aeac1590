// Host-side plan of partition_fwd / partition_bwd ([Note: partition statistics] in
// csrc/thermokern.cpp; [Note: host-side plans] in plan.h), used by csrc/cpu/partition.cpp and
// csrc/cuda/partition.cu.
#pragma once

#include <cstdint>
#include <optional>
#include <tuple>
#include <utility>

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include "thermokern/checks.h"
#include "thermokern/plan.h"

namespace thermokern {

// ---- checks --------------------------------------------------------------------------------

inline void check_partition_inputs(const at::Tensor& x, const std::optional<at::Tensor>& weight,
                                   const std::optional<at::Tensor>& mask, const at::Tensor& scale) {
  check_floating(x, "input");
  TORCH_CHECK_VALUE(x.dim() == 3 && x.size(1) > 0 && x.is_contiguous(),
                    "input: expected a contiguous 3-D (outer, reduced, inner) tensor with a "
                    "non-empty reduced dimension, got shape ", x.sizes());
  if (weight.has_value()) {
    // Any strides: a broadcast weight arrives with stride 0 in its broadcast dims, unexpanded.
    check_shape(*weight, x.sizes(), "weight", "input's shape");
    check_dtype(*weight, x.scalar_type(), "weight", "input's dtype");
    check_device(*weight, x.device(), "weight", "input's device");
  }
  if (mask.has_value()) {
    check_shape(*mask, x.sizes(), "mask", "input's shape");
    TORCH_CHECK_TYPE(mask->scalar_type() == at::kBool, "mask: expected a bool tensor, got ",
                     mask->scalar_type());
    check_device(*mask, x.device(), "mask", "input's device");
  }
  const int64_t outputs = x.size(0) * x.size(2);
  TORCH_CHECK_VALUE(scale.dim() == 1 && (scale.size(0) == 1 || scale.size(0) == outputs),
                    "temperature: expected 1 or ", outputs, " scale values, got shape ",
                    scale.sizes());
  TORCH_CHECK_VALUE(scale.is_contiguous(), "temperature: expected a contiguous scale tensor");
  check_device(scale, x.device(), "temperature", "input's device");
  check_dtype(scale, acc_dtype(x.scalar_type()), "temperature", "the scale");
}

inline void check_partition_fwd(const at::Tensor& x, const std::optional<at::Tensor>& weight,
                                const std::optional<at::Tensor>& mask, const at::Tensor& scale,
                                int64_t moments) {
  check_partition_inputs(x, weight, mask, scale);
  TORCH_CHECK_VALUE(moments == 0 || moments == 2, "moments: expected 0 or 2, got ", moments);
}

inline void check_partition_bwd(const at::Tensor& x, const std::optional<at::Tensor>& weight,
                                const std::optional<at::Tensor>& mask, const at::Tensor& scale,
                                const at::Tensor& shift, const at::Tensor& log_norm,
                                const at::Tensor& coef, bool weight_grad) {
  check_partition_inputs(x, weight, mask, scale);
  const int64_t outputs = x.size(0) * x.size(2);
  const auto acc = acc_dtype(x.scalar_type());
  check_vector(shift, outputs, acc, x.device(), "shift", "one value per output");
  check_vector(log_norm, outputs, acc, x.device(), "log_norm", "one value per output");
  TORCH_CHECK_VALUE(shift.is_contiguous(), "shift: expected a contiguous tensor");
  TORCH_CHECK_VALUE(log_norm.is_contiguous(), "log_norm: expected a contiguous tensor");
  TORCH_CHECK_VALUE(coef.dim() == 2 && coef.size(0) == outputs && coef.size(1) >= 1 &&
                        coef.size(1) <= 3 && coef.is_contiguous(),
                    "coef: expected a contiguous (", outputs, ", 1..3) tensor, got shape ",
                    coef.sizes());
  check_dtype(coef, acc, "coef");
  check_device(coef, x.device(), "coef");
  TORCH_CHECK_VALUE(!weight_grad || weight.has_value(), "weight_grad: needs a weight tensor");
}

// ---- plans ---------------------------------------------------------------------------------

// The inputs: x (O, R, I), contiguous, reduced over R; output j = o * I + i. Element (o, r, i)
// of weight is weight[o * weight_strides[0] + r * weight_strides[1] + i * weight_strides[2]], of
// mask likewise (any strides: 0 in broadcast dims; all 0 when absent).
struct PartitionPlan {
  at::Tensor x;
  std::optional<at::Tensor> weight, mask;
  at::Tensor scale;
  bool negate = false;
  int64_t O = 0, R = 0, I = 0, outputs = 0;
  int64_t weight_strides[3] = {0, 0, 0};
  int64_t mask_strides[3] = {0, 0, 0};
  bool dense_wm = true;       // weight and mask contiguous or absent (readable at x's offsets)
  int64_t scale_stride = 0;   // 0: one scale for every output, 1: one per output
};

inline PartitionPlan partition_plan(const at::Tensor& x, const std::optional<at::Tensor>& weight,
                                    const std::optional<at::Tensor>& mask,
                                    const at::Tensor& scale, bool negate) {
  PartitionPlan p;
  p.x = x;
  p.weight = weight;
  p.mask = mask;
  p.scale = scale;
  p.negate = negate;
  p.O = x.size(0);
  p.R = x.size(1);
  p.I = x.size(2);
  p.outputs = p.O * p.I;
  for (int d = 0; d < 3; ++d) {
    p.weight_strides[d] = weight.has_value() ? weight->stride(d) : 0;
    p.mask_strides[d] = mask.has_value() ? mask->stride(d) : 0;
  }
  p.dense_wm = (!weight.has_value() || weight->is_contiguous()) &&
               (!mask.has_value() || mask->is_contiguous());
  p.scale_stride = scale.size(0) == 1 ? 0 : 1;
  return p;
}

struct PartitionFwdPlan {
  PartitionPlan in;
  int64_t moments = 0;
  at::Tensor shift, sum, m1, m2;  // (outputs,) accumulation dtype; m1, m2 empty without moments
};

inline PartitionFwdPlan plan_partition_fwd(const at::Tensor& x,
                                           const std::optional<at::Tensor>& weight,
                                           const std::optional<at::Tensor>& mask,
                                           const at::Tensor& scale, bool negate, int64_t moments) {
  check_partition_fwd(x, weight, mask, scale, moments);
  PartitionPlan in = partition_plan(x, weight, mask, scale, negate);
  const auto opts = x.options().dtype(acc_dtype(x.scalar_type()));
  const int64_t n = in.outputs, n_mom = moments ? in.outputs : 0;
  return {std::move(in), moments, new_output({n}, opts), new_output({n}, opts),
          new_output({n_mom}, opts), new_output({n_mom}, opts)};
}

struct PartitionBwdPlan {
  PartitionPlan in;
  at::Tensor shift, log_norm, coef;  // as checked: contiguous, accumulation dtype
  bool weight_grad = false;
  at::Tensor grad_x;  // x's shape and dtype
  at::Tensor grad_w;  // x's shape and dtype with weight_grad, else empty
};

inline PartitionBwdPlan plan_partition_bwd(const at::Tensor& x,
                                           const std::optional<at::Tensor>& weight,
                                           const std::optional<at::Tensor>& mask,
                                           const at::Tensor& scale, bool negate,
                                           const at::Tensor& shift, const at::Tensor& log_norm,
                                           const at::Tensor& coef, bool weight_grad) {
  check_partition_bwd(x, weight, mask, scale, shift, log_norm, coef, weight_grad);
  return {partition_plan(x, weight, mask, scale, negate), shift, log_norm, coef, weight_grad,
          new_output(x.sizes(), x.options()),
          weight_grad ? new_output(x.sizes(), x.options()) : at::empty({0}, x.options())};
}

// ---- entry points ([Note: host-side plans]): Launch is the backend's ------------------------

template <void (*Launch)(const PartitionFwdPlan&)>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> partition_fwd_op(
    const at::Tensor& x, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& mask, const at::Tensor& scale, bool negate,
    int64_t moments) {
  const PartitionFwdPlan p = plan_partition_fwd(x, weight, mask, scale, negate, moments);
  if (p.in.outputs > 0) Launch(p);
  return {p.shift, p.sum, p.m1, p.m2};
}

template <void (*Launch)(const PartitionBwdPlan&)>
std::tuple<at::Tensor, at::Tensor> partition_bwd_op(
    const at::Tensor& x, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& mask, const at::Tensor& scale, bool negate,
    const at::Tensor& shift, const at::Tensor& log_norm, const at::Tensor& coef,
    bool weight_grad) {
  const PartitionBwdPlan p =
      plan_partition_bwd(x, weight, mask, scale, negate, shift, log_norm, coef, weight_grad);
  if (x.numel() > 0) Launch(p);
  return {p.grad_x, p.grad_w};
}

}  // namespace thermokern

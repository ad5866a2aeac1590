// Host-side plan of cross_entropy_fwd / cross_entropy_bwd ([Note: host-side plans] in plan.h),
// used by csrc/cpu/cross_entropy.cpp and csrc/cuda/cross_entropy.cu. The rows, temperatures
// and statistics are softmax_entropy's (softmax_entropy_plan.h).
#pragma once

#include <cstdint>
#include <tuple>

#include <ATen/core/Tensor.h>

#include "thermokern/checks.h"
#include "thermokern/plan.h"
#include "thermokern/softmax_entropy_plan.h"

namespace thermokern {

// target: 1-D int64 with one class index per row, logits' device.
inline void check_target(const at::Tensor& target, const at::Tensor& logits) {
  TORCH_CHECK_TYPE(target.scalar_type() == at::kLong, "target: expected an int64 tensor, got ",
                   target.scalar_type());
  TORCH_CHECK_VALUE(target.dim() == 1 && target.size(0) == logits.size(0),
                    "target: expected one class index per row, shape (", logits.size(0),
                    "), got ", target.sizes());
  check_device(target, logits.device(), "target");
}

inline void check_cross_entropy_weights(double entropy_weight, double label_smoothing,
                                        double z_loss_weight) {
  TORCH_CHECK_VALUE(std::isfinite(entropy_weight), "entropy_weight: expected a finite value, got ",
                    entropy_weight);
  TORCH_CHECK_VALUE(label_smoothing >= 0.0 && label_smoothing <= 1.0,
                    "label_smoothing: expected a value in [0, 1], got ", label_smoothing);
  check_finite_nonnegative(z_loss_weight, "z_loss_weight");
}

// The scalars of the loss, as the kernels take them.
struct CrossEntropyScalars {
  double entropy_weight = 0.0, label_smoothing = 0.0, z_loss_weight = 0.0;
  int64_t ignore_index = -100;
};

struct CrossEntropyFwdPlan {
  RowsPlan rows;
  at::Tensor target;  // contiguous
  CrossEntropyScalars scalars;
  at::Tensor loss;    // (rows,) accumulation dtype
  RowStatsTensors out;
};

inline CrossEntropyFwdPlan plan_cross_entropy_fwd(const at::Tensor& logits,
                                                  const at::Tensor& target,
                                                  const at::Tensor& inv_t, double entropy_weight,
                                                  double label_smoothing, int64_t ignore_index,
                                                  double z_loss_weight) {
  check_softmax_entropy_fwd(logits, inv_t);
  check_target(target, logits);
  check_cross_entropy_weights(entropy_weight, label_smoothing, z_loss_weight);
  const auto acc = logits.options().dtype(acc_dtype(logits.scalar_type()));
  return {rows_plan(logits, inv_t),
          target.contiguous(),
          {entropy_weight, label_smoothing, z_loss_weight, ignore_index},
          new_output({logits.size(0)}, acc),
          new_row_stats(logits)};
}

struct CrossEntropyBwdPlan {
  RowsBwdPlan bwd;
  at::Tensor target;  // contiguous
  CrossEntropyScalars scalars;
};

inline CrossEntropyBwdPlan plan_cross_entropy_bwd(
    const at::Tensor& grad, const at::Tensor& logits, const at::Tensor& target,
    const at::Tensor& inv_t, const at::Tensor& entropy, const at::Tensor& shift,
    const at::Tensor& log_norm, double entropy_weight, double label_smoothing,
    int64_t ignore_index, double z_loss_weight, bool in_place) {
  check_softmax_entropy_bwd(grad, logits, inv_t, entropy, shift, log_norm);
  check_target(target, logits);
  check_cross_entropy_weights(entropy_weight, label_smoothing, z_loss_weight);
  return {rows_bwd_plan(grad, logits, inv_t, entropy, shift, log_norm, in_place),
          target.contiguous(),
          {entropy_weight, label_smoothing, z_loss_weight, ignore_index}};
}

// ---- entry points ([Note: host-side plans]): Launch is the backend's ------------------------

template <void (*Launch)(const CrossEntropyFwdPlan&)>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> cross_entropy_fwd_op(
    const at::Tensor& logits, const at::Tensor& target, const at::Tensor& inv_t,
    double entropy_weight, double label_smoothing, int64_t ignore_index, double z_loss_weight) {
  const CrossEntropyFwdPlan p = plan_cross_entropy_fwd(logits, target, inv_t, entropy_weight,
                                                       label_smoothing, ignore_index, z_loss_weight);
  if (p.rows.rows > 0) Launch(p);
  return {p.loss, p.out.entropy, p.out.shift, p.out.log_norm};
}

// cross_entropy_bwd, and with InPlace cross_entropy_bwd_.
template <void (*Launch)(const CrossEntropyBwdPlan&), bool InPlace = false>
RowsBwdResult<InPlace> cross_entropy_bwd_op(const at::Tensor& grad, const at::Tensor& logits,
                                            const at::Tensor& target, const at::Tensor& inv_t,
                                            const at::Tensor& entropy, const at::Tensor& shift,
                                            const at::Tensor& log_norm, double entropy_weight,
                                            double label_smoothing, int64_t ignore_index,
                                            double z_loss_weight) {
  const CrossEntropyBwdPlan p = plan_cross_entropy_bwd(
      grad, logits, target, inv_t, entropy, shift, log_norm, entropy_weight, label_smoothing,
      ignore_index, z_loss_weight, InPlace);
  if (p.bwd.rows.rows > 0) Launch(p);
  if constexpr (!InPlace) return p.bwd.grad_x;
}

}  // namespace thermokern

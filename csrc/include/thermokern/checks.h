// Argument checks shared by the CPU and CUDA op implementations. Messages name the
// argument, so a user calling torch.ops.thermokern.* directly gets the same clarity as
// through the Python API (which checks first).
#pragma once

#include <cmath>
#include <optional>

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace thermokern {

inline void check_floating(const at::Tensor& t, const char* name) {
  const auto st = t.scalar_type();
  TORCH_CHECK_TYPE(st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16,
                   name, ": expected a float32, float64, float16 or bfloat16 tensor, got ", st);
}

inline void check_rows(const at::Tensor& logits, const char* name) {
  TORCH_CHECK_VALUE(logits.dim() == 2, name, ": expected a 2-D (rows, classes) tensor, got ",
                    logits.dim(), " dims");
  TORCH_CHECK_VALUE(logits.size(1) > 0, name, ": the reduced dimension has size 0");
  TORCH_CHECK_VALUE(logits.size(1) <= 1 || logits.stride(1) == 1, name,
                    ": expected unit stride along the reduced dimension, got stride ",
                    logits.stride(1));
}

// Debug aid for the tests: when on, every op fills its freshly allocated outputs with NaN
// before the kernel runs, so an element a kernel forgets to write cannot pass by luck.
// Defined in csrc/thermokern.cpp; set with thermokern._C._set_poison_outputs.
bool poison_outputs_enabled();

inline void maybe_poison(at::Tensor& t) {
  if (poison_outputs_enabled() && t.numel() > 0) t.fill_(NAN);
}

inline at::ScalarType acc_dtype(at::ScalarType st) {
  return st == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_row_vector(const at::Tensor& t, const at::Tensor& logits, const char* name,
                             bool acc) {
  TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == logits.size(0), name,
                    ": expected shape (", logits.size(0), "), got ", t.sizes());
  TORCH_CHECK_VALUE(t.device() == logits.device(), name, ": expected device ", logits.device(),
                    ", got ", t.device());
  if (acc) {
    TORCH_CHECK_TYPE(t.scalar_type() == acc_dtype(logits.scalar_type()), name, ": expected dtype ",
                     acc_dtype(logits.scalar_type()), ", got ", t.scalar_type());
  }
}

// inv_t: 1-D, accumulation dtype, same device, 1 element or one per row.
inline void check_inv_t(const at::Tensor& inv_t, const at::Tensor& logits) {
  TORCH_CHECK_VALUE(inv_t.dim() == 1 && (inv_t.size(0) == 1 || inv_t.size(0) == logits.size(0)),
                    "temperature: expected 1 or ", logits.size(0), " (one per row) values, got shape ",
                    inv_t.sizes());
  TORCH_CHECK_VALUE(inv_t.device() == logits.device(), "temperature: expected device ",
                    logits.device(), ", got ", inv_t.device());
  TORCH_CHECK_TYPE(inv_t.scalar_type() == acc_dtype(logits.scalar_type()),
                   "temperature: expected the inverse temperature as ",
                   acc_dtype(logits.scalar_type()), ", got ", inv_t.scalar_type());
}

// target: 1-D int64 with one class index per row, same device.
inline void check_target(const at::Tensor& target, const at::Tensor& logits) {
  TORCH_CHECK_TYPE(target.scalar_type() == at::kLong, "target: expected an int64 tensor, got ",
                   target.scalar_type());
  TORCH_CHECK_VALUE(target.dim() == 1 && target.size(0) == logits.size(0),
                    "target: expected shape (", logits.size(0), "), got ", target.sizes());
  TORCH_CHECK_VALUE(target.device() == logits.device(), "target: expected device ",
                    logits.device(), ", got ", target.device());
}

// Everything softmax_entropy_fwd / _bwd check on every backend.
inline void check_softmax_entropy_fwd(const at::Tensor& logits, const at::Tensor& inv_t) {
  check_floating(logits, "logits");
  check_rows(logits, "logits");
  check_inv_t(inv_t, logits);
}

inline void check_softmax_entropy_bwd(const at::Tensor& grad, const at::Tensor& logits,
                                      const at::Tensor& inv_t, const at::Tensor& entropy,
                                      const at::Tensor& shift, const at::Tensor& log_norm) {
  check_softmax_entropy_fwd(logits, inv_t);
  check_floating(grad, "grad");
  check_row_vector(grad, logits, "grad", /*acc=*/false);
  check_row_vector(entropy, logits, "entropy", /*acc=*/true);
  check_row_vector(shift, logits, "shift", /*acc=*/true);
  check_row_vector(log_norm, logits, "log_norm", /*acc=*/true);
}

inline void check_cross_entropy_weights(double entropy_weight, double label_smoothing,
                                     double z_loss_weight) {
  TORCH_CHECK_VALUE(std::isfinite(entropy_weight), "entropy_weight: expected a finite value, got ",
                    entropy_weight);
  TORCH_CHECK_VALUE(label_smoothing >= 0.0 && label_smoothing <= 1.0,
                    "label_smoothing: expected a value in [0, 1], got ", label_smoothing);
  TORCH_CHECK_VALUE(std::isfinite(z_loss_weight) && z_loss_weight >= 0.0,
                    "z_loss_weight: expected a finite value >= 0, got ", z_loss_weight);
}

// partition_fwd / partition_bwd (csrc/thermokern.cpp, [Note: partition statistics]).
inline void check_partition_inputs(const at::Tensor& x, const std::optional<at::Tensor>& weight,
                                   const std::optional<at::Tensor>& mask, const at::Tensor& scale) {
  check_floating(x, "input");
  TORCH_CHECK_VALUE(x.dim() == 3 && x.size(1) > 0 && x.is_contiguous(),
                    "input: expected a contiguous 3-D (outer, reduced, inner) tensor with a "
                    "non-empty reduced dimension, got shape ", x.sizes());
  if (weight.has_value()) {
    // Any strides: a broadcast weight arrives with stride 0 in its broadcast dims, unexpanded.
    TORCH_CHECK_VALUE(weight->sizes() == x.sizes(), "weight: expected a tensor of shape ",
                      x.sizes(), ", got ", weight->sizes());
    TORCH_CHECK_TYPE(weight->scalar_type() == x.scalar_type(), "weight: expected dtype ",
                     x.scalar_type(), ", got ", weight->scalar_type());
    TORCH_CHECK_VALUE(weight->device() == x.device(), "weight: expected device ", x.device(),
                      ", got ", weight->device());
  }
  if (mask.has_value()) {
    TORCH_CHECK_VALUE(mask->sizes() == x.sizes(), "mask: expected a tensor of shape ",
                      x.sizes(), ", got ", mask->sizes());
    TORCH_CHECK_TYPE(mask->scalar_type() == at::kBool, "mask: expected a bool tensor, got ",
                     mask->scalar_type());
    TORCH_CHECK_VALUE(mask->device() == x.device(), "mask: expected device ", x.device(),
                      ", got ", mask->device());
  }
  const int64_t outputs = x.size(0) * x.size(2);
  TORCH_CHECK_VALUE(scale.dim() == 1 && (scale.size(0) == 1 || scale.size(0) == outputs),
                    "temperature: expected 1 or ", outputs, " scale values, got shape ",
                    scale.sizes());
  TORCH_CHECK_VALUE(scale.is_contiguous() && scale.device() == x.device(),
                    "temperature: expected a contiguous scale tensor on ", x.device());
  TORCH_CHECK_TYPE(scale.scalar_type() == acc_dtype(x.scalar_type()), "temperature: expected the scale as ",
                   acc_dtype(x.scalar_type()), ", got ", scale.scalar_type());
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
  for (const auto* t : {&shift, &log_norm}) {
    const char* name = t == &shift ? "shift" : "log_norm";
    TORCH_CHECK_VALUE(t->dim() == 1 && t->size(0) == outputs && t->is_contiguous(), name,
                      ": expected a contiguous 1-D tensor of ", outputs, " values, got shape ",
                      t->sizes());
    TORCH_CHECK_TYPE(t->scalar_type() == acc, name, ": expected dtype ", acc, ", got ",
                     t->scalar_type());
    TORCH_CHECK_VALUE(t->device() == x.device(), name, ": expected device ", x.device());
  }
  TORCH_CHECK_VALUE(coef.dim() == 2 && coef.size(0) == outputs && coef.size(1) >= 1 &&
                        coef.size(1) <= 3 && coef.is_contiguous(),
                    "coef: expected a contiguous (", outputs, ", 1..3) tensor, got shape ",
                    coef.sizes());
  TORCH_CHECK_TYPE(coef.scalar_type() == acc, "coef: expected dtype ", acc, ", got ",
                   coef.scalar_type());
  TORCH_CHECK_VALUE(coef.device() == x.device(), "coef: expected device ", x.device());
  TORCH_CHECK_VALUE(!weight_grad || weight.has_value(),
                    "weight_grad: needs a weight tensor");
}

// langevin_step / langevin_step_ / langevin_step_bwd (csrc/thermokern.cpp).
inline void check_langevin_rng(const at::Tensor& t, const at::Tensor& x, const char* name) {
  TORCH_CHECK_TYPE(t.scalar_type() == at::kLong, name, ": expected an int64 tensor, got ",
                   t.scalar_type());
  TORCH_CHECK_VALUE(t.dim() == 0, name, ": expected a 0-dim tensor, got shape ", t.sizes());
  TORCH_CHECK_VALUE(t.device() == x.device(), name, ": expected a tensor on ", x.device(),
                    " (x's device), got ", t.device());
}

inline void check_langevin(const at::Tensor& x, const at::Tensor& grad, const at::Tensor& seed,
                           const at::Tensor& offset, double step_size, double noise_std,
                           std::optional<double> grad_clip, std::optional<double> lo,
                           std::optional<double> hi) {
  check_floating(x, "x");
  TORCH_CHECK_VALUE(grad.sizes() == x.sizes(), "grad: expected shape ", x.sizes(),
                    " (x's shape), got ", grad.sizes());
  TORCH_CHECK_TYPE(grad.scalar_type() == x.scalar_type(), "grad: expected dtype ",
                   x.scalar_type(), " (x's dtype), got ", grad.scalar_type());
  TORCH_CHECK_VALUE(grad.device() == x.device(), "grad: expected device ", x.device(), ", got ",
                    grad.device());
  check_langevin_rng(seed, x, "seed");
  check_langevin_rng(offset, x, "offset");
  TORCH_CHECK_VALUE(std::isfinite(step_size) && step_size > 0.0,
                    "step_size: expected a finite value > 0, got ", step_size);
  TORCH_CHECK_VALUE(std::isfinite(noise_std) && noise_std >= 0.0,
                    "noise_scale: expected a finite value >= 0, got ", noise_std);
  TORCH_CHECK_VALUE(!grad_clip.has_value() || *grad_clip > 0.0,
                    "grad_clip: expected a value > 0, got ", grad_clip.value_or(0.0));
  TORCH_CHECK_VALUE(!lo.has_value() || !std::isnan(*lo), "clamp: the lower bound is NaN");
  TORCH_CHECK_VALUE(!hi.has_value() || !std::isnan(*hi), "clamp: the upper bound is NaN");
  TORCH_CHECK_VALUE(!lo.has_value() || !hi.has_value() || *lo <= *hi,
                    "clamp: expected lo <= hi, got (", *lo, ", ", *hi, ")");
}

inline void check_langevin_bwd(const at::Tensor& grad_out, const at::Tensor& x,
                               const at::Tensor& grad, const at::Tensor& seed,
                               const at::Tensor& offset, double step_size, double noise_std,
                               std::optional<double> grad_clip, std::optional<double> lo,
                               std::optional<double> hi) {
  check_langevin(x, grad, seed, offset, step_size, noise_std, grad_clip, lo, hi);
  check_floating(grad_out, "grad_out");
  TORCH_CHECK_VALUE(grad_out.sizes() == x.sizes(), "grad_out: expected shape ", x.sizes(),
                    ", got ", grad_out.sizes());
  TORCH_CHECK_VALUE(grad_out.device() == x.device(), "grad_out: expected device ", x.device(),
                    ", got ", grad_out.device());
}

}  // namespace thermokern

// Argument checks shared by the CPU and CUDA op implementations. Messages name the
// argument, so a user calling torch.ops.thermokern.* directly gets the same clarity as
// through the Python API (which checks first).
#pragma once

#include <cmath>

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

inline void check_entropy_ce_weights(double entropy_weight, double label_smoothing,
                                     double z_loss_weight) {
  TORCH_CHECK_VALUE(std::isfinite(entropy_weight), "entropy_weight: expected a finite value, got ",
                    entropy_weight);
  TORCH_CHECK_VALUE(label_smoothing >= 0.0 && label_smoothing <= 1.0,
                    "label_smoothing: expected a value in [0, 1], got ", label_smoothing);
  TORCH_CHECK_VALUE(std::isfinite(z_loss_weight) && z_loss_weight >= 0.0,
                    "z_loss_weight: expected a finite value >= 0, got ", z_loss_weight);
}

}  // namespace thermokern

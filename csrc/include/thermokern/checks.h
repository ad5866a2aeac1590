// Argument checks of the ops, shared by the CPU and CUDA entry points (host only).
//
// [Note: argument checks]
// One convention for every op and backend, so that a user calling torch.ops.thermokern.*
// directly gets errors as clear as the Python API's (which checks first):
//   * TORCH_CHECK_TYPE (Python TypeError) when an argument has the wrong type or dtype,
//     TORCH_CHECK_VALUE (Python ValueError) for anything else: shape, device, layout, range;
//   * the message starts with the argument's name as the Python caller knows it (a list
//     element as `params[2]`), then `: expected ..., got ...`.
// The helpers below are the only ones the ops use; each op's checks sit at the top of its
// plan (thermokern/<op>_plan.h), which both backends call before anything else.
#pragma once

#include <cmath>
#include <string_view>

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace thermokern {

// float32 for float32, float16 and bfloat16; float64 for float64.
inline at::ScalarType acc_dtype(at::ScalarType st) {
  return st == at::kDouble ? at::kDouble : at::kFloat;
}

// One of the four floating dtypes the kernels accept.
inline void check_floating(const at::Tensor& t, std::string_view name) {
  const auto st = t.scalar_type();
  TORCH_CHECK_TYPE(st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16,
                   name, ": expected a float32, float64, float16 or bfloat16 tensor, got ", st);
}

// `why` (may be empty) says where the expectation comes from, e.g. "x's dtype".
inline void check_dtype(const at::Tensor& t, at::ScalarType dtype, std::string_view name,
                        std::string_view why = {}) {
  TORCH_CHECK_TYPE(t.scalar_type() == dtype, name, ": expected dtype ", dtype,
                   why.empty() ? "" : " (", why, why.empty() ? "" : ")", ", got ", t.scalar_type());
}

inline void check_device(const at::Tensor& t, const at::Device& device, std::string_view name,
                         std::string_view why = {}) {
  TORCH_CHECK_VALUE(t.device() == device, name, ": expected device ", device,
                    why.empty() ? "" : " (", why, why.empty() ? "" : ")", ", got ", t.device());
}

inline void check_shape(const at::Tensor& t, at::IntArrayRef sizes, std::string_view name,
                        std::string_view why = {}) {
  TORCH_CHECK_VALUE(t.sizes() == sizes, name, ": expected shape ", sizes,
                    why.empty() ? "" : " (", why, why.empty() ? "" : ")", ", got ", t.sizes());
}

// t has ref's shape, dtype and device (ref_name "x" gives "expected shape [..] (x's shape)").
inline void check_like(const at::Tensor& t, const at::Tensor& ref, std::string_view name,
                       std::string_view ref_name) {
  TORCH_CHECK_VALUE(t.sizes() == ref.sizes(), name, ": expected shape ", ref.sizes(), " (",
                    ref_name, "'s shape), got ", t.sizes());
  TORCH_CHECK_TYPE(t.scalar_type() == ref.scalar_type(), name, ": expected dtype ",
                   ref.scalar_type(), " (", ref_name, "'s dtype), got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == ref.device(), name, ": expected device ", ref.device(), " (",
                    ref_name, "'s device), got ", t.device());
}

// A 1-D tensor of n values of `dtype` on `device` (per row, per chain or per output).
inline void check_vector(const at::Tensor& t, int64_t n, at::ScalarType dtype,
                         const at::Device& device, std::string_view name, std::string_view what) {
  TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == n, name, ": expected ", what, ", shape (", n,
                    "), got ", t.sizes());
  check_dtype(t, dtype, name);
  check_device(t, device, name);
}

// A Philox seed or offset: a 0-dim int64 tensor on the device of the data (`whose`).
inline void check_rng_tensor(const at::Tensor& t, const at::Device& device, std::string_view name,
                             std::string_view whose) {
  TORCH_CHECK_TYPE(t.scalar_type() == at::kLong, name, ": expected an int64 tensor, got ",
                   t.scalar_type());
  TORCH_CHECK_VALUE(t.dim() == 0, name, ": expected a 0-dim tensor, got shape ", t.sizes());
  check_device(t, device, name, whose);
}

inline void check_finite_positive(double v, std::string_view name) {
  TORCH_CHECK_VALUE(std::isfinite(v) && v > 0.0, name, ": expected a finite value > 0, got ", v);
}

inline void check_finite_nonnegative(double v, std::string_view name) {
  TORCH_CHECK_VALUE(std::isfinite(v) && v >= 0.0, name, ": expected a finite value >= 0, got ", v);
}

}  // namespace thermokern

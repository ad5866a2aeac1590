// Host-side plan of softmax_entropy_fwd / softmax_entropy_bwd ([Note: host-side plans] in
// plan.h), used by csrc/cpu/softmax_entropy.cpp and csrc/cuda/softmax_entropy.cu, and by
// cross_entropy_plan.h and token_logprobs_plan.h (those ops share the rows and the statistics).
#pragma once

#include <cstdint>
#include <string_view>
#include <tuple>
#include <type_traits>

#include <ATen/core/Tensor.h>

#include "thermokern/checks.h"
#include "thermokern/plan.h"

namespace thermokern {

// ---- checks --------------------------------------------------------------------------------

// logits: 2-D (rows, classes), classes > 0, unit stride along the classes.
inline void check_rows(const at::Tensor& logits, std::string_view name) {
  TORCH_CHECK_VALUE(logits.dim() == 2, name, ": expected a 2-D (rows, classes) tensor, got ",
                    logits.dim(), " dims");
  TORCH_CHECK_VALUE(logits.size(1) > 0, name, ": the reduced dimension has size 0");
  TORCH_CHECK_VALUE(logits.size(1) <= 1 || logits.stride(1) == 1, name,
                    ": expected unit stride along the reduced dimension, got stride ",
                    logits.stride(1));
}

// inv_t: 1-D, accumulation dtype, logits' device, 1 element or one per row.
inline void check_inv_t(const at::Tensor& inv_t, const at::Tensor& logits) {
  TORCH_CHECK_VALUE(inv_t.dim() == 1 && (inv_t.size(0) == 1 || inv_t.size(0) == logits.size(0)),
                    "temperature: expected 1 or ", logits.size(0), " (one per row) values, got shape ",
                    inv_t.sizes());
  check_device(inv_t, logits.device(), "temperature");
  check_dtype(inv_t, acc_dtype(logits.scalar_type()), "temperature", "the inverse temperature");
}

inline void check_softmax_entropy_fwd(const at::Tensor& logits, const at::Tensor& inv_t) {
  check_floating(logits, "logits");
  check_rows(logits, "logits");
  check_inv_t(inv_t, logits);
}

// An upstream gradient of a per-row output: 1-D, one value per row, any floating dtype (the
// plans convert it), logits' device.
inline void check_row_grad(const at::Tensor& grad, const at::Tensor& logits,
                           std::string_view name) {
  check_floating(grad, name);
  TORCH_CHECK_VALUE(grad.dim() == 1 && grad.size(0) == logits.size(0), name,
                    ": expected one value per row, shape (", logits.size(0), "), got ",
                    grad.sizes());
  check_device(grad, logits.device(), name);
}

// The statistics a forward returned (row_stats.h), as the backwards take them back.
inline void check_row_stats(const at::Tensor& logits, const at::Tensor& entropy,
                            const at::Tensor& shift, const at::Tensor& log_norm) {
  const auto acc = acc_dtype(logits.scalar_type());
  check_vector(entropy, logits.size(0), acc, logits.device(), "entropy", "one value per row");
  check_vector(shift, logits.size(0), acc, logits.device(), "shift", "one value per row");
  check_vector(log_norm, logits.size(0), acc, logits.device(), "log_norm", "one value per row");
}

inline void check_softmax_entropy_bwd(const at::Tensor& grad, const at::Tensor& logits,
                                      const at::Tensor& inv_t, const at::Tensor& entropy,
                                      const at::Tensor& shift, const at::Tensor& log_norm) {
  check_softmax_entropy_fwd(logits, inv_t);
  check_row_grad(grad, logits, "grad");
  check_row_stats(logits, entropy, shift, log_norm);
}

// ---- plans ---------------------------------------------------------------------------------

// The rows of logits (rows, C) and their temperatures: row r starts at r * row_stride and has
// 1/T = inv_t[r * inv_t_stride] (stride 0: one value for every row).
struct RowsPlan {
  at::Tensor logits, inv_t;
  int64_t rows = 0, C = 0, row_stride = 0, inv_t_stride = 0;
};

inline RowsPlan rows_plan(const at::Tensor& logits, const at::Tensor& inv_t) {
  RowsPlan p;
  p.logits = logits;
  p.inv_t = inv_t;
  p.rows = logits.size(0);
  p.C = logits.size(1);
  p.row_stride = logits.stride(0);
  p.inv_t_stride = inv_t.size(0) == 1 ? 0 : inv_t.stride(0);
  return p;
}

// The per-row statistics (row_stats.h): outputs of the forwards, inputs of the backwards;
// (rows,) in the accumulation dtype.
struct RowStatsTensors {
  at::Tensor entropy, shift, log_norm;
};

inline RowStatsTensors new_row_stats(const at::Tensor& logits) {
  const auto opts = logits.options().dtype(acc_dtype(logits.scalar_type()));
  const int64_t rows = logits.size(0);
  return {new_output({rows}, opts), new_output({rows}, opts), new_output({rows}, opts)};
}

struct SoftmaxEntropyFwdPlan {
  RowsPlan rows;
  RowStatsTensors out;
};

inline SoftmaxEntropyFwdPlan plan_softmax_entropy_fwd(const at::Tensor& logits,
                                                      const at::Tensor& inv_t) {
  check_softmax_entropy_fwd(logits, inv_t);
  return {rows_plan(logits, inv_t), new_row_stats(logits)};
}

// The backward of the row ops: the upstream gradient per row and the saved statistics,
// contiguous and in the accumulation dtype, and the contiguous (rows, C) gradient (logits'
// dtype) the kernel writes: a new tensor, or with in_place (the <op>_bwd_ ops) the logits
// themselves. [Note: in-place backward] Every backward kernel reads each x_j once, before it
// writes g_j at the same place, and reads nothing of the row after that, so the gradient can
// be written over contiguous logits (the language-model heads' chunks, whose logits are not
// needed once their gradient exists: one (rows, C) buffer instead of two).
struct RowsBwdPlan {
  RowsPlan rows;
  at::Tensor grad;
  RowStatsTensors stats;
  at::Tensor grad_x;
};

inline RowsBwdPlan rows_bwd_plan(const at::Tensor& grad, const at::Tensor& logits,
                                 const at::Tensor& inv_t, const at::Tensor& entropy,
                                 const at::Tensor& shift, const at::Tensor& log_norm,
                                 bool in_place) {
  if (in_place) {
    TORCH_CHECK_VALUE(logits.is_contiguous(),
                      "logits: the in-place backward writes the gradient over the logits, "
                      "which must be contiguous, got strides ",
                      logits.strides());
  }
  return {rows_plan(logits, inv_t),
          grad.to(acc_dtype(logits.scalar_type())).contiguous(),
          {entropy.contiguous(), shift.contiguous(), log_norm.contiguous()},
          in_place ? logits : new_output({logits.size(0), logits.size(1)}, logits.options())};
}

inline RowsBwdPlan plan_softmax_entropy_bwd(const at::Tensor& grad, const at::Tensor& logits,
                                            const at::Tensor& inv_t, const at::Tensor& entropy,
                                            const at::Tensor& shift, const at::Tensor& log_norm,
                                            bool in_place) {
  check_softmax_entropy_bwd(grad, logits, inv_t, entropy, shift, log_norm);
  return rows_bwd_plan(grad, logits, inv_t, entropy, shift, log_norm, in_place);
}

// The return type of a row op's backward entry point: the gradient, or nothing for the
// in-place twin (which wrote it over the logits).
template <bool InPlace>
using RowsBwdResult = std::conditional_t<InPlace, void, at::Tensor>;

// ---- entry points ([Note: host-side plans]): Launch is the backend's ------------------------

template <void (*Launch)(const SoftmaxEntropyFwdPlan&)>
std::tuple<at::Tensor, at::Tensor, at::Tensor> softmax_entropy_fwd_op(const at::Tensor& logits,
                                                                      const at::Tensor& inv_t) {
  const SoftmaxEntropyFwdPlan p = plan_softmax_entropy_fwd(logits, inv_t);
  if (p.rows.rows > 0) Launch(p);
  return {p.out.entropy, p.out.shift, p.out.log_norm};
}

// Registers the three kernels of the row op OP (softmax_entropy, cross_entropy,
// token_logprobs) in a TORCH_LIBRARY_IMPL block: OP_fwd, OP_bwd and its in-place twin OP_bwd_,
// from the entry points OP_fwd_op / OP_bwd_op of its plan header and the backend's launch_fwd
// and launch_bwd.
#define TK_IMPL_ROW_OP(m, OP)                      \
  m.impl(#OP "_fwd", &OP##_fwd_op<launch_fwd>);   \
  m.impl(#OP "_bwd", &OP##_bwd_op<launch_bwd>);   \
  m.impl(#OP "_bwd_", &OP##_bwd_op<launch_bwd, /*InPlace=*/true>)

// softmax_entropy_bwd, and with InPlace softmax_entropy_bwd_.
template <void (*Launch)(const RowsBwdPlan&), bool InPlace = false>
RowsBwdResult<InPlace> softmax_entropy_bwd_op(const at::Tensor& grad, const at::Tensor& logits,
                                              const at::Tensor& inv_t, const at::Tensor& entropy,
                                              const at::Tensor& shift,
                                              const at::Tensor& log_norm) {
  const RowsBwdPlan p =
      plan_softmax_entropy_bwd(grad, logits, inv_t, entropy, shift, log_norm, InPlace);
  if (p.rows.rows > 0) Launch(p);
  if constexpr (!InPlace) return p.grad_x;
}

}  // namespace thermokern

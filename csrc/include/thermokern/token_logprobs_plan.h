// Host-side plan of token_logprobs_fwd / token_logprobs_bwd ([Note: host-side plans] in plan.h),
// used by csrc/cpu/token_logprobs.cpp and csrc/cuda/token_logprobs.cu. The rows, temperatures
// and statistics are softmax_entropy's (softmax_entropy_plan.h), the target is checked as
// cross_entropy's (cross_entropy_plan.h).
#pragma once

#include <cstdint>
#include <optional>
#include <tuple>

#include <ATen/core/Tensor.h>

#include "thermokern/checks.h"
#include "thermokern/cross_entropy_plan.h"
#include "thermokern/plan.h"
#include "thermokern/softmax_entropy_plan.h"

namespace thermokern {

inline void check_token_logprobs_fwd(const at::Tensor& logits, const at::Tensor& target,
                                     const at::Tensor& inv_t) {
  check_softmax_entropy_fwd(logits, inv_t);
  check_target(target, logits);
}

inline void check_token_logprobs_bwd(const at::Tensor& grad_logp,
                                     const std::optional<at::Tensor>& grad_entropy,
                                     const at::Tensor& logits, const at::Tensor& target,
                                     const at::Tensor& inv_t, const at::Tensor& entropy,
                                     const at::Tensor& shift, const at::Tensor& log_norm) {
  check_token_logprobs_fwd(logits, target, inv_t);
  check_row_grad(grad_logp, logits, "grad_logp");
  if (grad_entropy.has_value()) check_row_grad(*grad_entropy, logits, "grad_entropy");
  check_row_stats(logits, entropy, shift, log_norm);
}

struct TokenLogprobsFwdPlan {
  RowsPlan rows;
  at::Tensor target;  // contiguous
  int64_t ignore_index = -100;
  at::Tensor logp;    // (rows,) accumulation dtype
  RowStatsTensors out;
};

inline TokenLogprobsFwdPlan plan_token_logprobs_fwd(const at::Tensor& logits,
                                                    const at::Tensor& target,
                                                    const at::Tensor& inv_t,
                                                    int64_t ignore_index) {
  check_token_logprobs_fwd(logits, target, inv_t);
  const auto acc = logits.options().dtype(acc_dtype(logits.scalar_type()));
  return {rows_plan(logits, inv_t), target.contiguous(), ignore_index,
          new_output({logits.size(0)}, acc), new_row_stats(logits)};
}

struct TokenLogprobsBwdPlan {
  RowsBwdPlan bwd;          // its grad is grad_logp
  at::Tensor grad_entropy;  // contiguous, accumulation dtype; undefined: no entropy term
  at::Tensor target;        // contiguous
  int64_t ignore_index = -100;
};

inline TokenLogprobsBwdPlan plan_token_logprobs_bwd(
    const at::Tensor& grad_logp, const std::optional<at::Tensor>& grad_entropy,
    const at::Tensor& logits, const at::Tensor& target, const at::Tensor& inv_t,
    const at::Tensor& entropy, const at::Tensor& shift, const at::Tensor& log_norm,
    int64_t ignore_index, bool in_place) {
  check_token_logprobs_bwd(grad_logp, grad_entropy, logits, target, inv_t, entropy, shift,
                           log_norm);
  at::Tensor g_h;
  if (grad_entropy.has_value()) {
    g_h = grad_entropy->to(acc_dtype(logits.scalar_type())).contiguous();
  }
  return {rows_bwd_plan(grad_logp, logits, inv_t, entropy, shift, log_norm, in_place), g_h,
          target.contiguous(), ignore_index};
}

// ---- entry points ([Note: host-side plans]): Launch is the backend's ------------------------

template <void (*Launch)(const TokenLogprobsFwdPlan&)>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> token_logprobs_fwd_op(
    const at::Tensor& logits, const at::Tensor& target, const at::Tensor& inv_t,
    int64_t ignore_index) {
  const TokenLogprobsFwdPlan p = plan_token_logprobs_fwd(logits, target, inv_t, ignore_index);
  if (p.rows.rows > 0) Launch(p);
  return {p.logp, p.out.entropy, p.out.shift, p.out.log_norm};
}

// token_logprobs_bwd, and with InPlace token_logprobs_bwd_.
template <void (*Launch)(const TokenLogprobsBwdPlan&), bool InPlace = false>
RowsBwdResult<InPlace> token_logprobs_bwd_op(const at::Tensor& grad_logp,
                                             const std::optional<at::Tensor>& grad_entropy,
                                             const at::Tensor& logits, const at::Tensor& target,
                                             const at::Tensor& inv_t, const at::Tensor& entropy,
                                             const at::Tensor& shift, const at::Tensor& log_norm,
                                             int64_t ignore_index) {
  const TokenLogprobsBwdPlan p =
      plan_token_logprobs_bwd(grad_logp, grad_entropy, logits, target, inv_t, entropy, shift,
                              log_norm, ignore_index, InPlace);
  if (p.bwd.rows.rows > 0) Launch(p);
  if constexpr (!InPlace) return p.bwd.grad_x;
}

}  // namespace thermokern

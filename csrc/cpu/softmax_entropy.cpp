// softmax_entropy: CPU implementation (TORCH_LIBRARY_IMPL(thermokern, CPU)).
#include <algorithm>
#include <cstdint>
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

// [Note: grain size]
// at::parallel_for splits rows across threads. A task of ~64K elements (256 KB of fp32)
// amortises the thread hand-off (a few microseconds) while still giving every core work for
// N x C = 4096 x 32000; rows are never split, so small-N, huge-C inputs use fewer threads.
int64_t row_grain(int64_t C) { return std::max<int64_t>(1, (int64_t{1} << 16) / C); }

EntropyArgs base_args(const at::Tensor& logits, const at::Tensor& inv_t) {
  EntropyArgs a;
  a.dtype = logits.scalar_type();
  a.x = logits.const_data_ptr();
  a.C = logits.size(1);
  a.row_stride = logits.stride(0);
  a.inv_t = inv_t.const_data_ptr();
  a.inv_t_stride = inv_t.size(0) == 1 ? 0 : inv_t.stride(0);
  return a;
}

void run_rows(RowFn fn, const EntropyArgs& a, int64_t N) {
  if (N == 0) return;
  at::parallel_for(0, N, row_grain(a.C), [&](int64_t begin, int64_t end) { fn(a, begin, end); });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> row_stat_outputs(const at::Tensor& logits) {
  const auto opts = logits.options().dtype(acc_dtype(logits.scalar_type()));
  at::Tensor entropy = at::empty({logits.size(0)}, opts);
  at::Tensor shift = at::empty({logits.size(0)}, opts);
  at::Tensor log_norm = at::empty({logits.size(0)}, opts);
  maybe_poison(entropy);
  maybe_poison(shift);
  maybe_poison(log_norm);
  return {entropy, shift, log_norm};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> softmax_entropy_fwd_cpu(const at::Tensor& logits,
                                                                       const at::Tensor& inv_t) {
  check_softmax_entropy_fwd(logits, inv_t);
  auto [entropy, shift, log_norm] = row_stat_outputs(logits);
  EntropyArgs a = base_args(logits, inv_t);
  a.entropy = entropy.mutable_data_ptr();
  a.shift = shift.mutable_data_ptr();
  a.log_norm = log_norm.mutable_data_ptr();
  run_rows(kernels().entropy_fwd, a, logits.size(0));
  return {entropy, shift, log_norm};
}

// The per-row inputs of a backward, contiguous and in the accumulation dtype.
struct BwdInputs {
  at::Tensor grad, entropy, shift, log_norm, grad_x;
};

BwdInputs bwd_inputs(const at::Tensor& grad, const at::Tensor& logits, const at::Tensor& entropy,
                     const at::Tensor& shift, const at::Tensor& log_norm) {
  const auto acc = acc_dtype(logits.scalar_type());
  BwdInputs b{grad.to(acc).contiguous(), entropy.contiguous(), shift.contiguous(),
              log_norm.contiguous(), at::empty({logits.size(0), logits.size(1)}, logits.options())};
  advise_huge_pages(b.grad_x);
  maybe_poison(b.grad_x);
  return b;
}

void set_bwd_args(EntropyArgs& a, const BwdInputs& b) {
  a.grad = b.grad.const_data_ptr();
  a.entropy = const_cast<void*>(b.entropy.const_data_ptr());
  a.shift = const_cast<void*>(b.shift.const_data_ptr());
  a.log_norm = const_cast<void*>(b.log_norm.const_data_ptr());
  a.grad_x = b.grad_x.mutable_data_ptr();
}

at::Tensor softmax_entropy_bwd_cpu(const at::Tensor& grad, const at::Tensor& logits,
                                   const at::Tensor& inv_t, const at::Tensor& entropy,
                                   const at::Tensor& shift, const at::Tensor& log_norm) {
  check_softmax_entropy_bwd(grad, logits, inv_t, entropy, shift, log_norm);
  const BwdInputs b = bwd_inputs(grad, logits, entropy, shift, log_norm);
  EntropyArgs a = base_args(logits, inv_t);
  set_bwd_args(a, b);
  run_rows(kernels().entropy_bwd, a, logits.size(0));
  return b.grad_x;
}

// Targets are checked here, before any kernel runs: a clear error naming the row instead of
// a NaN loss (the kernels still never read out of bounds).
void check_target_values(const at::Tensor& target, int64_t C, int64_t ignore_index) {
  const at::Tensor t = target.contiguous();
  const int64_t* p = t.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < t.numel(); ++i) {
    const int64_t y = p[i];
    TORCH_CHECK_VALUE(y == ignore_index || (y >= 0 && y < C), "target: class index ", y,
                      " at row ", i, " is outside [0, ", C, ") and is not ignore_index (",
                      ignore_index, ")");
  }
}

void set_ce_args(EntropyArgs& a, const at::Tensor& target, double entropy_weight,
                 double label_smoothing, int64_t ignore_index, double z_loss_weight) {
  a.target = target.const_data_ptr<int64_t>();
  a.entropy_weight = entropy_weight;
  a.label_smoothing = label_smoothing;
  a.ignore_index = ignore_index;
  a.z_loss_weight = z_loss_weight;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> cross_entropy_fwd_cpu(
    const at::Tensor& logits, const at::Tensor& target, const at::Tensor& inv_t,
    double entropy_weight, double label_smoothing, int64_t ignore_index, double z_loss_weight) {
  check_softmax_entropy_fwd(logits, inv_t);
  check_target(target, logits);
  check_cross_entropy_weights(entropy_weight, label_smoothing, z_loss_weight);
  check_target_values(target, logits.size(1), ignore_index);
  const at::Tensor tgt = target.contiguous();
  auto [entropy, shift, log_norm] = row_stat_outputs(logits);
  at::Tensor loss = at::empty({logits.size(0)}, entropy.options());
  maybe_poison(loss);
  EntropyArgs a = base_args(logits, inv_t);
  set_ce_args(a, tgt, entropy_weight, label_smoothing, ignore_index, z_loss_weight);
  a.entropy = entropy.mutable_data_ptr();
  a.shift = shift.mutable_data_ptr();
  a.log_norm = log_norm.mutable_data_ptr();
  a.loss = loss.mutable_data_ptr();
  run_rows(kernels().cross_entropy_fwd, a, logits.size(0));
  return {loss, entropy, shift, log_norm};
}

at::Tensor cross_entropy_bwd_cpu(const at::Tensor& grad, const at::Tensor& logits,
                              const at::Tensor& target, const at::Tensor& inv_t,
                              const at::Tensor& entropy, const at::Tensor& shift,
                              const at::Tensor& log_norm, double entropy_weight,
                              double label_smoothing, int64_t ignore_index, double z_loss_weight) {
  check_softmax_entropy_bwd(grad, logits, inv_t, entropy, shift, log_norm);
  check_target(target, logits);
  check_cross_entropy_weights(entropy_weight, label_smoothing, z_loss_weight);
  const at::Tensor tgt = target.contiguous();
  const BwdInputs b = bwd_inputs(grad, logits, entropy, shift, log_norm);
  EntropyArgs a = base_args(logits, inv_t);
  set_bwd_args(a, b);
  set_ce_args(a, tgt, entropy_weight, label_smoothing, ignore_index, z_loss_weight);
  run_rows(kernels().cross_entropy_bwd, a, logits.size(0));
  return b.grad_x;
}

}  // namespace

TORCH_LIBRARY_IMPL(thermokern, CPU, m) {
  m.impl("softmax_entropy_fwd", &softmax_entropy_fwd_cpu);
  m.impl("softmax_entropy_bwd", &softmax_entropy_bwd_cpu);
  m.impl("cross_entropy_fwd", &cross_entropy_fwd_cpu);
  m.impl("cross_entropy_bwd", &cross_entropy_bwd_cpu);
}

}  // namespace thermokern::cpu

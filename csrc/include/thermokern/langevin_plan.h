// Host-side plan of langevin_step / langevin_step_ / langevin_step_bwd ([Note: Langevin step]
// in csrc/thermokern.cpp; [Note: host-side plans] in plan.h), used by csrc/cpu/langevin.cpp and
// csrc/cuda/langevin.cu.
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>
#include <tuple>

#include <ATen/MemoryOverlap.h>
#include <ATen/core/Tensor.h>

#include "thermokern/checks.h"
#include "thermokern/langevin.h"
#include "thermokern/plan.h"

namespace thermokern {

// ---- checks --------------------------------------------------------------------------------

inline void check_langevin(const at::Tensor& x, const at::Tensor& grad, const at::Tensor& seed,
                           const at::Tensor& offset, double step_size, double noise_std,
                           std::optional<double> grad_clip, std::optional<double> lo,
                           std::optional<double> hi) {
  check_floating(x, "x");
  check_like(grad, x, "grad", "x");
  check_rng_tensor(seed, x.device(), "seed", "x's device");
  check_rng_tensor(offset, x.device(), "offset", "x's device");
  check_finite_positive(step_size, "step_size");
  check_finite_nonnegative(noise_std, "noise_scale");
  TORCH_CHECK_VALUE(!grad_clip.has_value() || *grad_clip > 0.0,
                    "grad_clip: expected a value > 0, got ", grad_clip.value_or(0.0));
  TORCH_CHECK_VALUE(!lo.has_value() || !std::isnan(*lo), "clamp: the lower bound is NaN");
  TORCH_CHECK_VALUE(!hi.has_value() || !std::isnan(*hi), "clamp: the upper bound is NaN");
  TORCH_CHECK_VALUE(!lo.has_value() || !hi.has_value() || *lo <= *hi,
                    "clamp: expected lo <= hi, got (", lo.value_or(0.0), ", ", hi.value_or(0.0),
                    ")");
}

inline void check_langevin_bwd(const at::Tensor& grad_out, const at::Tensor& x,
                               const at::Tensor& grad, const at::Tensor& seed,
                               const at::Tensor& offset, double step_size, double noise_std,
                               std::optional<double> grad_clip, std::optional<double> lo,
                               std::optional<double> hi) {
  check_langevin(x, grad, seed, offset, step_size, noise_std, grad_clip, lo, hi);
  check_floating(grad_out, "grad_out");
  check_shape(grad_out, x.sizes(), "grad_out", "x's shape");
  check_device(grad_out, x.device(), "grad_out", "x's device");
}

// ---- plans ---------------------------------------------------------------------------------

inline LangevinScalars langevin_scalars(double step_size, double noise_std,
                                        std::optional<double> grad_clip, std::optional<double> lo,
                                        std::optional<double> hi) {
  LangevinScalars s;
  s.step_size = step_size;
  s.noise_std = noise_std;
  s.has_clip = grad_clip.has_value();
  s.clip = grad_clip.value_or(0.0);
  s.has_lo = lo.has_value();
  s.lo = lo.value_or(0.0);
  s.has_hi = hi.has_value();
  s.hi = hi.value_or(0.0);
  return s;
}

// One forward step: contiguous x and grad, the contiguous out the kernel writes (x itself for
// the in-place op when x is contiguous), n elements. finish() completes the in-place op on a
// non-contiguous x (the step went into a contiguous copy, copied back here).
struct LangevinFwdPlan {
  at::Tensor x, grad, out;
  at::Tensor seed, offset;  // 0-dim int64 on x's device
  LangevinScalars scalars;
  int64_t n = 0;
  at::Tensor write_back;    // the in-place op's non-contiguous x, or undefined

  void finish() const {
    if (write_back.defined()) write_back.copy_(out);
  }
};

// in_place: langevin_step_, whose x must not overlap itself nor (but for being grad itself)
// grad; a non-contiguous x steps in a contiguous copy that finish() copies back.
inline LangevinFwdPlan plan_langevin_step(const at::Tensor& x, const at::Tensor& grad,
                                          const at::Tensor& seed, const at::Tensor& offset,
                                          double step_size, double noise_std,
                                          std::optional<double> grad_clip,
                                          std::optional<double> lo, std::optional<double> hi,
                                          bool in_place) {
  check_langevin(x, grad, seed, offset, step_size, noise_std, grad_clip, lo, hi);
  if (in_place) {
    at::assert_no_internal_overlap(x);
    // grad may be x itself (an element reads its own x and grad before writing), not a shifted
    // view of it.
    at::assert_no_partial_overlap(x, grad);
  }
  const at::Tensor xc = x.contiguous();
  return {xc,
          grad.contiguous(),
          in_place ? xc : new_output(x.sizes(), x.options()),
          seed,
          offset,
          langevin_scalars(step_size, noise_std, grad_clip, lo, hi),
          x.numel(),
          in_place && !x.is_contiguous() ? x : at::Tensor()};
}

// The backward: contiguous grad_out (as x's dtype), x and grad, and the two contiguous
// gradients the kernel writes.
struct LangevinBwdPlan {
  at::Tensor grad_out, x, grad, grad_x, grad_grad;
  at::Tensor seed, offset;
  LangevinScalars scalars;
  int64_t n = 0;
};

inline LangevinBwdPlan plan_langevin_step_bwd(const at::Tensor& grad_out, const at::Tensor& x,
                                              const at::Tensor& grad, const at::Tensor& seed,
                                              const at::Tensor& offset, double step_size,
                                              double noise_std, std::optional<double> grad_clip,
                                              std::optional<double> lo,
                                              std::optional<double> hi) {
  check_langevin_bwd(grad_out, x, grad, seed, offset, step_size, noise_std, grad_clip, lo, hi);
  return {grad_out.to(x.scalar_type()).contiguous(),
          x.contiguous(),
          grad.contiguous(),
          new_output(x.sizes(), x.options()),
          new_output(x.sizes(), x.options()),
          seed,
          offset,
          langevin_scalars(step_size, noise_std, grad_clip, lo, hi),
          x.numel()};
}

// ---- entry points ([Note: host-side plans]): Launch is the backend's ------------------------

template <void (*Launch)(const LangevinFwdPlan&)>
at::Tensor langevin_step_op(const at::Tensor& x, const at::Tensor& grad, const at::Tensor& seed,
                            const at::Tensor& offset, double step_size, double noise_std,
                            std::optional<double> grad_clip, std::optional<double> lo,
                            std::optional<double> hi) {
  const LangevinFwdPlan p = plan_langevin_step(x, grad, seed, offset, step_size, noise_std,
                                               grad_clip, lo, hi, /*in_place=*/false);
  if (p.n > 0) Launch(p);
  return p.out;
}

// langevin_step_ (in place).
template <void (*Launch)(const LangevinFwdPlan&)>
void langevin_step_inplace_op(const at::Tensor& x, const at::Tensor& grad, const at::Tensor& seed,
                              const at::Tensor& offset, double step_size, double noise_std,
                              std::optional<double> grad_clip, std::optional<double> lo,
                              std::optional<double> hi) {
  const LangevinFwdPlan p = plan_langevin_step(x, grad, seed, offset, step_size, noise_std,
                                               grad_clip, lo, hi, /*in_place=*/true);
  if (p.n == 0) return;
  Launch(p);
  p.finish();
}

template <void (*Launch)(const LangevinBwdPlan&)>
std::tuple<at::Tensor, at::Tensor> langevin_step_bwd_op(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& grad,
    const at::Tensor& seed, const at::Tensor& offset, double step_size, double noise_std,
    std::optional<double> grad_clip, std::optional<double> lo, std::optional<double> hi) {
  const LangevinBwdPlan p = plan_langevin_step_bwd(grad_out, x, grad, seed, offset, step_size,
                                                   noise_std, grad_clip, lo, hi);
  if (p.n > 0) Launch(p);
  return {p.grad_x, p.grad_grad};
}

}  // namespace thermokern

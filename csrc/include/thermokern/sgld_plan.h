// Host-side plan of sgld_step_ ([Note: SGLD step] in csrc/thermokern.cpp; [Note: host-side
// plans] in plan.h), used by csrc/cpu/sgld.cpp and csrc/cuda/sgld.cu: the checks and the
// tensor table (thermokern/sgld.h).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <ATen/MemoryOverlap.h>
#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include "thermokern/checks.h"
#include "thermokern/sgld.h"

namespace thermokern {

inline void check_sgld(at::TensorList params, at::TensorList grads, const at::Tensor& seed,
                       const at::Tensor& offset, at::IntArrayRef counter_starts, double lr,
                       double noise_std, double weight_decay) {
  TORCH_CHECK_VALUE(grads.size() == params.size(), "grads: expected ", params.size(),
                    " tensors (one per param), got ", grads.size());
  TORCH_CHECK_VALUE(counter_starts.size() == params.size(), "counter_starts: expected ",
                    params.size(), " values (one per param), got ", counter_starts.size());
  check_finite_positive(lr, "lr");
  check_finite_nonnegative(noise_std, "noise_std");
  check_finite_nonnegative(weight_decay, "weight_decay");
  if (params.empty()) return;
  const at::Tensor& p0 = params[0];
  for (size_t i = 0; i < params.size(); ++i) {
    const at::Tensor& p = params[i];
    const at::Tensor& g = grads[i];
    const std::string pn = "params[" + std::to_string(i) + "]";
    const std::string gn = "grads[" + std::to_string(i) + "]";
    TORCH_CHECK_VALUE(p.layout() == at::kStrided, pn, ": expected a dense (strided) tensor, got ",
                      p.layout());
    TORCH_CHECK_VALUE(g.layout() == at::kStrided, gn, ": expected a dense gradient, got a ",
                      g.layout(), " one (sparse gradients are not supported)");
    check_floating(p, pn);
    check_dtype(p, p0.scalar_type(), pn, "params[0]'s; one call updates one dtype");
    check_device(p, p0.device(), pn, "params[0]'s");
    check_like(g, p, gn, pn);
    TORCH_CHECK_VALUE(counter_starts[i] >= 0, "counter_starts[", i,
                      "]: expected a value >= 0, got ", counter_starts[i]);
  }
  check_rng_tensor(seed, p0.device(), "seed", "the params' device");
  check_rng_tensor(offset, p0.device(), "offset", "the params' device");
}

// The table of the non-empty tensors (contiguous copies where needed: a non-contiguous param
// is updated through a copy that finish() writes back, a non-contiguous grad read through one),
// the number of units of the work space (thermokern/sgld.h), and the step's scalars.
struct SgldPlan {
  std::vector<SgldTensor> table;
  int64_t units = 0;
  at::ScalarType dtype = at::kFloat;  // the params'
  at::Device device = at::kCPU;
  at::Tensor seed, offset;            // 0-dim int64 on the params' device
  double lr = 0.0, noise_std = 0.0, weight_decay = 0.0;
  std::vector<at::Tensor> keep;                               // alive for the call
  std::vector<std::pair<at::Tensor, at::Tensor>> write_back;  // (param, its contiguous copy)

  void finish() const {
    for (const auto& [p, pc] : write_back) p.copy_(pc);
  }
};

inline SgldPlan plan_sgld_step(at::TensorList params, at::TensorList grads,
                               const at::Tensor& seed, const at::Tensor& offset,
                               at::IntArrayRef counter_starts, double lr, double noise_std,
                               double weight_decay, int64_t counters_per_unit) {
  check_sgld(params, grads, seed, offset, counter_starts, lr, noise_std, weight_decay);
  SgldPlan plan;
  if (!params.empty()) {
    plan.dtype = params[0].scalar_type();
    plan.device = params[0].device();
  }
  plan.seed = seed;
  plan.offset = offset;
  plan.lr = lr;
  plan.noise_std = noise_std;
  plan.weight_decay = weight_decay;
  plan.table.reserve(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    const at::Tensor& p = params[i];
    const at::Tensor& g = grads[i];
    if (p.numel() == 0) continue;
    at::assert_no_internal_overlap(p);
    // grad may be the param itself (the gradient of |p|^2 / 2), not a shifted view of it.
    at::assert_no_partial_overlap(p, g);
    at::Tensor pc = p;
    if (!p.is_contiguous()) {
      pc = p.contiguous();
      plan.write_back.emplace_back(p, pc);
    }
    at::Tensor gc = g.is_same(p) ? pc : g.contiguous();
    SgldTensor t;
    t.param = reinterpret_cast<int64_t>(pc.data_ptr());
    t.grad = reinterpret_cast<int64_t>(gc.const_data_ptr());
    t.numel = p.numel();
    t.counter_start = counter_starts[i];
    t.first_unit = plan.units;
    plan.units += ((t.numel + 3) / 4 + counters_per_unit - 1) / counters_per_unit;
    plan.table.push_back(t);
    plan.keep.push_back(std::move(pc));
    plan.keep.push_back(std::move(gc));
  }
  return plan;
}

// The entry point ([Note: host-side plans]): Launch is the backend's; a work unit is
// kCountersPerUnit Philox counters.
template <int64_t kCountersPerUnit, void (*Launch)(const SgldPlan&)>
void sgld_step_op(at::TensorList params, at::TensorList grads, const at::Tensor& seed,
                  const at::Tensor& offset, at::IntArrayRef counter_starts, double lr,
                  double noise_std, double weight_decay) {
  const SgldPlan p = plan_sgld_step(params, grads, seed, offset, counter_starts, lr, noise_std,
                                    weight_decay, kCountersPerUnit);
  if (p.table.empty()) return;
  Launch(p);
  p.finish();
}

}  // namespace thermokern

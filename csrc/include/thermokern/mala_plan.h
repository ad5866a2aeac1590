// Host-side plans of mala_accept and mala_proposal ([Note: MALA acceptance] in mala.h;
// [Note: host-side plans] in plan.h), used by csrc/cpu/mala.cpp and csrc/cuda/mala.cu.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <tuple>

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include "thermokern/checks.h"
#include "thermokern/plan.h"

namespace thermokern {

// A per-chain parameter ([Note: per-chain MALA parameters] in csrc/thermokern.cpp): a 1-D
// accumulation-dtype tensor of one value per chain or one for every chain, as the kernels read
// it: chain c's value at values[c * stride] (stride 0 or 1). Undefined: not given.
struct ChainParam {
  at::Tensor values;
  int64_t stride = 0;
  bool defined() const { return values.defined(); }
};

inline ChainParam chain_param(const std::optional<at::Tensor>& t, const at::Tensor& x,
                              std::string_view name) {
  if (!t.has_value()) return {};
  const int64_t chains = x.size(0);
  TORCH_CHECK_VALUE(t->dim() == 1 && (t->size(0) == 1 || t->size(0) == chains), name,
                    ": expected 1 or ", chains, " (one per chain) values, got shape ", t->sizes());
  check_dtype(*t, acc_dtype(x.scalar_type()), name);
  check_device(*t, x.device(), name);
  return {t->contiguous(), t->size(0) == 1 ? 0 : 1};
}

// The chains of both ops: x (dim 0 indexes chains), its gradient and the step's Philox key
// and counter.
inline void check_chains(const at::Tensor& x, const at::Tensor& grad, const at::Tensor& seed,
                         const at::Tensor& offset) {
  check_floating(x, "x");
  TORCH_CHECK_VALUE(x.dim() >= 1, "x: expected at least 1 dimension (dim 0 indexes chains), "
                    "got a 0-dim tensor");
  check_like(grad, x, "grad", "x");
  check_rng_tensor(seed, x.device(), "seed", "x's device");
  check_rng_tensor(offset, x.device(), "offset", "x's device");
}

// The chains of both ops as contiguous (chains, row) blocks, and the step's Philox key and
// counter.
struct MalaLayout {
  int64_t chains = 0, row = 0, numel = 0;
  at::Tensor seed, offset;
};

inline MalaLayout mala_layout(const at::Tensor& x, const at::Tensor& seed, const at::Tensor& offset) {
  const int64_t chains = x.size(0), numel = x.numel();
  return {chains, chains > 0 ? numel / chains : 0, numel, seed, offset};
}

inline void check_mala_accept(const at::Tensor& x, const at::Tensor& x_prop, const at::Tensor& grad,
                              const at::Tensor& grad_prop, const at::Tensor& energy,
                              const at::Tensor& energy_prop, const at::Tensor& seed,
                              const at::Tensor& offset, double step_size, double temperature) {
  check_chains(x, grad, seed, offset);
  check_like(x_prop, x, "x_prop", "x");
  check_like(grad_prop, x, "grad_prop", "x");
  const auto acc = acc_dtype(x.scalar_type());
  check_vector(energy, x.size(0), acc, x.device(), "energy", "one energy per chain");
  check_vector(energy_prop, x.size(0), acc, x.device(), "energy_prop", "one energy per chain");
  check_finite_positive(step_size, "step_size");
  check_finite_positive(temperature, "temperature");
}

// The chains as contiguous (chains, row) blocks and the outputs: x_new (x's shape, contiguous),
// accepted (chains,) bool, log_alpha (chains,) accumulation dtype.
struct MalaPlan {
  MalaLayout layout;
  at::Tensor x, x_prop, grad, grad_prop, energy, energy_prop;  // contiguous
  double step_size = 0.0, temperature = 1.0;
  ChainParam chain_step, chain_temp;  // when defined, they replace step_size / temperature
  at::Tensor x_new, accepted, log_alpha;
};

inline MalaPlan plan_mala_accept(const at::Tensor& x, const at::Tensor& x_prop,
                                 const at::Tensor& grad, const at::Tensor& grad_prop,
                                 const at::Tensor& energy, const at::Tensor& energy_prop,
                                 const at::Tensor& seed, const at::Tensor& offset,
                                 double step_size, double temperature,
                                 const std::optional<at::Tensor>& chain_step_size,
                                 const std::optional<at::Tensor>& chain_temperature) {
  check_mala_accept(x, x_prop, grad, grad_prop, energy, energy_prop, seed, offset, step_size,
                    temperature);
  MalaPlan p;
  p.chain_step = chain_param(chain_step_size, x, "chain_step_size");
  p.chain_temp = chain_param(chain_temperature, x, "chain_temperature");
  p.layout = mala_layout(x, seed, offset);
  p.x_new = new_output(x.sizes(), x.options());
  p.accepted = at::empty({p.layout.chains}, x.options().dtype(at::kBool));
  p.log_alpha = new_output({p.layout.chains}, x.options().dtype(acc_dtype(x.scalar_type())));
  if (p.layout.chains == 0) return p;
  p.x = x.contiguous();
  p.x_prop = x_prop.contiguous();
  p.grad = grad.contiguous();
  p.grad_prop = grad_prop.contiguous();
  p.energy = energy.contiguous();
  p.energy_prop = energy_prop.contiguous();
  p.step_size = step_size;
  p.temperature = temperature;
  return p;
}

// mala_proposal: contiguous x and grad as (chains, row), the per-chain parameters, the output.
struct MalaProposalPlan {
  MalaLayout layout;
  at::Tensor x, grad;
  ChainParam step, temp;
  at::Tensor out;
};

inline MalaProposalPlan plan_mala_proposal(const at::Tensor& x, const at::Tensor& grad,
                                           const at::Tensor& seed, const at::Tensor& offset,
                                           const at::Tensor& step_size,
                                           const at::Tensor& temperature) {
  check_chains(x, grad, seed, offset);
  MalaProposalPlan p;
  p.step = chain_param(step_size, x, "step_size");
  p.temp = chain_param(temperature, x, "temperature");
  p.layout = mala_layout(x, seed, offset);
  p.out = new_output(x.sizes(), x.options());
  p.x = x.contiguous();
  p.grad = grad.contiguous();
  return p;
}

// The entry points ([Note: host-side plans]): Launch is the backend's.
template <void (*Launch)(const MalaPlan&)>
std::tuple<at::Tensor, at::Tensor, at::Tensor> mala_accept_op(
    const at::Tensor& x, const at::Tensor& x_prop, const at::Tensor& grad,
    const at::Tensor& grad_prop, const at::Tensor& energy, const at::Tensor& energy_prop,
    const at::Tensor& seed, const at::Tensor& offset, double step_size, double temperature,
    const std::optional<at::Tensor>& chain_step_size,
    const std::optional<at::Tensor>& chain_temperature) {
  const MalaPlan p = plan_mala_accept(x, x_prop, grad, grad_prop, energy, energy_prop, seed,
                                      offset, step_size, temperature, chain_step_size,
                                      chain_temperature);
  if (p.layout.chains > 0) Launch(p);
  return {p.x_new, p.accepted, p.log_alpha};
}

template <void (*Launch)(const MalaProposalPlan&)>
at::Tensor mala_proposal_op(const at::Tensor& x, const at::Tensor& grad, const at::Tensor& seed,
                            const at::Tensor& offset, const at::Tensor& step_size,
                            const at::Tensor& temperature) {
  const MalaProposalPlan p = plan_mala_proposal(x, grad, seed, offset, step_size, temperature);
  if (p.layout.numel > 0) Launch(p);
  return p.out;
}

}  // namespace thermokern

// Argument checks of sgld_step_ ([Note: SGLD step] in csrc/thermokern.cpp), shared by the CPU
// and CUDA implementations. Messages name the argument and the list position.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Exception.h>

#include "thermokern/checks.h"

namespace thermokern {

inline void check_sgld(at::TensorList params, at::TensorList grads, const at::Tensor& seed,
                       const at::Tensor& offset, at::IntArrayRef counter_starts, double lr,
                       double noise_std, double weight_decay) {
  TORCH_CHECK_VALUE(grads.size() == params.size(), "grads: expected ", params.size(),
                    " tensors (one per param), got ", grads.size());
  TORCH_CHECK_VALUE(counter_starts.size() == params.size(), "counter_starts: expected ",
                    params.size(), " values (one per param), got ", counter_starts.size());
  TORCH_CHECK_VALUE(std::isfinite(lr) && lr > 0.0, "lr: expected a finite value > 0, got ", lr);
  TORCH_CHECK_VALUE(std::isfinite(noise_std) && noise_std >= 0.0,
                    "noise_std: expected a finite value >= 0, got ", noise_std);
  TORCH_CHECK_VALUE(std::isfinite(weight_decay) && weight_decay >= 0.0,
                    "weight_decay: expected a finite value >= 0, got ", weight_decay);
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
    check_floating(p, pn.c_str());
    TORCH_CHECK_TYPE(p.scalar_type() == p0.scalar_type(), pn, ": expected dtype ",
                     p0.scalar_type(), " (params[0]'s; one call updates one dtype), got ",
                     p.scalar_type());
    TORCH_CHECK_VALUE(p.device() == p0.device(), pn, ": expected device ", p0.device(),
                      " (params[0]'s), got ", p.device());
    TORCH_CHECK_VALUE(g.sizes() == p.sizes(), gn, ": expected shape ", p.sizes(),
                      " (its param's), got ", g.sizes());
    TORCH_CHECK_TYPE(g.scalar_type() == p.scalar_type(), gn, ": expected dtype ",
                     p.scalar_type(), " (its param's), got ", g.scalar_type());
    TORCH_CHECK_VALUE(g.device() == p.device(), gn, ": expected device ", p.device(), ", got ",
                      g.device());
    TORCH_CHECK_VALUE(counter_starts[i] >= 0, "counter_starts[", i,
                      "]: expected a value >= 0, got ", counter_starts[i]);
  }
  for (const auto* t : {&seed, &offset}) {
    const char* name = t == &seed ? "seed" : "offset";
    TORCH_CHECK_TYPE(t->scalar_type() == at::kLong, name, ": expected an int64 tensor, got ",
                     t->scalar_type());
    TORCH_CHECK_VALUE(t->dim() == 0, name, ": expected a 0-dim tensor, got shape ", t->sizes());
    TORCH_CHECK_VALUE(t->device() == p0.device(), name, ": expected a tensor on ", p0.device(),
                      " (the params' device), got ", t->device());
  }
}

}  // namespace thermokern

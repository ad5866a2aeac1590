// Argument checks of mala_accept (csrc/thermokern.cpp), shared by the CPU and CUDA ops.
#pragma once

#include <cmath>

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "thermokern/checks.h"

namespace thermokern {

inline void check_mala_accept(const at::Tensor& x, const at::Tensor& x_prop, const at::Tensor& grad,
                              const at::Tensor& grad_prop, const at::Tensor& energy,
                              const at::Tensor& energy_prop, const at::Tensor& seed,
                              const at::Tensor& offset, double step_size, double temperature) {
  check_floating(x, "x");
  TORCH_CHECK_VALUE(x.dim() >= 1, "x: expected at least 1 dimension (dim 0 indexes chains), got a 0-dim tensor");
  const at::Tensor* same[] = {&x_prop, &grad, &grad_prop};
  const char* names[] = {"x_prop", "grad", "grad_prop"};
  for (int i = 0; i < 3; ++i) {
    const at::Tensor& t = *same[i];
    TORCH_CHECK_VALUE(t.sizes() == x.sizes(), names[i], ": expected shape ", x.sizes(),
                      " (x's shape), got ", t.sizes());
    TORCH_CHECK_TYPE(t.scalar_type() == x.scalar_type(), names[i], ": expected dtype ",
                     x.scalar_type(), " (x's dtype), got ", t.scalar_type());
    TORCH_CHECK_VALUE(t.device() == x.device(), names[i], ": expected device ", x.device(),
                      ", got ", t.device());
  }
  const auto acc = acc_dtype(x.scalar_type());
  const at::Tensor* energies[] = {&energy, &energy_prop};
  const char* enames[] = {"energy", "energy_prop"};
  for (int i = 0; i < 2; ++i) {
    const at::Tensor& t = *energies[i];
    TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == x.size(0), enames[i],
                      ": expected one energy per chain, shape (", x.size(0), "), got ", t.sizes());
    TORCH_CHECK_TYPE(t.scalar_type() == acc, enames[i], ": expected dtype ", acc,
                     " (the accumulation dtype of x), got ", t.scalar_type());
    TORCH_CHECK_VALUE(t.device() == x.device(), enames[i], ": expected device ", x.device(),
                      ", got ", t.device());
  }
  check_langevin_rng(seed, x, "seed");
  check_langevin_rng(offset, x, "offset");
  TORCH_CHECK_VALUE(std::isfinite(step_size) && step_size > 0.0,
                    "step_size: expected a finite value > 0, got ", step_size);
  TORCH_CHECK_VALUE(std::isfinite(temperature) && temperature > 0.0,
                    "temperature: expected a finite value > 0, got ", temperature);
}

}  // namespace thermokern

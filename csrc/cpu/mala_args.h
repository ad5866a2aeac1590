// Arguments and per-ISA entry points of the mala_accept CPU kernel (mala_kernel.h; the op is
// csrc/cpu/mala.cpp). The host/device MALA algebra is thermokern/mala.h.
#pragma once

#include <cstdint>

#include <c10/core/ScalarType.h>

#include "isa.h"

namespace thermokern::cpu {

// Arguments of the acceptance test ([Note: MALA acceptance] in thermokern/mala.h) over the
// chains [chain_begin, chain_end) of contiguous (chains, row) tensors.
struct MalaArgs {
  c10::ScalarType dtype;
  int64_t chains = 0;
  int64_t row = 0;     // elements per chain
  int64_t numel = 0;   // chains * row: the proposal used ceil(numel / 4) counters
  uint64_t seed = 0;   // Philox key
  uint64_t offset = 0; // the step's first counter (the proposal's)
  double step_size = 0.0;
  double temperature = 1.0;
  const void* x = nullptr;          // (chains, row) input dtype
  const void* x_prop = nullptr;     // (chains, row)
  const void* grad = nullptr;       // (chains, row)
  const void* grad_prop = nullptr;  // (chains, row)
  const void* energy = nullptr;     // (chains,) accumulation dtype
  const void* energy_prop = nullptr;
  void* x_new = nullptr;            // out: (chains, row) input dtype
  bool* accepted = nullptr;         // out: (chains,)
  void* log_alpha = nullptr;        // out: (chains,) accumulation dtype
};

using MalaFn = void (*)(const MalaArgs& args, int64_t chain_begin, int64_t chain_end);

TK_DECLARE_ISA_VARIANTS(void, mala_accept, (const MalaArgs&, int64_t, int64_t))

}  // namespace thermokern::cpu

// Arguments and per-ISA entry points of the mala_accept and mala_proposal CPU kernels
// (mala_kernel.h; the ops are csrc/cpu/mala.cpp). The host/device MALA algebra is thermokern/mala.h.
#pragma once

#include <cstdint>

#include <c10/core/ScalarType.h>

#include "isa.h"

namespace thermokern::cpu {

// The chains of both kernels: contiguous (chains, row) tensors and the step's Philox stream.
struct MalaLayoutArgs {
  c10::ScalarType dtype;
  int64_t chains = 0;
  int64_t row = 0;     // elements per chain
  int64_t numel = 0;   // chains * row: the proposal uses ceil(numel / 4) counters
  uint64_t seed = 0;   // Philox key
  uint64_t offset = 0; // the step's first counter (the proposal's)
};

// Arguments of the acceptance test ([Note: MALA acceptance] in thermokern/mala.h) over the
// chains [chain_begin, chain_end).
struct MalaArgs : MalaLayoutArgs {
  double step_size = 0.0;
  double temperature = 1.0;
  // Per-chain step sizes / temperatures (accumulation dtype, chain c at [c * stride]), or
  // null: step_size / temperature for every chain.
  const void* chain_step = nullptr;
  const void* chain_temp = nullptr;
  int64_t chain_step_stride = 0, chain_temp_stride = 0;
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

// mala_proposal over the Philox counters [ctr_begin, ctr_end) (elements 4 ctr .. 4 ctr + 3)
// of contiguous (chains, row) tensors, with chain c's eta and T (accumulation dtype) at
// step[c * step_stride] and temp[c * temp_stride].
struct MalaProposalArgs : MalaLayoutArgs {
  const void* x = nullptr;     // (chains, row) input dtype
  const void* grad = nullptr;  // (chains, row) input dtype
  void* out = nullptr;         // (chains, row) input dtype
  const void* step = nullptr;
  const void* temp = nullptr;
  int64_t step_stride = 0, temp_stride = 0;
};

using MalaProposalFn = void (*)(const MalaProposalArgs& args, int64_t ctr_begin, int64_t ctr_end);

TK_DECLARE_ISA_VARIANTS(void, mala_proposal, (const MalaProposalArgs&, int64_t, int64_t))

}  // namespace thermokern::cpu

// The MALA acceptance kernels (csrc/cpu/mala_kernel.h), compiled once per ISA like the
// kernels of isa.h; csrc/cpu/mala.cpp picks the variant of thermokern::cpu::active_isa().
#pragma once

#include <cstdint>

#include <c10/core/ScalarType.h>

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

void mala_accept_DEFAULT(const MalaArgs&, int64_t, int64_t);
#if defined(__x86_64__)
void mala_accept_AVX2(const MalaArgs&, int64_t, int64_t);
void mala_accept_AVX512(const MalaArgs&, int64_t, int64_t);
#endif

}  // namespace thermokern::cpu

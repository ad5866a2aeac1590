// Arguments and per-ISA entry points of the langevin_step CPU kernels (langevin_kernel.h; the
// op is csrc/cpu/langevin.cpp), and langevin_words for the tests.
#pragma once

#include <cstdint>
#include <vector>

#include <c10/core/ScalarType.h>

#include "isa.h"
#include "thermokern/langevin.h"

namespace thermokern::cpu {

// One step over the n elements of contiguous tensors, split by Philox counter (counter c
// covers elements 4c .. 4c + 3; see [Note: Langevin noise layout] in thermokern/philox.h).
// The step's scalars (step_size, noise_std, clip and clamp bounds) are the base.
struct LangevinArgs : LangevinScalars {
  c10::ScalarType dtype;
  int64_t n = 0;               // elements
  uint64_t seed = 0;           // Philox key
  uint64_t offset = 0;         // counter of element 0
  const void* x = nullptr;     // (n,) input dtype
  const void* grad = nullptr;  // (n,) input dtype
  void* out = nullptr;         // forward: (n,) input dtype, may be x itself (in place);
                               // words: (4 * counters,) uint32
  // Backward: upstream gradient and the two gradients, (n,) input dtype.
  const void* grad_out = nullptr;
  void* grad_x = nullptr;
  void* grad_grad = nullptr;
};

// Processes the counters [ctr_begin, ctr_end) (relative to args.offset).
using LangevinFn = void (*)(const LangevinArgs& args, int64_t ctr_begin, int64_t ctr_end);

// fwd: out = clamp(x - eta clip(grad) + sigma n); bwd: grad_x, grad_grad from grad_out
// (recomputes the clamp condition); words: the raw Philox words (the vectorised generator's
// bits, for the tests).
TK_DECLARE_ISA_VARIANTS(void, langevin_fwd, (const LangevinArgs&, int64_t, int64_t))
TK_DECLARE_ISA_VARIANTS(void, langevin_bwd, (const LangevinArgs&, int64_t, int64_t))
TK_DECLARE_ISA_VARIANTS(void, langevin_words, (const LangevinArgs&, int64_t, int64_t))

// The Philox words of counters offset .. offset + n - 1 as the active ISA's Langevin kernel
// generates them, 4 per counter (csrc/cpu/langevin.cpp; thermokern._C._langevin_words).
std::vector<uint32_t> langevin_words(uint64_t seed, uint64_t offset, int64_t n);

}  // namespace thermokern::cpu

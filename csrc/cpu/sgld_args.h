// Arguments and per-ISA entry points of the sgld_step_ CPU kernel (sgld_kernel.h; the op is
// csrc/cpu/sgld.cpp).
#pragma once

#include <cstdint>

#include <c10/core/ScalarType.h>

#include "isa.h"
#include "thermokern/sgld.h"

namespace thermokern::cpu {

// One step over a list of contiguous tensors of one dtype, their Philox counters concatenated
// into one work space of units of one counter (thermokern/sgld.h): work item w of tensor t is
// its counter c = w - t.first_unit, drawn at Philox counter offset + t.counter_start + c
// ([Note: SGLD step] in csrc/thermokern.cpp).
struct SgldArgs {
  c10::ScalarType dtype;
  uint64_t seed = 0;           // Philox key
  uint64_t offset = 0;         // base counter of the step
  double lr = 0.0;             // eta
  double noise_std = 0.0;      // sigma (0: no noise is generated)
  double weight_decay = 0.0;   // lambda: the gradient is grad + lambda * param
  const SgldTensor* tensors = nullptr;
  int64_t n_tensors = 0;
};

// Processes the work items [work_begin, work_end) of the concatenated tensors.
using SgldFn = void (*)(const SgldArgs& args, int64_t work_begin, int64_t work_end);

TK_DECLARE_ISA_VARIANTS(void, sgld_step, (const SgldArgs&, int64_t, int64_t))

}  // namespace thermokern::cpu

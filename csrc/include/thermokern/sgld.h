// The tensor table of sgld_step_ ([Note: SGLD step] in csrc/thermokern.cpp), one row per
// (non-empty) tensor, read by the CPU kernel and, copied to the device, by the CUDA kernel.
// No torch: the per-ISA CPU kernel arguments include this. sgld_plan.h builds the table.
#pragma once

#include <cstdint>

namespace thermokern {

// A tensor's rows are its counters c = 0 .. ceil(numel / 4) - 1 (elements 4c .. 4c + 3), drawn at
// Philox counter offset + counter_start + c. The rows of all tensors form one work space of
// `units` (a unit: the backend's number of counters per task or thread block); the tensor owns
// the units [first_unit, first_unit + ceil(counters / counters_per_unit)).
struct SgldTensor {
  int64_t param;          // address of the contiguous param, updated in place
  int64_t grad;           // address of the contiguous grad (param's dtype)
  int64_t numel;          // > 0
  int64_t counter_start;  // >= 0, relative to the step's offset
  int64_t first_unit;     // sum of the earlier tensors' units
};
static_assert(sizeof(SgldTensor) == 5 * sizeof(int64_t), "SgldTensor is 5 int64");

}  // namespace thermokern

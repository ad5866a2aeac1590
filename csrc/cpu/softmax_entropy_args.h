// Arguments and per-ISA entry points of the softmax_entropy CPU kernels
// (softmax_entropy_kernel.h; the op is csrc/cpu/softmax_entropy.cpp). The cross-entropy kernels
// extend these arguments (cross_entropy_args.h).
#pragma once

#include <cstdint>

#include <c10/core/ScalarType.h>

#include "isa.h"

namespace thermokern::cpu {

// Rows [row_begin, row_end) of a (rows, C) matrix x whose rows are row_stride elements apart
// (unit stride inside a row). Per-row values (inv_t, entropy, shift, log_norm, grad) are in the
// accumulation type: float for float, half and bfloat16; double for double. inv_t holds 1/T for
// row r at inv_t[r * inv_t_stride].
struct SoftmaxEntropyArgs {
  c10::ScalarType dtype;
  const void* x;
  int64_t C;
  int64_t row_stride;
  const void* inv_t;
  int64_t inv_t_stride;  // 0: one temperature for all rows, 1: per row
  // Row statistics (thermokern/row_stats.h): written by the forwards, read by the backwards.
  // The shift is the row maximum, or a little below it (row_stats_kernel.h).
  void* entropy = nullptr;
  void* shift = nullptr;
  void* log_norm = nullptr;
  // Backward: upstream gradient per row, and the contiguous (rows, C) gradient (input dtype).
  const void* grad = nullptr;
  void* grad_x = nullptr;
};

using SoftmaxEntropyFn = void (*)(const SoftmaxEntropyArgs& args, int64_t row_begin,
                                  int64_t row_end);

TK_DECLARE_ISA_VARIANTS(void, softmax_entropy_fwd, (const SoftmaxEntropyArgs&, int64_t, int64_t))
TK_DECLARE_ISA_VARIANTS(void, softmax_entropy_bwd, (const SoftmaxEntropyArgs&, int64_t, int64_t))

}  // namespace thermokern::cpu

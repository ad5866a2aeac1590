// Arguments and per-ISA entry points of the partition CPU kernels (partition_kernel.h; the op
// is csrc/cpu/partition.cpp).
#pragma once

#include <cstdint>

#include <c10/core/ScalarType.h>

#include "isa.h"

namespace thermokern::cpu {

// Arguments of partition_fwd / partition_bwd (csrc/thermokern.cpp, [Note: partition
// statistics]): a contiguous (O, R, I) tensor x reduced over R; output j = o * I + i. Per-output
// values are in the accumulation type. Forward tasks are rows (I == 1) or (o, tile of lanes)
// pairs (partition_kernel.h, [Note: lanes]); backward tasks are rows (I == 1) or (o, r) lines.
struct PartitionArgs {
  c10::ScalarType dtype;
  const void* x;
  const void* weight = nullptr;  // x's dtype, or nullptr
  const bool* mask = nullptr;
  // Element (o, r, i) of weight is weight[o * ws[0] + r * ws[1] + i * ws[2]], of mask likewise
  // (any strides: a broadcast argument has stride 0 in its broadcast dims).
  int64_t ws[3] = {0, 0, 0};
  int64_t ms[3] = {0, 0, 0};
  int64_t O, R, I;
  const void* scale;
  int64_t scale_stride;  // 0: one k for every output, 1: per output
  bool negate = false;
  int64_t moments = 0;
  // Forward outputs.
  void* shift = nullptr;
  void* sum = nullptr;
  void* m1 = nullptr;
  void* m2 = nullptr;
  // Backward: shift and log_norm as inputs, coefficients transposed to (n_coef, outputs).
  const void* log_norm = nullptr;
  const void* coef = nullptr;
  int64_t n_coef = 1;
  int64_t coef_stride = 0;  // = number of outputs
  void* grad_x = nullptr;
  void* grad_w = nullptr;
};

using PartitionFn = void (*)(const PartitionArgs& args, int64_t task_begin, int64_t task_end);

TK_DECLARE_ISA_VARIANTS(void, partition_fwd, (const PartitionArgs&, int64_t, int64_t))
TK_DECLARE_ISA_VARIANTS(void, partition_bwd, (const PartitionArgs&, int64_t, int64_t))
// The number of tasks of partition_fwd (they depend on the ISA's vector width).
TK_DECLARE_ISA_VARIANTS(int64_t, partition_fwd_tasks, (const PartitionArgs&))

}  // namespace thermokern::cpu

// Arguments and per-ISA entry points of the cross_entropy CPU kernels (cross_entropy_kernel.h;
// the op is csrc/cpu/cross_entropy.cpp): softmax_entropy's rows and statistics, plus the target
// and the loss.
#pragma once

#include <cstdint>

#include "isa.h"
#include "softmax_entropy_args.h"

namespace thermokern::cpu {

struct CrossEntropyArgs : SoftmaxEntropyArgs {
  const int64_t* target = nullptr;  // (rows,)
  void* loss = nullptr;             // (rows,) accumulation type
  double entropy_weight = 0.0;
  double label_smoothing = 0.0;
  double z_loss_weight = 0.0;
  int64_t ignore_index = -100;
};

using CrossEntropyFn = void (*)(const CrossEntropyArgs& args, int64_t row_begin, int64_t row_end);

TK_DECLARE_ISA_VARIANTS(void, cross_entropy_fwd, (const CrossEntropyArgs&, int64_t, int64_t))
TK_DECLARE_ISA_VARIANTS(void, cross_entropy_bwd, (const CrossEntropyArgs&, int64_t, int64_t))

}  // namespace thermokern::cpu

// Arguments and per-ISA entry points of the token_logprobs CPU kernels
// (token_logprobs_kernel.h; the op is csrc/cpu/token_logprobs.cpp): softmax_entropy's rows and
// statistics, plus the target, the log-probabilities and the entropy's upstream gradient.
#pragma once

#include <cstdint>

#include "isa.h"
#include "softmax_entropy_args.h"

namespace thermokern::cpu {

// The inherited `grad` is the upstream gradient of logp in the backward.
struct TokenLogprobsArgs : SoftmaxEntropyArgs {
  const int64_t* target = nullptr;      // (rows,)
  void* logp = nullptr;                 // forward: (rows,) accumulation type
  const void* grad_entropy = nullptr;   // backward: (rows,) accumulation type, or null (none)
  int64_t ignore_index = -100;
};

TK_DECLARE_ISA_VARIANTS(void, token_logprobs_fwd, (const TokenLogprobsArgs&, int64_t, int64_t))
TK_DECLARE_ISA_VARIANTS(void, token_logprobs_bwd, (const TokenLogprobsArgs&, int64_t, int64_t))

}  // namespace thermokern::cpu

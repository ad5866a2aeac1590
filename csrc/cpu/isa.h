// Run-time choice of the CPU instruction set for the vectorised kernels.
//
// Each kernel header under csrc/cpu/ is compiled once per ISA (csrc/cpu/isa/*.cpp), with
// at::vec specialised for that ISA; the op picks the widest variant this CPU supports.
// THERMOKERN_CPU_ISA=default|avx2|avx512 (or thermokern._C._set_cpu_isa) forces a narrower
// one, which the tests use to check every variant on one machine.
#pragma once

#include <cstdint>
#include <string>

#include <c10/core/ScalarType.h>

namespace thermokern::cpu {

enum class Isa : int { Default = 0, Avx2 = 1, Avx512 = 2 };

// Forward of softmax_entropy over rows [row_begin, row_end) of a (rows, C) matrix whose rows
// are `row_stride` elements apart (unit stride inside a row). Writes the entropy, the shift
// (the row maximum, or a little below it: entropy_kernel.h) and log_norm (row_stats.h) in the
// accumulation type (float for float, half and bfloat16; double for double).
using EntropyFwdFn = void (*)(c10::ScalarType dtype, const void* x, int64_t row_begin,
                              int64_t row_end, int64_t C, int64_t row_stride, double inv_t,
                              void* entropy, void* shift, void* log_norm);
// Backward: grad_x = -(g / T) p (log p + H), log p = (x - shift) / T - log_norm. The
// per-row inputs are in the accumulation type; grad_x is contiguous (rows, C), input dtype.
using EntropyBwdFn = void (*)(c10::ScalarType dtype, const void* grad, const void* x,
                              const void* entropy, const void* shift, const void* log_norm,
                              void* grad_x, int64_t row_begin, int64_t row_end, int64_t C,
                              int64_t row_stride, double inv_t);

struct Kernels {
  EntropyFwdFn entropy_fwd;
  EntropyBwdFn entropy_bwd;
};

#define TK_DECLARE_ISA(ISA)                                                                   \
  void entropy_fwd_##ISA(c10::ScalarType, const void*, int64_t, int64_t, int64_t, int64_t,  \
                         double, void*, void*, void*);                                      \
  void entropy_bwd_##ISA(c10::ScalarType, const void*, const void*, const void*, const void*, \
                         const void*, void*, int64_t, int64_t, int64_t, int64_t, double);
TK_DECLARE_ISA(DEFAULT)
#if defined(__x86_64__)
TK_DECLARE_ISA(AVX2)
TK_DECLARE_ISA(AVX512)
#endif
#undef TK_DECLARE_ISA

Isa best_supported_isa();
Isa active_isa();
void set_active_isa(const std::string& name);  // "", "default", "avx2", "avx512"
std::string isa_name(Isa isa);
const Kernels& kernels();

}  // namespace thermokern::cpu

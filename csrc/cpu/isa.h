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

// Arguments of the row kernels. Rows [row_begin, row_end) of a (rows, C) matrix x whose rows
// are row_stride elements apart (unit stride inside a row). Per-row values (inv_t, entropy,
// shift, log_norm, grad, loss) are in the accumulation type: float for float, half and
// bfloat16; double for double. inv_t holds 1/T for row r at inv_t[r * inv_t_stride].
struct EntropyArgs {
  c10::ScalarType dtype;
  const void* x;
  int64_t C;
  int64_t row_stride;
  const void* inv_t;
  int64_t inv_t_stride;  // 0: one temperature for all rows, 1: per row
  // Row statistics (row_stats.h): written by the forwards, read by the backwards. The shift is
  // the row maximum, or a little below it (see entropy_kernel.h).
  void* entropy = nullptr;
  void* shift = nullptr;
  void* log_norm = nullptr;
  // Backward: upstream gradient per row, and the contiguous (rows, C) gradient (input dtype).
  const void* grad = nullptr;
  void* grad_x = nullptr;
  // Cross-entropy.
  const int64_t* target = nullptr;
  void* loss = nullptr;
  double entropy_weight = 0.0;
  double label_smoothing = 0.0;
  double z_loss_weight = 0.0;
  int64_t ignore_index = -100;
};

using RowFn = void (*)(const EntropyArgs& args, int64_t row_begin, int64_t row_end);

struct Kernels {
  RowFn entropy_fwd;
  RowFn entropy_bwd;
  RowFn entropy_ce_fwd;
  RowFn entropy_ce_bwd;
};

#define TK_DECLARE_ISA(ISA)                                  \
  void entropy_fwd_##ISA(const EntropyArgs&, int64_t, int64_t);    \
  void entropy_bwd_##ISA(const EntropyArgs&, int64_t, int64_t);    \
  void entropy_ce_fwd_##ISA(const EntropyArgs&, int64_t, int64_t); \
  void entropy_ce_bwd_##ISA(const EntropyArgs&, int64_t, int64_t);
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

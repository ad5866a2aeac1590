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

// Arguments of partition_fwd / partition_bwd (csrc/thermokern.cpp, [Note: partition
// statistics]): a contiguous (O, R, I) tensor x reduced over R; output j = o * I + i. Per-output
// values are in the accumulation type. Forward tasks are rows (I == 1) or (o, tile of lanes)
// pairs (partition_kernel.h, [Note: lanes]); backward tasks are rows (I == 1) or (o, r) lines.
struct PartitionArgs {
  c10::ScalarType dtype;
  const void* x;
  const void* weight = nullptr;  // x's dtype, or nullptr
  const bool* mask = nullptr;
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

using PartFn = void (*)(const PartitionArgs& args, int64_t task_begin, int64_t task_end);

struct Kernels {
  RowFn entropy_fwd;
  RowFn entropy_bwd;
  RowFn entropy_ce_fwd;
  RowFn entropy_ce_bwd;
  PartFn partition_fwd;
  PartFn partition_bwd;
  int64_t (*partition_fwd_tasks)(const PartitionArgs& args);  // tasks of partition_fwd
};

#define TK_DECLARE_ISA(ISA)                                  \
  void entropy_fwd_##ISA(const EntropyArgs&, int64_t, int64_t);    \
  void entropy_bwd_##ISA(const EntropyArgs&, int64_t, int64_t);    \
  void entropy_ce_fwd_##ISA(const EntropyArgs&, int64_t, int64_t); \
  void entropy_ce_bwd_##ISA(const EntropyArgs&, int64_t, int64_t); \
  void partition_fwd_##ISA(const PartitionArgs&, int64_t, int64_t); \
  void partition_bwd_##ISA(const PartitionArgs&, int64_t, int64_t); \
  int64_t partition_fwd_tasks_##ISA(const PartitionArgs&);
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

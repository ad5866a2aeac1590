// Run-time choice of the CPU instruction set for the vectorised kernels.
//
// Each kernel header under csrc/cpu/ is compiled once per ISA (csrc/cpu/isa/*.cpp), with
// at::vec specialised for that ISA; the op picks the widest variant this CPU supports.
// THERMOKERN_CPU_ISA=default|avx2|avx512 (or thermokern._C._set_cpu_isa) forces a narrower
// one, which the tests use to check every variant on one machine.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

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

using PartFn = void (*)(const PartitionArgs& args, int64_t task_begin, int64_t task_end);

struct Kernels {
  RowFn entropy_fwd;
  RowFn entropy_bwd;
  RowFn cross_entropy_fwd;
  RowFn cross_entropy_bwd;
  PartFn partition_fwd;
  PartFn partition_bwd;
  int64_t (*partition_fwd_tasks)(const PartitionArgs& args);  // tasks of partition_fwd
};

#define TK_DECLARE_ISA(ISA)                                  \
  void entropy_fwd_##ISA(const EntropyArgs&, int64_t, int64_t);    \
  void entropy_bwd_##ISA(const EntropyArgs&, int64_t, int64_t);    \
  void cross_entropy_fwd_##ISA(const EntropyArgs&, int64_t, int64_t); \
  void cross_entropy_bwd_##ISA(const EntropyArgs&, int64_t, int64_t); \
  void partition_fwd_##ISA(const PartitionArgs&, int64_t, int64_t); \
  void partition_bwd_##ISA(const PartitionArgs&, int64_t, int64_t); \
  int64_t partition_fwd_tasks_##ISA(const PartitionArgs&);
TK_DECLARE_ISA(DEFAULT)
#if defined(__x86_64__)
TK_DECLARE_ISA(AVX2)
TK_DECLARE_ISA(AVX512)
#endif
#undef TK_DECLARE_ISA

// Arguments of the Langevin kernels (csrc/cpu/langevin_kernel.h): one step over the n
// elements of contiguous tensors, split by Philox counter (counter c covers elements
// 4c .. 4c + 3; see [Note: Langevin noise layout] in thermokern/philox.h).
struct LangevinArgs {
  c10::ScalarType dtype;
  int64_t n = 0;            // elements
  uint64_t seed = 0;        // Philox key
  uint64_t offset = 0;      // counter of element 0
  double step_size = 0.0;   // eta
  double noise_std = 0.0;   // sigma (0: no noise is generated)
  bool has_clip = false, has_lo = false, has_hi = false;
  double clip = 0.0, lo = 0.0, hi = 0.0;
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
using CounterFn = void (*)(const LangevinArgs& args, int64_t ctr_begin, int64_t ctr_end);

struct LangevinKernels {
  CounterFn fwd;    // out = clamp(x - eta clip(grad) + sigma n)
  CounterFn bwd;    // grad_x, grad_grad from grad_out (recomputes the clamp condition)
  CounterFn words;  // the raw Philox words (tests: the vectorised generator's bits)
};

#define TK_DECLARE_LANGEVIN_ISA(ISA)                                \
  void langevin_fwd_##ISA(const LangevinArgs&, int64_t, int64_t); \
  void langevin_bwd_##ISA(const LangevinArgs&, int64_t, int64_t); \
  void langevin_words_##ISA(const LangevinArgs&, int64_t, int64_t);
TK_DECLARE_LANGEVIN_ISA(DEFAULT)
#if defined(__x86_64__)
TK_DECLARE_LANGEVIN_ISA(AVX2)
TK_DECLARE_LANGEVIN_ISA(AVX512)
#endif
#undef TK_DECLARE_LANGEVIN_ISA

Isa best_supported_isa();
Isa active_isa();
void set_active_isa(const std::string& name);  // "", "default", "avx2", "avx512"
std::string isa_name(Isa isa);
const Kernels& kernels();
const LangevinKernels& langevin_kernels();

// The Philox words of counters offset .. offset + n - 1 as the active ISA's Langevin kernel
// generates them, 4 per counter (csrc/cpu/langevin.cpp; for the tests).
std::vector<uint32_t> langevin_words(uint64_t seed, uint64_t offset, int64_t n);


// ---------------------------------------------------------------------------------------
// sgld_step_ (csrc/cpu/sgld.cpp, kernel in csrc/cpu/sgld_kernel.h): one step over a list of
// contiguous tensors of one dtype, their Philox counters concatenated into one work space.
// Tensor i owns the work items [work_begin, work_begin + ceil(numel / 4)); work item w of it
// is its counter c = w - work_begin (elements 4c .. 4c + 3), drawn at Philox counter
// offset + counter_start + c ([Note: SGLD step] in csrc/thermokern.cpp).
struct SgldTensor {
  void* param = nullptr;         // (numel,) contiguous, updated in place
  const void* grad = nullptr;    // (numel,) contiguous, param's dtype
  int64_t numel = 0;             // > 0 (empty tensors are not listed)
  uint64_t counter_start = 0;    // relative to SgldArgs::offset
  int64_t work_begin = 0;        // prefix sum of ceil(numel / 4) over the earlier tensors
};

struct SgldArgs {
  c10::ScalarType dtype;
  uint64_t seed = 0;             // Philox key
  uint64_t offset = 0;           // base counter of the step
  double lr = 0.0;               // eta
  double noise_std = 0.0;        // sigma (0: no noise is generated)
  double weight_decay = 0.0;     // lambda: the gradient is grad + lambda * param
  const SgldTensor* tensors = nullptr;
  int64_t n_tensors = 0;
};

// Processes the work items [work_begin, work_end) of the concatenated tensors.
using SgldFn = void (*)(const SgldArgs& args, int64_t work_begin, int64_t work_end);

#define TK_DECLARE_SGLD_ISA(ISA) void sgld_step_##ISA(const SgldArgs&, int64_t, int64_t);
TK_DECLARE_SGLD_ISA(DEFAULT)
#if defined(__x86_64__)
TK_DECLARE_SGLD_ISA(AVX2)
TK_DECLARE_SGLD_ISA(AVX512)
#endif
#undef TK_DECLARE_SGLD_ISA

SgldFn sgld_kernel();  // the active ISA's variant

}  // namespace thermokern::cpu

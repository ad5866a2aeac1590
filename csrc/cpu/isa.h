// Run-time choice of the CPU instruction set for the vectorised kernels.
//
// [Note: per-ISA kernels]
// Each kernel header csrc/cpu/<op>_kernel.h is compiled once per ISA (csrc/cpu/isa/*.cpp, each
// with its ISA's flags), with at::vec specialised for that ISA, and defines its entry points as
// TK_CAT(name, CPU_CAPABILITY) (dispatch.h): name_DEFAULT, name_AVX2, name_AVX512. The op's
// <op>_args.h declares them with TK_DECLARE_ISA_VARIANTS, next to the argument struct, and the
// op picks the variant of the active ISA with TK_ISA_VARIANT(name): the widest one this CPU
// supports, unless THERMOKERN_CPU_ISA=default|avx2|avx512 (or thermokern._C._set_cpu_isa)
// forces a narrower one, which the tests use to check every variant on one machine.
#pragma once

#include <string>

namespace thermokern::cpu {

enum class Isa : int { Default = 0, Avx2 = 1, Avx512 = 2 };

Isa best_supported_isa();
Isa active_isa();
void set_active_isa(const std::string& name);  // "", "default", "avx2", "avx512"
std::string isa_name(Isa isa);

// The variant for `isa` among the three builds of one entry point.
template <typename Fn>
Fn isa_variant(Isa isa, Fn default_fn, Fn avx2_fn, Fn avx512_fn) {
  switch (isa) {
    case Isa::Avx512: return avx512_fn;
    case Isa::Avx2: return avx2_fn;
    default: return default_fn;
  }
}

}  // namespace thermokern::cpu

// TK_DECLARE_ISA_VARIANTS(void, partition_fwd, (const PartitionArgs&, int64_t, int64_t))
// declares partition_fwd_DEFAULT, _AVX2 and _AVX512 (only _DEFAULT off x86-64), in the
// enclosing namespace; TK_ISA_VARIANT(partition_fwd) is the one of the active ISA, and
// TK_ISA_VARIANT_FOR(isa, partition_fwd) the one of `isa` (entry points that must agree on the
// ISA, such as a task count and the kernel, take one active_isa() for both).
#if defined(__x86_64__)
#define TK_DECLARE_ISA_VARIANTS(RET, NAME, PARAMS) \
  RET NAME##_DEFAULT PARAMS;                       \
  RET NAME##_AVX2 PARAMS;                          \
  RET NAME##_AVX512 PARAMS;
#define TK_ISA_VARIANT_FOR(ISA, NAME) \
  ::thermokern::cpu::isa_variant(ISA, NAME##_DEFAULT, NAME##_AVX2, NAME##_AVX512)
#else
#define TK_DECLARE_ISA_VARIANTS(RET, NAME, PARAMS) RET NAME##_DEFAULT PARAMS;
#define TK_ISA_VARIANT_FOR(ISA, NAME) ((void)(ISA), NAME##_DEFAULT)
#endif
#define TK_ISA_VARIANT(NAME) TK_ISA_VARIANT_FOR(::thermokern::cpu::active_isa(), NAME)

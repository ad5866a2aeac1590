// Macros shared by the per-ISA kernel headers (softmax_entropy, cross_entropy, partition,
// langevin, mala, sgld).
#pragma once

#include <c10/core/ScalarType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

// The per-ISA name of an entry point: TK_CAT(partition_fwd, CPU_CAPABILITY) is
// partition_fwd_AVX512 in the AVX-512 build (declared by the op's <op>_args.h, see [Note:
// per-ISA kernels] in isa.h).
#define TK_CAT_(a, b) a##_##b
#define TK_CAT(a, b) TK_CAT_(a, b)

// Runs the statement(s) in __VA_ARGS__ with `scalar_t` bound to DTYPE's C++ type (the four
// floating dtypes the ops accept; the C++ checks reject any other before a kernel runs).
#define TK_DISPATCH_FLOAT_TYPES(DTYPE, ...)                                        \
  switch (DTYPE) {                                                                 \
    case c10::ScalarType::Float: { using scalar_t = float; __VA_ARGS__; break; }   \
    case c10::ScalarType::Double: { using scalar_t = double; __VA_ARGS__; break; } \
    case c10::ScalarType::BFloat16: {                                              \
      using scalar_t = c10::BFloat16; __VA_ARGS__; break; }                        \
    case c10::ScalarType::Half: { using scalar_t = c10::Half; __VA_ARGS__; break; } \
    default: break;                                                                \
  }

// Defines the per-ISA entry point NAME (TK_CAT(NAME, CPU_CAPABILITY), declared by the op's
// <op>_args.h): CPU_CAPABILITY::KERNEL<scalar_t>(a, begin, end) for a.dtype's scalar_t, with
// KERNEL's (begin, end) the range of rows, tasks or counters the caller splits over threads.
#define TK_DEFINE_ISA_ENTRY(NAME, ARGS, KERNEL)                                                 \
  void TK_CAT(NAME, CPU_CAPABILITY)(const ARGS& a, int64_t begin, int64_t end) {                \
    TK_DISPATCH_FLOAT_TYPES(a.dtype, CPU_CAPABILITY::KERNEL<scalar_t>(a, begin, end))           \
  }

// AVX-512 (F, BW, VL, DQ) build of the CPU kernels, chosen at run time by csrc/cpu/isa.cpp.
// setup.py and CMakeLists.txt compile this file alone with the matching -mavx512* flags.
#if defined(__x86_64__)
#define CPU_CAPABILITY AVX512
#define CPU_CAPABILITY_AVX512
#include "kernels.h"
#endif

// AVX2 + FMA build of the CPU kernels, chosen at run time by csrc/cpu/isa.cpp.
// setup.py and CMakeLists.txt compile this file alone with -mavx2 -mfma -mf16c; nothing in it
// runs unless the CPU reports avx2 and fma.
#if defined(__x86_64__)
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#include "kernels.h"
#endif

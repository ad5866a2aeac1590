// Portable build of the CPU kernels (at::vec's generic Vectorized, no ISA flags).
#define CPU_CAPABILITY DEFAULT
#define CPU_CAPABILITY_DEFAULT
#include "kernels.h"

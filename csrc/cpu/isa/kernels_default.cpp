// Portable build of the CPU kernels (at::vec's generic Vectorized, no ISA flags).
#define CPU_CAPABILITY DEFAULT
#define CPU_CAPABILITY_DEFAULT
#include "../cross_entropy_kernel.h"
#include "../langevin_kernel.h"
#include "../mala_kernel.h"
#include "../partition_kernel.h"
#include "../sgld_kernel.h"
#include "../softmax_entropy_kernel.h"
#include "../token_logprobs_kernel.h"

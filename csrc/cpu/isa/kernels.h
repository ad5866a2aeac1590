// Every op's CPU kernel header, compiled once per ISA: each csrc/cpu/isa/kernels_<isa>.cpp
// defines CPU_CAPABILITY and includes this file. A new op adds its <op>_kernel.h here.
#pragma once
#include "../cross_entropy_kernel.h"
#include "../langevin_kernel.h"
#include "../mala_kernel.h"
#include "../partition_kernel.h"
#include "../sgld_kernel.h"
#include "../softmax_entropy_kernel.h"
#include "../token_logprobs_kernel.h"

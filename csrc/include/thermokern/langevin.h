// The scalars of one langevin_step ([Note: Langevin step] in csrc/thermokern.cpp), as the CPU
// and CUDA kernels take them (no torch: the per-ISA CPU kernel arguments include this).
// langevin_plan.h fills it from the op's arguments.
#pragma once

namespace thermokern {

struct LangevinScalars {
  double step_size = 0.0;  // eta
  double noise_std = 0.0;  // sigma (0: no noise is generated)
  bool has_clip = false, has_lo = false, has_hi = false;  // a missing bound is none
  double clip = 0.0, lo = 0.0, hi = 0.0;
};

}  // namespace thermokern

// What every op's host-side plan (thermokern/<op>_plan.h) uses: output allocation and the
// reading of Philox seeds and offsets. Host only; included by the CPU .cpp and the CUDA .cu
// entry points, so it keeps to light headers (no torch/extension.h, no ATen/cuda).
//
// [Note: host-side plans]
// An op's entry points on CPU (csrc/cpu/<op>.cpp) and CUDA (csrc/cuda/<op>.cu) share
// everything but the launch: the argument checks ([Note: argument checks] in checks.h), the
// geometry (sizes, strides, per-row or shared scalars), contiguous copies of the inputs, the
// allocated outputs and the tables of tensor addresses. thermokern/<op>_plan.h holds them once:
// plan_<op>(...) checks and returns a plan struct that holds the tensors (alive for the call),
// and the entry point <op>_op<Launch>(...) (the op's schema signature) plans, calls the
// backend's Launch(const Plan&) unless there is nothing to compute, and returns the outputs.
// Each backend registers <op>_op<its launch> with TORCH_LIBRARY_IMPL; a launch only turns the
// plan into kernel arguments and runs the kernels. The plan allocates on the inputs' device
// without a device guard (at::empty with a device in its options needs none); the CUDA launches
// take their guard, so that a tensor on the wrong device is named by the checks first.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

namespace thermokern {

// Debug aid for the tests: when on, every op fills its freshly allocated outputs with NaN
// before the kernel runs, so an element a kernel forgets to write cannot pass by luck.
// Defined in csrc/thermokern.cpp; set with thermokern._C._set_poison_outputs.
bool poison_outputs_enabled();

inline void maybe_poison(at::Tensor& t) {
  if (poison_outputs_enabled() && t.numel() > 0) t.fill_(NAN);
}

// [Note: huge pages for large outputs]
// A fresh (N, C) gradient lives in memory the OS has not mapped yet, and with 4 KB pages the
// page faults of its first write cost more than the kernel itself (measured here: writing a
// fresh 4096 x 32000 fp32 tensor 470 ms, 70-110 ms after MADV_HUGEPAGE, 48 ms when already
// mapped). Where transparent huge pages are in "madvise" mode, ask for them on the 2 MB-aligned
// interior of large CPU outputs before the kernel writes them. Best effort: errors are ignored.
inline void advise_huge_pages(const at::Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  const size_t bytes = t.nbytes();
  if (!t.is_cpu() || bytes < 4 * kHuge) return;
  const uintptr_t p = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t begin = (p + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (p + bytes) & ~(kHuge - 1);
  if (end > begin) (void)madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)t;
#endif
}

// A new contiguous output of the op: huge pages asked for (large CPU outputs), NaN-filled in
// the tests' poison mode.
inline at::Tensor new_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor t = at::empty(sizes, options.memory_format(at::MemoryFormat::Contiguous));
  advise_huge_pages(t);
  maybe_poison(t);
  return t;
}

// The value of a 0-dim int64 CPU tensor (a Philox seed or offset) as the uint64 of its bits.
// (The CUDA kernels read these tensors on the device instead.)
inline uint64_t cpu_u64(const at::Tensor& t) {
  return static_cast<uint64_t>(*t.const_data_ptr<int64_t>());
}

}  // namespace thermokern

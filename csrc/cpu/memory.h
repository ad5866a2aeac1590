// Memory helpers shared by the CPU op implementations.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <ATen/core/Tensor.h>

namespace thermokern::cpu {

// [Note: huge pages for large outputs]
// A fresh (N, C) gradient lives in memory the OS has not mapped yet, and with 4 KB pages the
// page faults of its first write cost more than the kernel itself (measured here: writing a
// fresh 4096 x 32000 fp32 tensor 470 ms, 70-110 ms after MADV_HUGEPAGE, 48 ms when already
// mapped). Where transparent huge pages are in "madvise" mode, ask for them on the 2 MB-aligned
// interior of large outputs before the kernel writes them. Best effort: errors are ignored.
inline void advise_huge_pages(const at::Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  const size_t bytes = t.nbytes();
  if (bytes < 4 * kHuge) return;
  const uintptr_t p = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t begin = (p + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (p + bytes) & ~(kHuge - 1);
  if (end > begin) (void)madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)t;
#endif
}

}  // namespace thermokern::cpu

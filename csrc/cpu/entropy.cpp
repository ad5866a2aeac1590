// softmax_entropy: CPU implementation (TORCH_LIBRARY_IMPL(thermokern, CPU)).
#include <algorithm>
#include <cstdint>
#include <tuple>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "isa.h"
#include "thermokern/checks.h"

namespace thermokern::cpu {

namespace {

// [Note: grain size]
// at::parallel_for splits rows across threads. A task of ~64K elements (256 KB of fp32)
// amortises the thread hand-off (a few microseconds) while still giving every core work for
// N x C = 4096 x 32000; rows are never split, so small-N, huge-C inputs use fewer threads.
int64_t row_grain(int64_t C) { return std::max<int64_t>(1, (int64_t{1} << 16) / C); }

// [Note: huge pages for large outputs]
// A fresh (N, C) gradient lives in memory the OS has not mapped yet, and with 4 KB pages the
// page faults of its first write cost more than the kernel itself (measured here: writing a
// fresh 4096 x 32000 fp32 tensor 470 ms, 70-110 ms after MADV_HUGEPAGE, 48 ms when already
// mapped). Where transparent huge pages are in "madvise" mode, ask for them on the 2 MB-aligned
// interior of large outputs before the kernel writes them. Best effort: errors are ignored.
void advise_huge_pages(const at::Tensor& t) {
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

std::tuple<at::Tensor, at::Tensor, at::Tensor> softmax_entropy_fwd_cpu(const at::Tensor& logits,
                                                                       double temperature) {
  check_softmax_entropy_fwd(logits, temperature);
  const int64_t N = logits.size(0), C = logits.size(1);
  const auto acc = acc_dtype(logits.scalar_type());
  at::Tensor entropy = at::empty({N}, logits.options().dtype(acc));
  at::Tensor shift = at::empty({N}, logits.options().dtype(acc));
  at::Tensor log_norm = at::empty({N}, logits.options().dtype(acc));
  maybe_poison(entropy);
  maybe_poison(shift);
  maybe_poison(log_norm);
  if (N == 0) return {entropy, shift, log_norm};
  const auto fn = kernels().entropy_fwd;
  const auto dtype = logits.scalar_type();
  const void* x = logits.const_data_ptr();
  const int64_t stride = logits.stride(0);
  void* h = entropy.mutable_data_ptr();
  void* mx = shift.mutable_data_ptr();
  void* ln = log_norm.mutable_data_ptr();
  at::parallel_for(0, N, row_grain(C), [&](int64_t begin, int64_t end) {
    fn(dtype, x, begin, end, C, stride, 1.0 / temperature, h, mx, ln);
  });
  return {entropy, shift, log_norm};
}

at::Tensor softmax_entropy_bwd_cpu(const at::Tensor& grad, const at::Tensor& logits,
                                   const at::Tensor& entropy, const at::Tensor& shift,
                                   const at::Tensor& log_norm, double temperature) {
  check_softmax_entropy_bwd(grad, logits, entropy, shift, log_norm, temperature);
  const int64_t N = logits.size(0), C = logits.size(1);
  const auto acc = acc_dtype(logits.scalar_type());
  at::Tensor g = grad.to(acc).contiguous();
  at::Tensor h = entropy.contiguous();
  at::Tensor mx = shift.contiguous();
  at::Tensor ln = log_norm.contiguous();
  at::Tensor grad_x = at::empty({N, C}, logits.options());
  advise_huge_pages(grad_x);
  maybe_poison(grad_x);
  if (N == 0) return grad_x;
  const auto fn = kernels().entropy_bwd;
  const auto dtype = logits.scalar_type();
  const void* x = logits.const_data_ptr();
  const int64_t stride = logits.stride(0);
  at::parallel_for(0, N, row_grain(C), [&](int64_t begin, int64_t end) {
    fn(dtype, g.const_data_ptr(), x, h.const_data_ptr(), mx.const_data_ptr(), ln.const_data_ptr(),
       grad_x.mutable_data_ptr(), begin, end, C, stride, 1.0 / temperature);
  });
  return grad_x;
}

}  // namespace

TORCH_LIBRARY_IMPL(thermokern, CPU, m) {
  m.impl("softmax_entropy_fwd", &softmax_entropy_fwd_cpu);
  m.impl("softmax_entropy_bwd", &softmax_entropy_bwd_cpu);
}

}  // namespace thermokern::cpu

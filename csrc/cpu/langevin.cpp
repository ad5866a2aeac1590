// langevin_step: CPU implementation (TORCH_LIBRARY_IMPL(thermokern, CPU)).
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <optional>
#include <tuple>
#include <vector>

#include <ATen/MemoryOverlap.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "isa.h"
#include "memory.h"
#include "thermokern/checks.h"

namespace thermokern::cpu {

namespace {

// [Note: Langevin grain size]
// The Philox counters (4 elements each) are cut into tasks of 16K counters: 64K elements,
// 256 KB of each fp32 tensor and ~0.1 ms of work on one core, so taking a task (one atomic
// increment) costs nothing. The threads of at::parallel_for take tasks from a shared counter
// until none is left, rather than one fixed half each: on a machine shared with other
// processes a thread that loses its core for a while no longer holds the whole step back
// (float32, 16M elements, 2 threads: the median went from ~18 ms to the ~13 ms that the
// undisturbed runs reach).
constexpr int64_t kCounterGrain = int64_t{1} << 14;

int64_t counters_of(int64_t n) { return (n + 3) / 4; }

uint64_t rng_value(const at::Tensor& t) {
  return static_cast<uint64_t>(*t.const_data_ptr<int64_t>());
}

LangevinArgs make_args(const at::Tensor& x, const at::Tensor& seed, const at::Tensor& offset,
                       double step_size, double noise_std, std::optional<double> grad_clip,
                       std::optional<double> lo, std::optional<double> hi) {
  LangevinArgs a;
  a.dtype = x.scalar_type();
  a.n = x.numel();
  a.seed = rng_value(seed);
  a.offset = rng_value(offset);
  a.step_size = step_size;
  a.noise_std = noise_std;
  a.has_clip = grad_clip.has_value();
  a.clip = grad_clip.value_or(0.0);
  a.has_lo = lo.has_value();
  a.lo = lo.value_or(0.0);
  a.has_hi = hi.has_value();
  a.hi = hi.value_or(0.0);
  return a;
}

void run_counters(CounterFn fn, const LangevinArgs& a) {
  const int64_t n_ctr = counters_of(a.n);
  const int64_t n_tasks = (n_ctr + kCounterGrain - 1) / kCounterGrain;
  if (n_tasks <= 1 || at::get_num_threads() == 1 || at::in_parallel_region()) {
    if (n_ctr > 0) fn(a, 0, n_ctr);
    return;
  }
  std::atomic<int64_t> next{0};
  const int64_t workers = std::min<int64_t>(at::get_num_threads(), n_tasks);
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    for (int64_t t = next.fetch_add(1); t < n_tasks; t = next.fetch_add(1)) {
      fn(a, t * kCounterGrain, std::min(n_ctr, (t + 1) * kCounterGrain));
    }
  });
}

// Writes the step of x (contiguous) into out (contiguous; may be x).
void step_into(const at::Tensor& x, const at::Tensor& grad, const at::Tensor& out,
               const at::Tensor& seed, const at::Tensor& offset, double step_size,
               double noise_std, std::optional<double> grad_clip, std::optional<double> lo,
               std::optional<double> hi) {
  const at::Tensor g = grad.contiguous();
  LangevinArgs a = make_args(x, seed, offset, step_size, noise_std, grad_clip, lo, hi);
  a.x = x.const_data_ptr();
  a.grad = g.const_data_ptr();
  a.out = out.data_ptr();
  run_counters(langevin_kernels().fwd, a);
}

at::Tensor langevin_step_cpu(const at::Tensor& x, const at::Tensor& grad, const at::Tensor& seed,
                             const at::Tensor& offset, double step_size, double noise_std,
                             std::optional<double> grad_clip, std::optional<double> lo,
                             std::optional<double> hi) {
  check_langevin(x, grad, seed, offset, step_size, noise_std, grad_clip, lo, hi);
  const at::Tensor xc = x.contiguous();
  at::Tensor out = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  advise_huge_pages(out);
  maybe_poison(out);
  step_into(xc, grad, out, seed, offset, step_size, noise_std, grad_clip, lo, hi);
  return out;
}

void langevin_step_cpu_(const at::Tensor& x, const at::Tensor& grad, const at::Tensor& seed,
                        const at::Tensor& offset, double step_size, double noise_std,
                        std::optional<double> grad_clip, std::optional<double> lo,
                        std::optional<double> hi) {
  check_langevin(x, grad, seed, offset, step_size, noise_std, grad_clip, lo, hi);
  at::assert_no_internal_overlap(x);
  // grad may be x itself (an element reads its own x and grad before writing), not a shifted
  // view of it.
  at::assert_no_partial_overlap(x, grad);
  if (x.is_contiguous()) {
    step_into(x, grad, x, seed, offset, step_size, noise_std, grad_clip, lo, hi);
    return;
  }
  const at::Tensor xc = x.contiguous();  // a copy: the step goes into it, then back
  step_into(xc, grad, xc, seed, offset, step_size, noise_std, grad_clip, lo, hi);
  x.copy_(xc);
}

std::tuple<at::Tensor, at::Tensor> langevin_step_bwd_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& grad,
    const at::Tensor& seed, const at::Tensor& offset, double step_size, double noise_std,
    std::optional<double> grad_clip, std::optional<double> lo, std::optional<double> hi) {
  check_langevin_bwd(grad_out, x, grad, seed, offset, step_size, noise_std, grad_clip, lo, hi);
  const at::Tensor xc = x.contiguous();
  const at::Tensor g = grad.contiguous();
  const at::Tensor go = grad_out.to(x.scalar_type()).contiguous();
  const auto opts = x.options().memory_format(at::MemoryFormat::Contiguous);
  at::Tensor grad_x = at::empty(x.sizes(), opts);
  at::Tensor grad_grad = at::empty(x.sizes(), opts);
  advise_huge_pages(grad_x);
  advise_huge_pages(grad_grad);
  maybe_poison(grad_x);
  maybe_poison(grad_grad);
  LangevinArgs a = make_args(x, seed, offset, step_size, noise_std, grad_clip, lo, hi);
  a.x = xc.const_data_ptr();
  a.grad = g.const_data_ptr();
  a.grad_out = go.const_data_ptr();
  a.grad_x = grad_x.data_ptr();
  a.grad_grad = grad_grad.data_ptr();
  run_counters(langevin_kernels().bwd, a);
  return {grad_x, grad_grad};
}

}  // namespace

std::vector<uint32_t> langevin_words(uint64_t seed, uint64_t offset, int64_t n) {
  TORCH_CHECK_VALUE(n >= 0, "n: expected a count >= 0, got ", n);
  std::vector<uint32_t> out(static_cast<size_t>(n) * 4);
  LangevinArgs a;
  a.dtype = at::kFloat;
  a.seed = seed;
  a.offset = offset;
  a.n = 4 * n;
  a.out = out.data();
  run_counters(langevin_kernels().words, a);
  return out;
}

TORCH_LIBRARY_IMPL(thermokern, CPU, m) {
  m.impl("langevin_step", &langevin_step_cpu);
  m.impl("langevin_step_", &langevin_step_cpu_);
  m.impl("langevin_step_bwd", &langevin_step_bwd_cpu);
}

}  // namespace thermokern::cpu

// langevin_step: CUDA implementation (TORCH_LIBRARY_IMPL(thermokern, CUDA)).
//
// One thread per Philox counter (grid-stride): it draws the four normals of its counter with
// the host/device functions of thermokern/philox.h ([Note: Langevin noise layout]; they avoid
// the approximate intrinsics of --use_fast_math, so the normals match the CPU's within ~1e-7)
// and updates the four elements 4c .. 4c + 3, with one vector load/store per tensor when the
// pointers are aligned. Seed and offset are read from device memory, so a captured CUDA graph
// replays with the values they hold at replay time; nothing syncs with the host. Offsets are
// int64 throughout.
#include <algorithm>
#include <cstdint>
#include <optional>
#include <tuple>

#include <ATen/Dispatch.h>
#include <ATen/MemoryOverlap.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "common.cuh"
#include "thermokern/checks.h"
#include "thermokern/philox.h"

namespace thermokern::cuda {

namespace {

constexpr int kLangevinThreads = 256;

template <typename acc_t>
struct StepParams {
  acc_t neg_step, sigma, clip, lo, hi;
  bool has_clip, has_lo, has_hi;
};

template <typename acc_t>
StepParams<acc_t> step_params(double step_size, double noise_std, std::optional<double> grad_clip,
                              std::optional<double> lo, std::optional<double> hi) {
  return StepParams<acc_t>{static_cast<acc_t>(-step_size),
                           static_cast<acc_t>(noise_std),
                           static_cast<acc_t>(grad_clip.value_or(0.0)),
                           static_cast<acc_t>(lo.value_or(0.0)),
                           static_cast<acc_t>(hi.value_or(0.0)),
                           grad_clip.has_value(),
                           lo.has_value(),
                           hi.has_value()};
}

// v = x - eta clip(g) + sigma n before the clamp; comparisons (not fminf/fmaxf) keep NaN.
template <typename acc_t, bool HAS_NOISE>
__device__ __forceinline__ acc_t step_value(acc_t x, acc_t g, acc_t n, const StepParams<acc_t>& p) {
  if (p.has_clip) g = g < -p.clip ? -p.clip : (g > p.clip ? p.clip : g);
  acc_t v = x + p.neg_step * g;
  if constexpr (HAS_NOISE) v = v + p.sigma * n;
  return v;
}

template <typename acc_t>
__device__ __forceinline__ acc_t clamp_value(acc_t v, const StepParams<acc_t>& p) {
  if (p.has_lo) v = v < p.lo ? p.lo : v;
  if (p.has_hi) v = v > p.hi ? p.hi : v;
  return v;
}

// Whether the gradient passes the clamp: lo < v < hi (a v on a bound, or NaN, counts as
// clamped, as in torch.clamp's backward).
template <typename acc_t>
__device__ __forceinline__ bool clamp_passes(acc_t v, const StepParams<acc_t>& p) {
  bool keep = true;
  if (p.has_lo) keep = keep && v > p.lo;
  if (p.has_hi) keep = keep && v < p.hi;
  return keep;
}

template <typename acc_t, bool HAS_NOISE>
__device__ __forceinline__ Normal4<acc_t> counter_noise(uint64_t seed, uint64_t counter) {
  if constexpr (HAS_NOISE) {
    return langevin_normal4<acc_t>(seed, counter);
  } else {
    return Normal4<acc_t>{{acc_t(0), acc_t(0), acc_t(0), acc_t(0)}};
  }
}

// out may be x (in place), so neither is __restrict__.
template <typename scalar_t, typename acc_t, bool HAS_NOISE, bool VEC>
__global__ void langevin_step_fwd_kernel(const scalar_t* x,                   // (n,) contiguous
                                         const scalar_t* __restrict__ grad,   // (n,) contiguous
                                         scalar_t* out,                       // (n,) contiguous
                                         const int64_t* __restrict__ seed_ptr,
                                         const int64_t* __restrict__ offset_ptr, int64_t n,
                                         StepParams<acc_t> p) {
  const uint64_t seed = static_cast<uint64_t>(*seed_ptr);
  const uint64_t offset = static_cast<uint64_t>(*offset_ptr);
  const int64_t n_ctr = (n + 3) / 4;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < n_ctr; c += stride) {
    const Normal4<acc_t> z = counter_noise<acc_t, HAS_NOISE>(seed, offset + static_cast<uint64_t>(c));
    const int64_t e0 = 4 * c;
    if (VEC && e0 + 4 <= n) {
      const Pack<scalar_t, 4> xv = *reinterpret_cast<const Pack<scalar_t, 4>*>(x + e0);
      const Pack<scalar_t, 4> gv = *reinterpret_cast<const Pack<scalar_t, 4>*>(grad + e0);
      Pack<scalar_t, 4> ov;
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const acc_t v = step_value<acc_t, HAS_NOISE>(static_cast<acc_t>(xv.v[k]),
                                                     static_cast<acc_t>(gv.v[k]), z.v[k], p);
        ov.v[k] = static_cast<scalar_t>(clamp_value(v, p));
      }
      *reinterpret_cast<Pack<scalar_t, 4>*>(out + e0) = ov;
    } else {
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        if (e0 + k < n) {
          const acc_t v = step_value<acc_t, HAS_NOISE>(static_cast<acc_t>(x[e0 + k]),
                                                       static_cast<acc_t>(grad[e0 + k]), z.v[k], p);
          out[e0 + k] = static_cast<scalar_t>(clamp_value(v, p));
        }
      }
    }
  }
}

// grad_x = grad_out where the clamp passed v, else 0; grad_grad = -eta grad_out where also
// |grad| < clip. v (and its noise) is recomputed only when there is a clamp.
template <typename scalar_t, typename acc_t, bool HAS_NOISE>
__global__ void langevin_step_bwd_kernel(const scalar_t* __restrict__ grad_out,  // (n,) contiguous
                                         const scalar_t* __restrict__ x,
                                         const scalar_t* __restrict__ grad,
                                         scalar_t* __restrict__ grad_x,
                                         scalar_t* __restrict__ grad_grad,
                                         const int64_t* __restrict__ seed_ptr,
                                         const int64_t* __restrict__ offset_ptr, int64_t n,
                                         StepParams<acc_t> p) {
  const uint64_t seed = static_cast<uint64_t>(*seed_ptr);
  const uint64_t offset = static_cast<uint64_t>(*offset_ptr);
  const bool clamped = p.has_lo || p.has_hi;
  const int64_t n_ctr = (n + 3) / 4;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < n_ctr; c += stride) {
    Normal4<acc_t> z{{acc_t(0), acc_t(0), acc_t(0), acc_t(0)}};
    if (clamped) z = counter_noise<acc_t, HAS_NOISE>(seed, offset + static_cast<uint64_t>(c));
    const int64_t e0 = 4 * c;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int64_t e = e0 + k;
      if (e >= n) break;
      const acc_t go = static_cast<acc_t>(grad_out[e]);
      const acc_t g = static_cast<acc_t>(grad[e]);
      bool keep = true;
      if (clamped) {
        keep = clamp_passes(step_value<acc_t, HAS_NOISE>(static_cast<acc_t>(x[e]), g, z.v[k], p), p);
      }
      grad_x[e] = static_cast<scalar_t>(keep ? go : acc_t(0));
      if (p.has_clip) keep = keep && g > -p.clip && g < p.clip;
      grad_grad[e] = static_cast<scalar_t>(keep ? p.neg_step * go : acc_t(0));
    }
  }
}

int64_t grid_for(int64_t n) {
  const int64_t n_ctr = (n + 3) / 4;
  return std::max<int64_t>(1, std::min<int64_t>((n_ctr + kLangevinThreads - 1) / kLangevinThreads, kMaxBlocks));
}

template <typename scalar_t>
bool aligned4(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % (4 * sizeof(scalar_t)) == 0;
}

// The step of contiguous x into contiguous out (may be x).
void launch_fwd(const at::Tensor& x, const at::Tensor& grad, const at::Tensor& out,
                const at::Tensor& seed, const at::Tensor& offset, double step_size,
                double noise_std, std::optional<double> grad_clip, std::optional<double> lo,
                std::optional<double> hi) {
  const int64_t n = x.numel();
  if (n == 0) return;
  const at::Tensor g = grad.contiguous();
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "langevin_step_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const StepParams<acc_t> p = step_params<acc_t>(step_size, noise_std, grad_clip, lo, hi);
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    scalar_t* op = static_cast<scalar_t*>(out.data_ptr());
    const bool vec = aligned4<scalar_t>(xp) && aligned4<scalar_t>(gp) && aligned4<scalar_t>(op);
    const auto go = [&](auto noise_c, auto vec_c) {
      constexpr bool kNoise = decltype(noise_c)::value, kVec = decltype(vec_c)::value;
      langevin_step_fwd_kernel<scalar_t, acc_t, kNoise, kVec><<<grid_for(n), kLangevinThreads, 0, stream>>>(
          xp, gp, op, seed.const_data_ptr<int64_t>(), offset.const_data_ptr<int64_t>(), n, p);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    using T = std::true_type;
    using F = std::false_type;
    if (noise_std != 0.0) {
      vec ? go(T{}, T{}) : go(T{}, F{});
    } else {
      vec ? go(F{}, T{}) : go(F{}, F{});
    }
  });
}

at::Tensor langevin_step_cuda(const at::Tensor& x, const at::Tensor& grad, const at::Tensor& seed,
                              const at::Tensor& offset, double step_size, double noise_std,
                              std::optional<double> grad_clip, std::optional<double> lo,
                              std::optional<double> hi) {
  check_langevin(x, grad, seed, offset, step_size, noise_std, grad_clip, lo, hi);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor out = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  maybe_poison(out);
  launch_fwd(x.contiguous(), grad, out, seed, offset, step_size, noise_std, grad_clip, lo, hi);
  return out;
}

void langevin_step_cuda_(const at::Tensor& x, const at::Tensor& grad, const at::Tensor& seed,
                         const at::Tensor& offset, double step_size, double noise_std,
                         std::optional<double> grad_clip, std::optional<double> lo,
                         std::optional<double> hi) {
  check_langevin(x, grad, seed, offset, step_size, noise_std, grad_clip, lo, hi);
  at::assert_no_internal_overlap(x);
  at::assert_no_partial_overlap(x, grad);
  const c10::cuda::CUDAGuard guard(x.device());
  if (x.is_contiguous()) {
    launch_fwd(x, grad, x, seed, offset, step_size, noise_std, grad_clip, lo, hi);
    return;
  }
  const at::Tensor xc = x.contiguous();
  launch_fwd(xc, grad, xc, seed, offset, step_size, noise_std, grad_clip, lo, hi);
  x.copy_(xc);
}

std::tuple<at::Tensor, at::Tensor> langevin_step_bwd_cuda(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& grad,
    const at::Tensor& seed, const at::Tensor& offset, double step_size, double noise_std,
    std::optional<double> grad_clip, std::optional<double> lo, std::optional<double> hi) {
  check_langevin_bwd(grad_out, x, grad, seed, offset, step_size, noise_std, grad_clip, lo, hi);
  const c10::cuda::CUDAGuard guard(x.device());
  const auto opts = x.options().memory_format(at::MemoryFormat::Contiguous);
  at::Tensor grad_x = at::empty(x.sizes(), opts);
  at::Tensor grad_grad = at::empty(x.sizes(), opts);
  maybe_poison(grad_x);
  maybe_poison(grad_grad);
  const int64_t n = x.numel();
  if (n == 0) return {grad_x, grad_grad};
  const at::Tensor xc = x.contiguous();
  const at::Tensor g = grad.contiguous();
  const at::Tensor go = grad_out.to(x.scalar_type()).contiguous();
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "langevin_step_bwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const StepParams<acc_t> p = step_params<acc_t>(step_size, noise_std, grad_clip, lo, hi);
    const auto run = [&](auto noise_c) {
      constexpr bool kNoise = decltype(noise_c)::value;
      langevin_step_bwd_kernel<scalar_t, acc_t, kNoise><<<grid_for(n), kLangevinThreads, 0, stream>>>(
          go.const_data_ptr<scalar_t>(), xc.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(),
          grad_x.mutable_data_ptr<scalar_t>(), grad_grad.mutable_data_ptr<scalar_t>(),
          seed.const_data_ptr<int64_t>(), offset.const_data_ptr<int64_t>(), n, p);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    noise_std != 0.0 ? run(std::true_type{}) : run(std::false_type{});
  });
  return {grad_x, grad_grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(thermokern, CUDA, m) {
  m.impl("langevin_step", &langevin_step_cuda);
  m.impl("langevin_step_", &langevin_step_cuda_);
  m.impl("langevin_step_bwd", &langevin_step_bwd_cuda);
}

}  // namespace thermokern::cuda

// langevin_step: CUDA implementation (TORCH_LIBRARY_IMPL(thermokern, CUDA)): kernels and their
// launches for the entry points of thermokern/langevin_plan.h (shared with the CPU).
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

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "common.cuh"
#include "thermokern/langevin_plan.h"
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
StepParams<acc_t> step_params(const LangevinScalars& s) {
  return StepParams<acc_t>{static_cast<acc_t>(-s.step_size),
                           static_cast<acc_t>(s.noise_std),
                           static_cast<acc_t>(s.clip),
                           static_cast<acc_t>(s.lo),
                           static_cast<acc_t>(s.hi),
                           s.has_clip,
                           s.has_lo,
                           s.has_hi};
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

// out may be x (in place), so neither is __restrict__.
template <typename scalar_t, typename acc_t, bool HAS_NOISE, bool VEC>
__global__ void langevin_step_fwd_kernel(const scalar_t* x,                   // (n,) contiguous
                                         const scalar_t* __restrict__ grad,   // (n,) contiguous
                                         scalar_t* out,                       // (n,) contiguous
                                         const int64_t* __restrict__ seed_ptr,
                                         const int64_t* __restrict__ offset_ptr, int64_t n,
                                         StepParams<acc_t> p) {
  for_each_counter<acc_t>(seed_ptr, offset_ptr, n, HAS_NOISE, [&](int64_t c, const Normal4<acc_t>& z) {
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
  });
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
  const bool clamped = p.has_lo || p.has_hi;
  for_each_counter<acc_t>(seed_ptr, offset_ptr, n, HAS_NOISE && clamped, [&](int64_t c, const Normal4<acc_t>& z) {
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
  });
}

int64_t grid_for(int64_t n) {
  const int64_t n_ctr = (n + 3) / 4;
  return std::max<int64_t>(1, std::min<int64_t>((n_ctr + kLangevinThreads - 1) / kLangevinThreads, kMaxBlocks));
}

template <typename scalar_t>
bool aligned4(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % (4 * sizeof(scalar_t)) == 0;
}

// langevin_step and langevin_step_: the step of p.x into p.out (may be p.x).
void launch_fwd(const LangevinFwdPlan& p) {
  const int64_t n = p.n;
  const c10::cuda::CUDAGuard guard(p.x.device());
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.x.scalar_type(), "langevin_step_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const StepParams<acc_t> sp = step_params<acc_t>(p.scalars);
    const scalar_t* xp = p.x.const_data_ptr<scalar_t>();
    const scalar_t* gp = p.grad.const_data_ptr<scalar_t>();
    scalar_t* op = static_cast<scalar_t*>(p.out.data_ptr());
    const bool vec = aligned4<scalar_t>(xp) && aligned4<scalar_t>(gp) && aligned4<scalar_t>(op);
    const auto go = [&](auto noise_c, auto vec_c) {
      constexpr bool kNoise = decltype(noise_c)::value, kVec = decltype(vec_c)::value;
      langevin_step_fwd_kernel<scalar_t, acc_t, kNoise, kVec><<<grid_for(n), kLangevinThreads, 0, stream>>>(
          xp, gp, op, p.seed.const_data_ptr<int64_t>(), p.offset.const_data_ptr<int64_t>(), n, sp);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    using T = std::true_type;
    using F = std::false_type;
    if (p.scalars.noise_std != 0.0) {
      vec ? go(T{}, T{}) : go(T{}, F{});
    } else {
      vec ? go(F{}, T{}) : go(F{}, F{});
    }
  });
}

void launch_bwd(const LangevinBwdPlan& p) {
  const int64_t n = p.n;
  const c10::cuda::CUDAGuard guard(p.x.device());
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.x.scalar_type(), "langevin_step_bwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const StepParams<acc_t> sp = step_params<acc_t>(p.scalars);
    const auto run = [&](auto noise_c) {
      constexpr bool kNoise = decltype(noise_c)::value;
      langevin_step_bwd_kernel<scalar_t, acc_t, kNoise><<<grid_for(n), kLangevinThreads, 0, stream>>>(
          p.grad_out.const_data_ptr<scalar_t>(), p.x.const_data_ptr<scalar_t>(),
          p.grad.const_data_ptr<scalar_t>(), p.grad_x.mutable_data_ptr<scalar_t>(),
          p.grad_grad.mutable_data_ptr<scalar_t>(), p.seed.const_data_ptr<int64_t>(),
          p.offset.const_data_ptr<int64_t>(), n, sp);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    p.scalars.noise_std != 0.0 ? run(std::true_type{}) : run(std::false_type{});
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(thermokern, CUDA, m) {
  m.impl("langevin_step", &langevin_step_op<launch_fwd>);
  m.impl("langevin_step_", &langevin_step_inplace_op<launch_fwd>);
  m.impl("langevin_step_bwd", &langevin_step_bwd_op<launch_bwd>);
}

}  // namespace thermokern::cuda

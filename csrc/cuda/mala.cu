// mala_accept and mala_proposal: CUDA implementation (TORCH_LIBRARY_IMPL(thermokern, CUDA)): the
// kernels and their launches for the entry points of thermokern/mala_plan.h (shared with the
// CPU). mala_proposal is at the end of this file.
//
// mala_accept: one thread block per chain (grid-stride over chains): the threads stride over the chain's
// elements accumulating S = sum (2 (x - x') + eta (g' - g)) (g + g') in the accumulation type,
// warps reduce with shuffles and the block through shared memory; thread 0 computes log alpha,
// draws the chain's uniform from Philox and decides ([Note: MALA acceptance] in
// thermokern/mala.h, the same header functions as the CPU kernel), and the block then copies
// the chosen row into x_new. seed and offset are read on the device (CUDA-graph replays see
// in-place updates); nothing syncs with the host. Offsets are int64.
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
#include "thermokern/mala.h"
#include "thermokern/mala_plan.h"

namespace thermokern::cuda {

namespace {

constexpr int kMalaMaxThreads = 256;

template <typename T>
__device__ __forceinline__ T mala_block_sum(T v) {
  __shared__ T partial[kMalaMaxThreads / kWarp];
  for (int mask = kWarp / 2; mask > 0; mask >>= 1) v += __shfl_xor_sync(0xffffffffu, v, mask);
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < static_cast<int>(blockDim.x / kWarp) ? partial[lane] : T(0);
    for (int mask = kWarp / 2; mask > 0; mask >>= 1) v += __shfl_xor_sync(0xffffffffu, v, mask);
  }
  __syncthreads();  // partial is reused by the next chain
  return v;         // valid in thread 0
}

// A per-chain parameter as the kernels read it (ChainParam in mala_plan.h): chain c's value at
// values[c * stride], or `fallback` when there is none.
template <typename acc_t>
struct ChainParamView {
  const acc_t* values = nullptr;
  int64_t stride = 0;
  __device__ __forceinline__ acc_t of(int64_t c, acc_t fallback) const {
    return chain_value(values, stride, c, fallback);
  }
};

template <typename acc_t>
ChainParamView<acc_t> view_of(const ChainParam& p) {
  if (!p.defined()) return {};
  return {p.values.const_data_ptr<acc_t>(), p.stride};
}

template <typename scalar_t, typename acc_t>
__global__ void mala_accept_kernel(const scalar_t* __restrict__ x,          // (chains, D)
                                   const scalar_t* __restrict__ x_prop,     // (chains, D)
                                   const scalar_t* __restrict__ grad,       // (chains, D)
                                   const scalar_t* __restrict__ grad_prop,  // (chains, D)
                                   const acc_t* __restrict__ energy,        // (chains,)
                                   const acc_t* __restrict__ energy_prop,   // (chains,)
                                   const int64_t* __restrict__ seed_ptr,    // 0-dim
                                   const int64_t* __restrict__ offset_ptr,  // 0-dim
                                   int64_t chains, int64_t D, acc_t step, acc_t temperature,
                                   ChainParamView<acc_t> chain_step,        // or null
                                   ChainParamView<acc_t> chain_temp,        // or null
                                   scalar_t* __restrict__ x_new,            // (chains, D)
                                   bool* __restrict__ accepted,             // (chains,)
                                   acc_t* __restrict__ log_alpha) {         // (chains,)
  __shared__ bool take_prop;
  const uint64_t seed = static_cast<uint64_t>(*seed_ptr);
  const uint64_t offset = static_cast<uint64_t>(*offset_ptr);
  const int64_t numel = chains * D;
  for (int64_t c = blockIdx.x; c < chains; c += gridDim.x) {
    const int64_t base = c * D;
    const acc_t step_c = chain_step.of(c, step);
    acc_t s = 0;
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
      s += mala_term<acc_t>(static_cast<acc_t>(x[base + i]), static_cast<acc_t>(x_prop[base + i]),
                            static_cast<acc_t>(grad[base + i]),
                            static_cast<acc_t>(grad_prop[base + i]), step_c);
    }
    s = mala_block_sum(s);
    if (threadIdx.x == 0) {
      const acc_t la =
          mala_log_alpha<acc_t>(energy[c], energy_prop[c], s, chain_temp.of(c, temperature));
      const bool ok = mala_decide(mala_log_u<acc_t>(seed, offset, numel, c), la);
      log_alpha[c] = la;
      accepted[c] = ok;
      take_prop = ok;
    }
    __syncthreads();
    const scalar_t* src = take_prop ? x_prop : x;
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) x_new[base + i] = src[base + i];
    __syncthreads();  // take_prop is rewritten for the next chain
  }
}

void launch(const MalaPlan& p) {
  const c10::cuda::CUDAGuard guard(p.x.device());
  const int64_t D = p.layout.row;
  int threads = kWarp;
  while (threads < kMalaMaxThreads && threads < D) threads *= 2;
  const int64_t blocks = std::min<int64_t>(p.layout.chains, kMaxBlocks);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.x.scalar_type(), "mala_accept_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    mala_accept_kernel<scalar_t, acc_t><<<blocks, threads, 0, stream>>>(
        p.x.const_data_ptr<scalar_t>(), p.x_prop.const_data_ptr<scalar_t>(),
        p.grad.const_data_ptr<scalar_t>(), p.grad_prop.const_data_ptr<scalar_t>(),
        p.energy.const_data_ptr<acc_t>(), p.energy_prop.const_data_ptr<acc_t>(),
        p.layout.seed.const_data_ptr<int64_t>(), p.layout.offset.const_data_ptr<int64_t>(), p.layout.chains, D,
        static_cast<acc_t>(p.step_size), static_cast<acc_t>(p.temperature),
        view_of<acc_t>(p.chain_step), view_of<acc_t>(p.chain_temp),
        p.x_new.mutable_data_ptr<scalar_t>(), p.accepted.mutable_data_ptr<bool>(),
        p.log_alpha.mutable_data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

// mala_proposal: one thread per Philox counter (grid-stride), its four elements each with its
// chain's -eta_c and sigma_c = sqrt(2 eta_c T_c) (mala_proposal_coeffs, shared with the CPU
// kernel), formed in langevin_step's order: x - eta g, then + sigma n.
template <typename scalar_t, typename acc_t>
__global__ void mala_proposal_kernel(const scalar_t* __restrict__ x,       // (numel,)
                                     const scalar_t* __restrict__ grad,    // (numel,)
                                     scalar_t* __restrict__ out,           // (numel,)
                                     const int64_t* __restrict__ seed_ptr,
                                     const int64_t* __restrict__ offset_ptr, int64_t numel,
                                     int64_t row, ChainParamView<acc_t> step,
                                     ChainParamView<acc_t> temp) {
  for_each_counter<acc_t>(seed_ptr, offset_ptr, numel, true, [&](int64_t c, const Normal4<acc_t>& z) {
    // The chain's coefficients, formed again only where the counter's four elements cross into
    // the next chain (a 64-bit division and a double sqrt per counter and chain, not per element).
    int64_t chain_end = 0;
    ProposalCoeffs<acc_t> co{};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int64_t e = 4 * c + k;
      if (e >= numel) break;
      if (e >= chain_end) {
        const int64_t chain = e / row;
        chain_end = (chain + 1) * row;
        co = mala_proposal_coeffs(step.of(chain, acc_t(0)), temp.of(chain, acc_t(0)));
      }
      const acc_t v = static_cast<acc_t>(x[e]) + co.neg_eta * static_cast<acc_t>(grad[e]);
      out[e] = static_cast<scalar_t>(v + co.sigma * z.v[k]);
    }
  });
}

void launch_proposal(const MalaProposalPlan& p) {
  const c10::cuda::CUDAGuard guard(p.x.device());
  constexpr int kThreads = 256;
  const int64_t n_ctr = (p.layout.numel + 3) / 4;
  const int64_t blocks = std::min<int64_t>((n_ctr + kThreads - 1) / kThreads, kMaxBlocks);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.x.scalar_type(), "mala_proposal_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    mala_proposal_kernel<scalar_t, acc_t><<<blocks, kThreads, 0, stream>>>(
        p.x.const_data_ptr<scalar_t>(), p.grad.const_data_ptr<scalar_t>(),
        p.out.mutable_data_ptr<scalar_t>(), p.layout.seed.const_data_ptr<int64_t>(),
        p.layout.offset.const_data_ptr<int64_t>(), p.layout.numel, p.layout.row, view_of<acc_t>(p.step),
        view_of<acc_t>(p.temp));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(thermokern, CUDA, m) {
  m.impl("mala_accept", &mala_accept_op<launch>);
  m.impl("mala_proposal", &mala_proposal_op<launch_proposal>);
}

}  // namespace thermokern::cuda

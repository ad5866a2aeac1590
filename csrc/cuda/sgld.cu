// sgld_step_: CUDA implementation (TORCH_LIBRARY_IMPL(thermokern, CUDA)): the kernel and its
// launch for the entry point of thermokern/sgld_plan.h (shared with the CPU).
//
// [Note: the SGLD CUDA launch]
// One kernel launch updates every tensor of the call. The plan (sgld_plan.h) builds a table with
// one row per (non-empty) tensor, SgldTensor of thermokern/sgld.h,
//   (param address, grad address, numel, counter_start, first block)      5 x int64,
// with a unit of one thread block; the host writes it into pinned memory and copies it to the
// device asynchronously on the current stream (the caching host allocator keeps the pinned block
// until the copy has run), then launches. Each
// tensor owns ceil(ceil(numel / 4) / kThreads) consecutive thread blocks, so a block never
// straddles two tensors; a block finds its tensor by a binary search over the table's
// first-block column (all threads read the same rows: broadcast loads that stay in L1), and
// each thread owns one Philox counter: 4 consecutive elements, read and written as one 4-wide
// vector when both addresses are aligned to it. The per-tensor padding wastes at most one
// partly idle block per tensor. Grid-stride beyond kMaxGrid blocks.
// The table copy is host-to-device memory traffic, not a launch; it also means a CUDA graph
// cannot capture this op (the pinned table would be reused after the capture), unlike
// langevin_step: a captured optimizer step needs a persistent table, which is future work.
#include <algorithm>
#include <cstdint>
#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "thermokern/philox.h"
#include "thermokern/sgld.h"
#include "thermokern/sgld_plan.h"

namespace thermokern::cuda {

namespace {

constexpr int kSgldThreads = 256;                // one counter (4 elements) per thread
constexpr int64_t kSgldMaxGrid = int64_t{1} << 20;  // grid-stride beyond this many blocks
constexpr int kSgldFields = sizeof(SgldTensor) / sizeof(int64_t);  // int64 per table row

template <typename T>
struct alignas(sizeof(T) * 4) Vec4 {
  T v[4];
};

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kSgldThreads)
    sgld_step_kernel(const SgldTensor* __restrict__ table,  // (n_tensors,) rows
                     int64_t n_tensors,
                     int64_t n_blocks,                     // blocks of all tensors together
                     const int64_t* __restrict__ seed_ptr,    // 0-dim: Philox key
                     const int64_t* __restrict__ offset_ptr,  // 0-dim: base counter
                     acc_t neg_lr, acc_t sigma, acc_t weight_decay) {
  const uint64_t seed = static_cast<uint64_t>(*seed_ptr);
  const uint64_t offset = static_cast<uint64_t>(*offset_ptr);
  for (int64_t b = blockIdx.x; b < n_blocks; b += gridDim.x) {
    // The tensor of block b: table[lo].first_unit <= b < table[hi].first_unit (hi may be
    // n_tensors, the end).
    int64_t lo = 0, hi = n_tensors;
    while (hi - lo > 1) {
      const int64_t mid = (lo + hi) / 2;
      if (table[mid].first_unit <= b) {
        lo = mid;
      } else {
        hi = mid;
      }
    }
    const SgldTensor t = table[lo];
    const int64_t c = (b - t.first_unit) * kSgldThreads + threadIdx.x;  // counter in tensor
    const int64_t e0 = 4 * c;
    if (e0 >= t.numel) continue;
    scalar_t* p = reinterpret_cast<scalar_t*>(t.param) + e0;
    const scalar_t* g = reinterpret_cast<const scalar_t*>(t.grad) + e0;
    const int m = static_cast<int>(t.numel - e0 < 4 ? t.numel - e0 : 4);
    constexpr uintptr_t kAlign = sizeof(Vec4<scalar_t>);
    const bool vec = m == 4 && ((reinterpret_cast<uintptr_t>(p) | reinterpret_cast<uintptr_t>(g)) %
                                kAlign) == 0;
    acc_t x[4] = {}, gv[4] = {};
    if (vec) {
      const Vec4<scalar_t> xp = *reinterpret_cast<const Vec4<scalar_t>*>(p);
      const Vec4<scalar_t> gp = *reinterpret_cast<const Vec4<scalar_t>*>(g);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        x[k] = static_cast<acc_t>(xp.v[k]);
        gv[k] = static_cast<acc_t>(gp.v[k]);
      }
    } else {
#pragma unroll
      for (int k = 0; k < 4; ++k) {  // constant indices: x and gv stay in registers
        if (k < m) {
          x[k] = static_cast<acc_t>(p[k]);
          gv[k] = static_cast<acc_t>(g[k]);
        }
      }
    }
    Normal4<acc_t> nz{};
    if (sigma != acc_t(0)) {
      nz = langevin_normal4<acc_t>(seed, offset + static_cast<uint64_t>(t.counter_start) +
                                             static_cast<uint64_t>(c));
    }
    Vec4<scalar_t> out;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      acc_t gk = gv[k];
      if (weight_decay != acc_t(0)) gk = gk + weight_decay * x[k];
      acc_t v = x[k] + neg_lr * gk;
      if (sigma != acc_t(0)) v = v + sigma * nz.v[k];
      out.v[k] = static_cast<scalar_t>(v);
    }
    if (vec) {
      *reinterpret_cast<Vec4<scalar_t>*>(p) = out;
    } else {
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        if (k < m) p[k] = out.v[k];
      }
    }
  }
}

void launch(const SgldPlan& p) {
  const c10::cuda::CUDAGuard guard(p.device);
  const int64_t blocks = p.units;
  const int64_t n_rows = static_cast<int64_t>(p.table.size());
  at::Tensor host = at::empty({n_rows, kSgldFields},
                              at::TensorOptions().dtype(at::kLong).pinned_memory(true));
  std::copy(p.table.begin(), p.table.end(), reinterpret_cast<SgldTensor*>(host.data_ptr<int64_t>()));
  at::Tensor table = at::empty({n_rows, kSgldFields}, at::TensorOptions().dtype(at::kLong).device(p.device));
  table.copy_(host, /*non_blocking=*/true);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const unsigned grid = static_cast<unsigned>(std::min(blocks, kSgldMaxGrid));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.dtype, "sgld_step_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    sgld_step_kernel<scalar_t, acc_t><<<grid, kSgldThreads, 0, stream>>>(
        reinterpret_cast<const SgldTensor*>(table.const_data_ptr<int64_t>()), n_rows, blocks,
        p.seed.const_data_ptr<int64_t>(), p.offset.const_data_ptr<int64_t>(),
        static_cast<acc_t>(-p.lr), static_cast<acc_t>(p.noise_std),
        static_cast<acc_t>(p.weight_decay));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

// A work unit of the CUDA kernel is a thread block of kSgldThreads counters.
constexpr auto sgld_step_cuda_ = &sgld_step_op<kSgldThreads, launch>;

}  // namespace

TORCH_LIBRARY_IMPL(thermokern, CUDA, m) { m.impl("sgld_step_", sgld_step_cuda_); }
// A sparse grad selects this key: the checks then name it (instead of "no kernel").
TORCH_LIBRARY_IMPL(thermokern, SparseCUDA, m) { m.impl("sgld_step_", sgld_step_cuda_); }

}  // namespace thermokern::cuda

// sgld_step_: CUDA implementation (TORCH_LIBRARY_IMPL(thermokern, CUDA)).
//
// [Note: the SGLD CUDA launch]
// One kernel launch updates every tensor of the call. The host writes a table with one row per
// (non-empty) tensor,
//   (param address, grad address, numel, counter_start, first block)      5 x int64,
// into pinned memory and copies it to the device asynchronously on the current stream (the
// caching host allocator keeps the pinned block until the copy has run), then launches. Each
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
#include <ATen/MemoryOverlap.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "thermokern/philox.h"
#include "thermokern/sgld.h"

namespace thermokern::cuda {

namespace {

constexpr int kSgldThreads = 256;                // one counter (4 elements) per thread
constexpr int64_t kSgldMaxGrid = int64_t{1} << 20;  // grid-stride beyond this many blocks
constexpr int kSgldFields = 5;                   // int64 per table row

struct SgldRow {
  int64_t param;        // address of the contiguous param
  int64_t grad;         // address of the contiguous grad (param's dtype)
  int64_t numel;        // > 0
  int64_t counter_start;
  int64_t first_block;  // prefix sum of the earlier tensors' blocks
};
static_assert(sizeof(SgldRow) == kSgldFields * sizeof(int64_t), "SgldRow is 5 int64");

template <typename T>
struct alignas(sizeof(T) * 4) Vec4 {
  T v[4];
};

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kSgldThreads)
    sgld_step_kernel(const SgldRow* __restrict__ table,  // (n_tensors,) rows
                     int64_t n_tensors,
                     int64_t n_blocks,                     // blocks of all tensors together
                     const int64_t* __restrict__ seed_ptr,    // 0-dim: Philox key
                     const int64_t* __restrict__ offset_ptr,  // 0-dim: base counter
                     acc_t neg_lr, acc_t sigma, acc_t weight_decay) {
  const uint64_t seed = static_cast<uint64_t>(*seed_ptr);
  const uint64_t offset = static_cast<uint64_t>(*offset_ptr);
  for (int64_t b = blockIdx.x; b < n_blocks; b += gridDim.x) {
    // The tensor of block b: table[lo].first_block <= b < table[hi].first_block (hi may be
    // n_tensors, the end).
    int64_t lo = 0, hi = n_tensors;
    while (hi - lo > 1) {
      const int64_t mid = (lo + hi) / 2;
      if (table[mid].first_block <= b) {
        lo = mid;
      } else {
        hi = mid;
      }
    }
    const SgldRow t = table[lo];
    const int64_t c = (b - t.first_block) * kSgldThreads + threadIdx.x;  // counter in tensor
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

void sgld_step_cuda_(at::TensorList params, at::TensorList grads, const at::Tensor& seed,
                     const at::Tensor& offset, at::IntArrayRef counter_starts, double lr,
                     double noise_std, double weight_decay) {
  check_sgld(params, grads, seed, offset, counter_starts, lr, noise_std, weight_decay);
  if (params.empty()) return;
  const c10::cuda::CUDAGuard guard(params[0].device());
  const size_t n = params.size();
  std::vector<at::Tensor> keep;  // contiguous copies, alive until the launch is queued
  std::vector<std::pair<at::Tensor, at::Tensor>> write_back;  // (param, its contiguous copy)
  std::vector<SgldRow> rows;
  rows.reserve(n);
  int64_t blocks = 0;
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& p = params[i];
    const at::Tensor& g = grads[i];
    if (p.numel() == 0) continue;
    at::assert_no_internal_overlap(p);
    at::assert_no_partial_overlap(p, g);
    at::Tensor pc = p;
    if (!p.is_contiguous()) {
      pc = p.contiguous();
      write_back.emplace_back(p, pc);
    }
    at::Tensor gc = g.is_same(p) ? pc : g.contiguous();
    SgldRow r;
    r.param = reinterpret_cast<int64_t>(pc.data_ptr());
    r.grad = reinterpret_cast<int64_t>(gc.const_data_ptr());
    r.numel = p.numel();
    r.counter_start = counter_starts[i];
    r.first_block = blocks;
    blocks += ((r.numel + 3) / 4 + kSgldThreads - 1) / kSgldThreads;
    rows.push_back(r);
    keep.push_back(std::move(pc));
    keep.push_back(std::move(gc));
  }
  if (rows.empty()) return;
  const int64_t n_rows = static_cast<int64_t>(rows.size());
  at::Tensor host = at::empty({n_rows, kSgldFields},
                              at::TensorOptions().dtype(at::kLong).pinned_memory(true));
  std::copy(rows.begin(), rows.end(), reinterpret_cast<SgldRow*>(host.data_ptr<int64_t>()));
  at::Tensor table = at::empty({n_rows, kSgldFields}, params[0].options().dtype(at::kLong));
  table.copy_(host, /*non_blocking=*/true);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const unsigned grid = static_cast<unsigned>(std::min(blocks, kSgldMaxGrid));
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, params[0].scalar_type(), "sgld_step_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        sgld_step_kernel<scalar_t, acc_t><<<grid, kSgldThreads, 0, stream>>>(
            reinterpret_cast<const SgldRow*>(table.const_data_ptr<int64_t>()), n_rows, blocks,
            seed.const_data_ptr<int64_t>(), offset.const_data_ptr<int64_t>(),
            static_cast<acc_t>(-lr), static_cast<acc_t>(noise_std),
            static_cast<acc_t>(weight_decay));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  for (auto& [p, pc] : write_back) p.copy_(pc);
}

}  // namespace

TORCH_LIBRARY_IMPL(thermokern, CUDA, m) { m.impl("sgld_step_", &sgld_step_cuda_); }
// A sparse grad selects this key: the checks then name it (instead of "no kernel").
TORCH_LIBRARY_IMPL(thermokern, SparseCUDA, m) { m.impl("sgld_step_", &sgld_step_cuda_); }

}  // namespace thermokern::cuda

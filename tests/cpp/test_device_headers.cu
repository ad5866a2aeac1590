// philox.h (incl. the Langevin normals) and row_stats.h in device code.
//
// Building this file proves the headers compile for the GPU (nvcc, the kernels' flags). When
// a CUDA device is present the test also runs them there and compares with the host build of
// the same headers: Philox bit for bit (incl. the known-answer vectors), row statistics
// merged across a warp with __shfl_xor_sync (as csrc/cuda/softmax_entropy.cu does) within a
// tolerance that covers __expf and --use_fast_math, plus NaN / inf semantics.
// Without a usable device it prints why and exits 77, which ctest reports as skipped.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <type_traits>
#include <vector>

#include "thermokern/philox.h"
#include "thermokern/row_stats.h"
#include "tk_rng.h"

namespace {

using thermokern::Philox4x32;
using thermokern::RowStats;

constexpr int kSkip = 77;
constexpr int kWarp = 32;

int g_failures = 0;

#define CHECK(cond, ...)                                        \
  do {                                                          \
    if (!(cond)) {                                              \
      if (++g_failures <= 30) {                                 \
        std::fprintf(stderr, "FAILED %s:%d: %s: ", __FILE__, __LINE__, #cond); \
        std::fprintf(stderr, __VA_ARGS__);                      \
        std::fprintf(stderr, "\n");                             \
      }                                                         \
    }                                                           \
  } while (0)

#define CUDA_OK(expr)                                                                   \
  do {                                                                                  \
    const cudaError_t err_ = (expr);                                                    \
    if (err_ != cudaSuccess) {                                                          \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(err_)); \
      std::exit(1);                                                                     \
    }                                                                                   \
  } while (0)

// ---- code shared by host and device -----------------------------------------------------

struct PhiloxCase {
  uint32_t ctr[4];
  uint32_t key[2];
  uint64_t seed, offset;
};

struct PhiloxOut {
  uint32_t raw[4];      // philox4x32(ctr, key)
  uint32_t stream[4];   // philox_randint4x(seed, offset)
  float uniform[4];     // philox_uint_to_uniform_open0(stream[i])
};

TK_INLINE PhiloxOut philox_case(const PhiloxCase& c) {
  PhiloxOut o;
  const Philox4x32 r = thermokern::philox4x32(c.ctr[0], c.ctr[1], c.ctr[2], c.ctr[3], c.key[0], c.key[1]);
  const Philox4x32 s = thermokern::philox_randint4x(c.seed, c.offset);
  for (int i = 0; i < 4; ++i) {
    o.raw[i] = r.x[i];
    o.stream[i] = s.x[i];
    o.uniform[i] = thermokern::philox_uint_to_uniform_open0(s.x[i]);
  }
  return o;
}

// One element's statistics as the kernels compute them: y = k (x - m) with m = x.
template <typename T>
TK_INLINE RowStats<T> element_stats(T x, T k) {
  if (x == T(-INFINITY)) return thermokern::row_stats_empty<T>();
  const T y = (x - x) * k;  // 0, or NaN for NaN and +inf
  const T e = thermokern::tk_exp(y);
  return RowStats<T>{x, e, y * e};
}

template <typename T>
struct RowOut {
  T m, lse, entropy, log_norm;
};

template <typename T>
TK_INLINE RowOut<T> row_out(const RowStats<T>& r, T k) {
  return RowOut<T>{r.m, thermokern::row_stats_lse(r, k), thermokern::row_stats_entropy(r),
                   thermokern::row_stats_log_norm(r)};
}

// ---- device -------------------------------------------------------------------------------

__global__ void philox_kernel(const PhiloxCase* in, PhiloxOut* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = philox_case(in[i]);
}

template <typename T>
__device__ RowStats<T> shfl_xor(const RowStats<T>& r, int mask) {
  return RowStats<T>{__shfl_xor_sync(0xffffffffu, r.m, mask), __shfl_xor_sync(0xffffffffu, r.d, mask),
                     __shfl_xor_sync(0xffffffffu, r.s, mask)};
}

// One warp per row: every lane merges its strided elements online, then the warp merges
// with an xor butterfly (every lane ends with the whole row's statistics).
template <typename T>
__global__ void row_stats_kernel(const T* x, int rows, int cols, T k, RowOut<T>* out) {
  const int row = blockIdx.x;
  if (row >= rows) return;
  RowStats<T> st = thermokern::row_stats_empty<T>();
  for (int j = threadIdx.x; j < cols; j += kWarp) {
    st = thermokern::row_stats_merge(st, element_stats(x[static_cast<int64_t>(row) * cols + j], k), k);
  }
  for (int mask = kWarp / 2; mask > 0; mask >>= 1) st = thermokern::row_stats_merge(st, shfl_xor(st, mask), k);
  if (threadIdx.x == 0) out[row] = row_out(st, k);
}

// The Langevin normals (langevin_normal4) of counters offset + i, float and double.
__global__ void normal4_kernel(uint64_t seed, uint64_t offset, int n, float* outf, double* outd) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const auto f = thermokern::langevin_normal4<float>(seed, offset + i);
  const auto d = thermokern::langevin_normal4<double>(seed, offset + i);
  for (int j = 0; j < 4; ++j) {
    outf[4 * i + j] = f.v[j];
    outd[4 * i + j] = d.v[j];
  }
}

// ---- host -----------------------------------------------------------------------------------

template <typename T>
void device_rows(const std::vector<T>& x, int rows, int cols, T k,
                                     std::vector<RowOut<T>>& out) {
  T* dx = nullptr;
  RowOut<T>* dout = nullptr;
  CUDA_OK(cudaMalloc(&dx, x.size() * sizeof(T)));
  CUDA_OK(cudaMalloc(&dout, rows * sizeof(RowOut<T>)));
  CUDA_OK(cudaMemcpy(dx, x.data(), x.size() * sizeof(T), cudaMemcpyHostToDevice));
  row_stats_kernel<T><<<rows, kWarp>>>(dx, rows, cols, k, dout);
  CUDA_OK(cudaGetLastError());
  out.resize(rows);
  CUDA_OK(cudaMemcpy(out.data(), dout, rows * sizeof(RowOut<T>), cudaMemcpyDeviceToHost));
  CUDA_OK(cudaFree(dx));
  CUDA_OK(cudaFree(dout));
}

using Rng = tk_test::SplitMix64;

void test_philox() {
  std::vector<PhiloxCase> cases = {
      {{0u, 0u, 0u, 0u}, {0u, 0u}, 0ull, 0ull},
      {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, {0xffffffffu, 0xffffffffu}, ~0ull, ~0ull},
      {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, {0xa4093822u, 0x299f31d0u}, 1ull, 1ull << 32},
  };
  const uint32_t kat[3][4] = {{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u},
                              {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu},
                              {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}};
  Rng rng{99};
  while (cases.size() < 4096) {
    PhiloxCase c;
    for (uint32_t& v : c.ctr) v = static_cast<uint32_t>(rng.next());
    for (uint32_t& v : c.key) v = static_cast<uint32_t>(rng.next());
    c.seed = rng.next();
    c.offset = rng.next();
    cases.push_back(c);
  }
  const int n = static_cast<int>(cases.size());
  PhiloxCase* din = nullptr;
  PhiloxOut* dout = nullptr;
  CUDA_OK(cudaMalloc(&din, n * sizeof(PhiloxCase)));
  CUDA_OK(cudaMalloc(&dout, n * sizeof(PhiloxOut)));
  CUDA_OK(cudaMemcpy(din, cases.data(), n * sizeof(PhiloxCase), cudaMemcpyHostToDevice));
  philox_kernel<<<(n + 255) / 256, 256>>>(din, dout, n);
  CUDA_OK(cudaGetLastError());
  std::vector<PhiloxOut> got(n);
  CUDA_OK(cudaMemcpy(got.data(), dout, n * sizeof(PhiloxOut), cudaMemcpyDeviceToHost));
  CUDA_OK(cudaFree(din));
  CUDA_OK(cudaFree(dout));
  for (int c = 0; c < 3; ++c) {
    for (int i = 0; i < 4; ++i) CHECK(got[c].raw[i] == kat[c][i], "KAT %d word %d: 0x%08x", c, i, got[c].raw[i]);
  }
  for (int c = 0; c < n; ++c) {
    const PhiloxOut want = philox_case(cases[c]);  // host build (64-bit mulhi, not __umulhi)
    for (int i = 0; i < 4; ++i) {
      CHECK(got[c].raw[i] == want.raw[i], "case %d raw word %d", c, i);
      CHECK(got[c].stream[i] == want.stream[i], "case %d stream word %d", c, i);
      CHECK(got[c].uniform[i] == want.uniform[i], "case %d uniform %d", c, i);
      CHECK(got[c].uniform[i] > 0.0f && got[c].uniform[i] <= 1.0f, "case %d uniform %d in (0, 1]", c, i);
    }
  }
  std::printf("device philox: %d cases\n", n);
}

// Device normals against the host build of the same header: within 2 ulp-ish (nvcc may fuse
// multiply-adds differently; the series, the range reduction and the correctly rounded
// division and square root are the same), i.e. 1e-6 relative plus 1e-7 absolute for float.
void test_normals() {
  const int n = 1 << 16;
  const uint64_t seed = 0x0123456789abcdefull, offset = (1ull << 32) - 1000;  // crosses 2^32
  float* df = nullptr;
  double* dd = nullptr;
  CUDA_OK(cudaMalloc(&df, 4 * n * sizeof(float)));
  CUDA_OK(cudaMalloc(&dd, 4 * n * sizeof(double)));
  normal4_kernel<<<(n + 255) / 256, 256>>>(seed, offset, n, df, dd);
  CUDA_OK(cudaGetLastError());
  std::vector<float> gf(4 * n);
  std::vector<double> gd(4 * n);
  CUDA_OK(cudaMemcpy(gf.data(), df, gf.size() * sizeof(float), cudaMemcpyDeviceToHost));
  CUDA_OK(cudaMemcpy(gd.data(), dd, gd.size() * sizeof(double), cudaMemcpyDeviceToHost));
  CUDA_OK(cudaFree(df));
  CUDA_OK(cudaFree(dd));
  for (int i = 0; i < n; ++i) {
    const auto wf = thermokern::langevin_normal4<float>(seed, offset + i);
    const auto wd = thermokern::langevin_normal4<double>(seed, offset + i);
    for (int j = 0; j < 4; ++j) {
      const float a = gf[4 * i + j], b = wf.v[j];
      CHECK(std::fabs(a - b) <= 1e-6f * std::fabs(b) + 1e-7f, "float normal %d.%d: %.9g vs host %.9g", i, j, a, b);
      const double c = gd[4 * i + j], d = wd.v[j];
      CHECK(std::fabs(c - d) <= 1e-14 * std::fabs(d) + 1e-15, "double normal %d.%d: %.17g vs host %.17g", i, j, c, d);
    }
  }
  std::printf("device langevin normals: %d counters\n", n);
}

template <typename T>
void test_row_stats(T k) {
  constexpr T inf = std::numeric_limits<T>::infinity();
  constexpr T nan = std::numeric_limits<T>::quiet_NaN();
  const double tol = std::is_same_v<T, float> ? 1e-4 : 1e-11;
  const int cols = 1000;
  enum { kNormal, kPeaked, kNear1e4, kNegInf, kAllNegInf, kNaN, kPosInf, kRows };
  Rng rng{static_cast<uint64_t>(1000 * k) + sizeof(T)};
  std::vector<T> x(static_cast<size_t>(kRows) * cols);
  for (int r = 0; r < kRows; ++r) {
    T* row = x.data() + static_cast<size_t>(r) * cols;
    for (int j = 0; j < cols; ++j) {
      const double g = rng.normal();
      row[j] = static_cast<T>(r == kPeaked ? 30 * g : r == kNear1e4 ? 1e4 + g : g);
    }
    if (r == kNegInf) for (int j = 0; j < cols; j += 3) row[j] = -inf;
    if (r == kAllNegInf) for (int j = 0; j < cols; ++j) row[j] = -inf;
    if (r == kNaN) row[cols / 2 + 7] = nan;
    if (r == kPosInf) row[5] = inf;
  }
  std::vector<RowOut<T>> got;
  device_rows(x, kRows, cols, k, got);
  for (int r = 0; r < kRows; ++r) {
    const T* row = x.data() + static_cast<size_t>(r) * cols;
    RowStats<T> st = thermokern::row_stats_empty<T>();
    for (int j = 0; j < cols; ++j) st = thermokern::row_stats_merge(st, element_stats(row[j], k), k);
    const RowOut<T> want = row_out(st, k);
    const RowOut<T>& g = got[r];
    if (r == kNaN) {
      CHECK(std::isnan(g.lse) && std::isnan(g.entropy), "NaN row: lse %g entropy %g", double(g.lse), double(g.entropy));
    } else if (r == kPosInf) {
      CHECK(std::isnan(g.entropy), "+inf row: entropy %g", double(g.entropy));
    } else if (r == kAllNegInf) {
      CHECK(g.lse == -inf && std::isnan(g.entropy), "all -inf row: lse %g entropy %g", double(g.lse), double(g.entropy));
    } else {
      CHECK(g.m == want.m, "row %d: max %g vs %g", r, double(g.m), double(want.m));
      CHECK(std::fabs(g.lse - want.lse) <= tol * (1 + std::fabs(want.lse)), "row %d: lse %.17g vs host %.17g", r,
            double(g.lse), double(want.lse));
      CHECK(std::fabs(g.entropy - want.entropy) <= tol * (1 + std::fabs(want.entropy)),
            "row %d: entropy %.17g vs host %.17g", r, double(g.entropy), double(want.entropy));
      CHECK(std::fabs(g.log_norm - want.log_norm) <= tol * (1 + std::fabs(want.log_norm)),
            "row %d: log_norm %.17g vs host %.17g", r, double(g.log_norm), double(want.log_norm));
    }
  }
  std::printf("device row_stats<%s> k=%g: %d rows\n", std::is_same_v<T, float> ? "float" : "double",
              double(k), int(kRows));
}

}  // namespace

int main() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    std::printf("no usable CUDA device (%s): device test skipped, compile check only\n",
                err != cudaSuccess ? cudaGetErrorString(err) : "0 devices");
    return kSkip;
  }
  cudaDeviceProp prop{};
  CUDA_OK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device 0: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
  test_philox();
  test_normals();
  for (float k : {1.0f, 0.5f, 4.0f}) test_row_stats<float>(k);
  for (double k : {1.0, 0.5, 4.0}) test_row_stats<double>(k);
  if (g_failures != 0) {
    std::printf("%d check(s) failed\n", g_failures);
    return 1;
  }
  std::printf("all device checks passed\n");
  return 0;
}

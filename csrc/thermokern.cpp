// thermokern._C: the op schemas (the single source of truth for every backend) and a small
// pybind11 module with build and runtime facts used by thermokern._backend and the tests.
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/library.h>

#include "cpu/isa.h"
#include "thermokern/checks.h"
#include "thermokern/philox.h"

TORCH_LIBRARY(thermokern, m) {
  // softmax_entropy over the last dim of a (rows, C) tensor with unit inner stride.
  // Returns per-row (entropy, shift, log_norm) in the accumulation dtype (float32; float64
  // for float64), with log p = (x - shift) / T - log_norm (row_stats.h). The shift is the
  // row maximum, or on CPU possibly a value up to 8 T ln 2 below it (see entropy_kernel.h);
  // any shift gives the same p. These three numbers are all the backward needs: no (rows, C)
  // tensor is saved.
  // inv_t: 1-D tensor of the accumulation dtype holding 1/T, with 1 element (every row) or
  // one per row. Values are checked by the Python layer (finite, > 0).
  m.def(
      "softmax_entropy_fwd(Tensor logits, Tensor inv_t) -> "
      "(Tensor entropy, Tensor shift, Tensor log_norm)");
  m.def(
      "softmax_entropy_bwd(Tensor grad, Tensor logits, Tensor inv_t, Tensor entropy, "
      "Tensor shift, Tensor log_norm) -> Tensor");
  // Entropy-regularised cross-entropy per row, z = logits / T:
  //   loss = CE(z, target; label_smoothing) - entropy_weight * H(softmax z)
  //          + z_loss_weight * lse(z)^2,
  // 0 for rows whose target is ignore_index. Also returns the softmax_entropy statistics,
  // which are all the backward needs. A target outside [0, C) that is not ignore_index
  // raises on CPU; the CUDA kernels write NaN for it (they never read out of bounds).
  m.def(
      "entropy_ce_fwd(Tensor logits, Tensor target, Tensor inv_t, float entropy_weight, "
      "float label_smoothing, int ignore_index, float z_loss_weight) -> "
      "(Tensor loss, Tensor entropy, Tensor shift, Tensor log_norm)");
  m.def(
      "entropy_ce_bwd(Tensor grad, Tensor logits, Tensor target, Tensor inv_t, Tensor entropy, "
      "Tensor shift, Tensor log_norm, float entropy_weight, float label_smoothing, "
      "int ignore_index, float z_loss_weight) -> Tensor");
}

namespace thermokern {
namespace {
std::atomic<bool> g_poison_outputs{false};
}  // namespace
bool poison_outputs_enabled() { return g_poison_outputs.load(std::memory_order_relaxed); }
}  // namespace thermokern

namespace {

bool cuda_compiled() {
#ifdef THERMOKERN_WITH_CUDA
  return true;
#else
  return false;
#endif
}

std::vector<std::string> cuda_archs() {
#ifdef THERMOKERN_CUDA_ARCHS
  std::vector<std::string> out;
  std::string s = THERMOKERN_CUDA_ARCHS;
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find(';', start);
    if (end == std::string::npos) end = s.size();
    if (end > start) out.push_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
#else
  return {};
#endif
}

// Philox4x32-10 words for counters offset .. offset + n - 1 (4 words each), for tests that
// compare the C++ generator with Triton's tl.randint4x.
std::vector<uint32_t> philox_randint4x(uint64_t seed, uint64_t offset, int64_t n) {
  std::vector<uint32_t> out;
  out.reserve(static_cast<size_t>(n) * 4);
  for (int64_t i = 0; i < n; ++i) {
    const auto r = thermokern::philox_randint4x(seed, offset + static_cast<uint64_t>(i));
    out.insert(out.end(), r.x, r.x + 4);
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "thermokern native extension: registers torch.ops.thermokern.*";
  m.def("cuda_compiled", &cuda_compiled, "Whether the CUDA kernels were compiled in.");
  m.def("cuda_archs", &cuda_archs, "CUDA architectures the kernels were compiled for.");
  m.def("cpu_isa", [] { return thermokern::cpu::isa_name(thermokern::cpu::active_isa()); },
        "ISA of the CPU kernels in use: default, avx2 or avx512.");
  m.def("cpu_best_isa",
        [] { return thermokern::cpu::isa_name(thermokern::cpu::best_supported_isa()); },
        "Widest ISA this CPU supports among default, avx2, avx512.");
  m.def("_set_cpu_isa", &thermokern::cpu::set_active_isa, pybind11::arg("name"),
        "Force the CPU kernel ISA ('' restores the best one).");
  m.def("_set_poison_outputs", [](bool on) { thermokern::g_poison_outputs.store(on); },
        pybind11::arg("on"), "Fill new op outputs with NaN before the kernels run (tests).");
  m.def("_poison_outputs", &thermokern::poison_outputs_enabled);
  m.def("_philox_randint4x", &philox_randint4x, pybind11::arg("seed"), pybind11::arg("offset"),
        pybind11::arg("n"));
}

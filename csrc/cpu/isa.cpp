// ISA detection and the active-ISA switch of csrc/cpu/isa.h.
#include "isa.h"

#include <atomic>
#include <cstdlib>

#include <c10/util/Exception.h>

namespace thermokern::cpu {

namespace {

Isa parse_isa(const std::string& name) {
  if (name == "default") return Isa::Default;
  if (name == "avx2") return Isa::Avx2;
  if (name == "avx512") return Isa::Avx512;
  TORCH_CHECK_VALUE(false, "cpu_isa: expected 'default', 'avx2' or 'avx512', got '", name, "'");
}

Isa initial_isa() {
  const char* env = std::getenv("THERMOKERN_CPU_ISA");
  const Isa best = best_supported_isa();
  if (env == nullptr || *env == '\0') return best;
  const Isa wanted = parse_isa(env);
  return static_cast<int>(wanted) < static_cast<int>(best) ? wanted : best;
}

std::atomic<int>& active() {
  static std::atomic<int> isa{static_cast<int>(initial_isa())};
  return isa;
}

}  // namespace

Isa best_supported_isa() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  // The AVX512 variant uses at::vec's AVX512 code, which needs F, BW, VL and DQ.
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("fma")) {
    return Isa::Avx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::Avx2;
#endif
  return Isa::Default;
}

Isa active_isa() { return static_cast<Isa>(active().load()); }

void set_active_isa(const std::string& name) {
  const Isa best = best_supported_isa();
  if (name.empty()) {
    active().store(static_cast<int>(best));
    return;
  }
  const Isa wanted = parse_isa(name);
  TORCH_CHECK_VALUE(static_cast<int>(wanted) <= static_cast<int>(best), "cpu_isa: '", name,
                    "' is not supported by this CPU (best: ", isa_name(best), ")");
  active().store(static_cast<int>(wanted));
}

std::string isa_name(Isa isa) {
  switch (isa) {
    case Isa::Avx512: return "avx512";
    case Isa::Avx2: return "avx2";
    default: return "default";
  }
}

}  // namespace thermokern::cpu

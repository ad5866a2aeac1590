// splitmix64: the deterministic, platform-independent input generator of the C++ tests
// (host code; also included by test_device_headers.cu).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

namespace tk_test {

struct SplitMix64 {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return (static_cast<double>(next() >> 11) + 0.5) * 0x1.0p-53; }  // (0,1)
  double normal() {  // Box-Muller
    return std::sqrt(-2.0 * std::log(uniform())) * std::cos(6.283185307179586 * uniform());
  }
  size_t below(size_t n) { return static_cast<size_t>(next() % n); }
};

}  // namespace tk_test

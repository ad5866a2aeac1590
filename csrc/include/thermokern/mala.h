// Metropolis-adjusted Langevin (MALA): the per-chain acceptance test, host and device.
//
// [Note: MALA acceptance]
// mala_accept (csrc/thermokern.cpp) decides, for every chain c (dim 0 of x), whether the
// proposal x' = x - eta grad E(x) + sqrt(2 eta T) n (a langevin_step) replaces x. With
// g = grad E(x), g' = grad E(x'), and the proposal density
//   log q(a | b) = -|a - b + eta grad E(b)|^2 / (4 eta T)   (+ a constant),
// the log acceptance ratio for the target p(x) ∝ exp(-E(x) / T) is
//   log alpha = -(E' - E) / T + log q(x | x') - log q(x' | x).
// With a = x - x' + eta g' and b = x' - x + eta g, a^2 - b^2 = (a - b)(a + b) elementwise:
//   log alpha = -((E' - E) + S / 4) / T,   S = sum_e (2 (x_e - x'_e) + eta (g'_e - g_e)) (g_e + g'_e).
// This form never subtracts the two large squared norms (each about 2 eta T |n|^2), so it
// keeps its relative accuracy for small steps in float32, and it has no division by eta.
//
// Random numbers (same stream as langevin_step, [Note: Langevin noise layout] in philox.h):
// a step on a tensor of `numel` elements under (seed, offset) draws the proposal noise from
// the counters offset .. offset + P - 1, P = ceil(numel / 4), and chain c's uniform from
// word c % 4 of counter offset + P + c / 4, u = ((w >> 8) + 1) 2^-24 in (0, 1]. A MALA step
// thus uses P + ceil(chains / 4) counters (mala_counters). The chain accepts when
//   log u <= log alpha
// (probability min(1, alpha) up to the 2^-24 grid; a NaN log alpha rejects), with
// log u = -(1/2) noise_neg2_log_u(k), the same series every backend evaluates.
#pragma once

#include <cstdint>

#include "thermokern/common.h"
#include "thermokern/philox.h"

namespace thermokern {

// Chain c's value of a per-chain parameter ([Note: per-chain MALA parameters] in
// csrc/thermokern.cpp): values[c * stride] (stride 0: one value for every chain), or
// `fallback` when the op got none.
template <typename T>
TK_INLINE T chain_value(const T* values, int64_t stride, int64_t c, T fallback) {
  return values != nullptr ? values[c * stride] : fallback;
}

// A chain's proposal coefficients, -eta and sigma = sqrt(2 eta T), formed in double from its
// step size and temperature (in the accumulation type T) and rounded to T: every backend
// (the CPU and CUDA kernels, Triton's kernel, the reference) forms them so, bit for bit.
template <typename T>
struct ProposalCoeffs {
  T neg_eta, sigma;
};
template <typename T>
TK_INLINE ProposalCoeffs<T> mala_proposal_coeffs(T step, T temperature) {
  const double eta = static_cast<double>(step);
  const double sigma = detail::sqrt_rn(2.0 * eta * static_cast<double>(temperature));
  return {static_cast<T>(-eta), static_cast<T>(sigma)};
}

// Counters used by one MALA step on `numel` elements in `chains` chains.
TK_INLINE uint64_t mala_counters(int64_t numel, int64_t chains) {
  return static_cast<uint64_t>((numel + 3) / 4) + static_cast<uint64_t>((chains + 3) / 4);
}

// The summand of S for one element (see the Note), in the accumulation type T.
template <typename T>
TK_INLINE T mala_term(T x, T xp, T g, T gp, T step) {
  return (T(2) * (x - xp) + step * (gp - g)) * (g + gp);
}

// log alpha from the energies and the reduced sum S.
template <typename T>
TK_INLINE T mala_log_alpha(T energy, T energy_prop, T sum, T temperature) {
  return -detail::div_rn((energy_prop - energy) + T(0.25) * sum, temperature);
}

// The Philox counter of chain `chain`'s uniform (its word is chain % 4; see the Note).
TK_INLINE uint64_t mala_uniform_counter(uint64_t offset, int64_t numel, int64_t chain) {
  return offset + static_cast<uint64_t>((numel + 3) / 4) + static_cast<uint64_t>(chain / 4);
}

// log u of the Philox word w: -(1/2) (-2 ln u) by the header's series.
template <typename T>
TK_INLINE T mala_log_u_of_word(uint32_t w) {
  return T(-0.5) * noise_neg2_log_u<T>(noise_k24(w));
}

// log u of chain `chain` (see the Note).
template <typename T>
TK_INLINE T mala_log_u(uint64_t seed, uint64_t offset, int64_t numel, int64_t chain) {
  const Philox4x32 r = philox_randint4x(seed, mala_uniform_counter(offset, numel, chain));
  return mala_log_u_of_word<T>(r.x[chain % 4]);
}

// Whether the chain accepts (false for a NaN log alpha).
template <typename T>
TK_INLINE bool mala_decide(T log_u, T log_alpha) {
  return log_u <= log_alpha;
}

}  // namespace thermokern

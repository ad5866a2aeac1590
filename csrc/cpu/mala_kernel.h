// mala_accept and mala_proposal CPU kernels, compiled once per ISA (included by
// csrc/cpu/isa/kernels_*.cpp).
//
// [Note: the MALA CPU kernel]
// A task owns whole chains. For each chain one vectorised sweep reads x, x', g and g' and
// accumulates S = sum (2 (x - x') + eta (g' - g)) (g + g') in Vectorized<acc_t> lanes (two
// accumulators, for 16-bit inputs one per half), then the scalar tail of the chain computes
// log alpha, takes its uniform from Philox (one draw serves 4 consecutive chains) and
// decides ([Note: MALA acceptance] in thermokern/mala.h), and a second sweep copies the
// chosen row (x' or x) into x_new. The row stays in L1/L2 between the two sweeps for rows up
// to ~100K float elements. Measured (1 thread, busy 2-core AVX-512 machine): 19 ns per 2-D
// chain, 44 GB/s of the five streams for 64 chains of 16K floats.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/core/ScalarType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "dispatch.h"
#include "langevin_kernel.h"
#include "mala_args.h"
#include "thermokern/mala.h"
#include "vec_math.h"

namespace thermokern::cpu {
inline namespace CPU_CAPABILITY {
namespace mala {

template <typename scalar_t>
void accept(const MalaArgs& a, int64_t c_begin, int64_t c_end) {
  using R = Lanes<scalar_t>;  // vec_math.h; past the end of a chain it loads zeros (terms 0)
  using acc_t = typename R::acc_t;
  using Va = typename R::Va;
  const auto* x = static_cast<const scalar_t*>(a.x);
  const auto* xp = static_cast<const scalar_t*>(a.x_prop);
  const auto* g = static_cast<const scalar_t*>(a.grad);
  const auto* gp = static_cast<const scalar_t*>(a.grad_prop);
  const auto* e = static_cast<const acc_t*>(a.energy);
  const auto* ep = static_cast<const acc_t*>(a.energy_prop);
  auto* out = static_cast<scalar_t*>(a.x_new);
  auto* log_alpha = static_cast<acc_t*>(a.log_alpha);
  const auto* chain_step = static_cast<const acc_t*>(a.chain_step);
  const auto* chain_temp = static_cast<const acc_t*>(a.chain_temp);
  const acc_t step = static_cast<acc_t>(a.step_size);
  const acc_t temperature = static_cast<acc_t>(a.temperature);
  const Va two(acc_t(2));
  const int64_t D = a.row;
  // Four consecutive chains share a Philox counter: draw it once for them.
  Philox4x32 words{};
  uint64_t words_ctr = 0;
  bool have_words = false;
  for (int64_t c = c_begin; c < c_end; ++c) {
    const int64_t base = c * D;
    const Va vstep(chain_value(chain_step, a.chain_step_stride, c, step));
    Va acc0(acc_t(0)), acc1(acc_t(0));
    for (int64_t i = 0; i < D; i += R::kSize) {
      const int64_t cnt = D - i;
      Va xv[R::kParts], xpv[R::kParts], gv[R::kParts], gpv[R::kParts];
      R::load(x + base + i, cnt, xv);
      R::load(xp + base + i, cnt, xpv);
      R::load(g + base + i, cnt, gv);
      R::load(gp + base + i, cnt, gpv);
      // Two accumulators: for 16-bit inputs one per half, for 32/64-bit alternating vectors.
      const Va t0 = (two * (xv[0] - xpv[0]) + vstep * (gpv[0] - gv[0])) * (gv[0] + gpv[0]);
      if constexpr (R::kParts == 2) {
        acc0 = acc0 + t0;
        acc1 = acc1 + (two * (xv[1] - xpv[1]) + vstep * (gpv[1] - gv[1])) * (gv[1] + gpv[1]);
      } else if ((i / R::kSize) % 2 == 0) {
        acc0 = acc0 + t0;
      } else {
        acc1 = acc1 + t0;
      }
    }
    const acc_t sum =
        at::vec::vec_reduce_all<acc_t>([](Va& p, Va& q) { return p + q; }, acc0 + acc1);
    const acc_t t_c = chain_value(chain_temp, a.chain_temp_stride, c, temperature);
    const acc_t la = mala_log_alpha<acc_t>(e[c], ep[c], sum, t_c);
    const uint64_t ctr = mala_uniform_counter(a.offset, a.numel, c);
    if (!have_words || ctr != words_ctr) {
      words = philox_randint4x(a.seed, ctr);
      words_ctr = ctr;
      have_words = true;
    }
    const bool ok = mala_decide(mala_log_u_of_word<acc_t>(words.x[c % 4]), la);
    log_alpha[c] = la;
    a.accepted[c] = ok;
    if (D > 0) std::memcpy(out + base, (ok ? xp : x) + base, static_cast<size_t>(D) * sizeof(scalar_t));
  }
}

// [Note: the MALA proposal CPU kernel]
// The Langevin CPU kernel's blocks of counters ([Note: the Langevin CPU kernel]) with the
// step's coefficients per element: for each block, the normals go into z and each chain's
// -eta_c and sigma_c = sqrt(2 eta_c T_c) (evaluated in double) are filled over the block's
// elements of that chain, one run per chain; the sweep then forms x - eta g + sigma n in the
// order langevin_step does, so equal parameters give langevin_step's values bit for bit.
template <typename scalar_t>
void proposal(const MalaProposalArgs& a, int64_t ctr_begin, int64_t ctr_end) {
  using L = Lanes<scalar_t>;
  using acc_t = typename L::acc_t;
  using Va = typename L::Va;
  constexpr int64_t kBuf = 4 * langevin::kBlock + L::kSize;
  alignas(64) acc_t neg_eta[kBuf] = {};
  alignas(64) acc_t sigma[kBuf] = {};
  const auto* step = static_cast<const acc_t*>(a.step);
  const auto* temp = static_cast<const acc_t*>(a.temp);
  const auto block = [&](int64_t e0, int64_t ne) {
    for (int64_t j = 0; j < ne;) {  // one run of coefficients per chain
      const int64_t chain = (e0 + j) / a.row;
      const int64_t end = std::min(ne, (chain + 1) * a.row - e0);
      const auto co = mala_proposal_coeffs(step[chain * a.step_stride], temp[chain * a.temp_stride]);
      std::fill(neg_eta + j, neg_eta + end, co.neg_eta);
      std::fill(sigma + j, sigma + end, co.sigma);
      j = end;
    }
  };
  const auto update = [&](const Va& x, const Va& g, int64_t k, const acc_t* z) {
    const Va v = x + Va::loadu(neg_eta + k) * g;
    return v + Va::loadu(sigma + k) * Va::loadu(z);
  };
  langevin::sweep(langevin::PhiloxKeys(a.seed), a.seed, a.offset, a.numel, ctr_begin, ctr_end, true,
                  static_cast<const scalar_t*>(a.x), static_cast<const scalar_t*>(a.grad),
                  static_cast<scalar_t*>(a.out), block, update);
}

}  // namespace mala
}  // namespace CPU_CAPABILITY

TK_DEFINE_ISA_ENTRY(mala_accept, MalaArgs, mala::accept)
TK_DEFINE_ISA_ENTRY(mala_proposal, MalaProposalArgs, mala::proposal)

}  // namespace thermokern::cpu

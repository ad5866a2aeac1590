// token_logprobs CPU kernels, compiled once per ISA ([Note: per-ISA kernels] in isa.h): per
// row, the log-probability of the target and the softmax_entropy statistics (forward), and the
// gradient of both outputs (backward), with the row statistics of row_stats_kernel.h
// ([Note: token log-probabilities] in csrc/thermokern.cpp).
#pragma once

#include <cstdint>

#include "row_stats_kernel.h"
#include "token_logprobs_args.h"

namespace thermokern::cpu {
inline namespace CPU_CAPABILITY {

// logp = log p_y = k (x_y - m) - log d, from the difference to the shift m (no cancellation
// for large logits), in double like the statistics.
template <typename scalar_t>
void token_logprobs_fwd_rows(const TokenLogprobsArgs& a, int64_t row_begin, int64_t row_end) {
  auto* logp = static_cast<acc_type_t<scalar_t>*>(a.logp);
  row_stats_rows<scalar_t>(
      a, row_begin, row_end, /*with_sum=*/false,
      [&](int64_t r, const scalar_t* row, double k, const RowStats<double>& st, double /*h*/,
          double ln, double /*x_sum*/) {
        int64_t y;
        if (!live_target(a, r, y, logp[r])) return;
        const double x_y = static_cast<double>(static_cast<acc_type_t<scalar_t>>(row[y]));
        logp[r] = static_cast<acc_type_t<scalar_t>>(k * (x_y - st.m) - ln);
      });
}

// grad_j = k [g_l ([j == y] - p_j) - g_H p_j (log p_j + H)]
//        = A p_j + B p_j log p_j + (k g_l at j == y),  A = -k (g_l + g_H H), B = -k g_H
// (softmax_affine_rows); without grad_entropy, g_H = 0.
template <typename scalar_t>
void token_logprobs_bwd_rows(const TokenLogprobsArgs& a, int64_t row_begin, int64_t row_end) {
  using acc_t = acc_type_t<scalar_t>;
  const bool with_entropy = a.grad_entropy != nullptr;
  const auto* grad_logp = static_cast<const acc_t*>(a.grad);
  const auto* grad_entropy = static_cast<const acc_t*>(a.grad_entropy);
  const auto* entropy = static_cast<const acc_t*>(a.entropy);
  softmax_affine_rows<scalar_t>(
      a, row_begin, row_end,
      [&](int64_t r, acc_t k, acc_t& A, acc_t& B, acc_t& c, int64_t& y, acc_t& y_term) {
        if (!live_target(a, r, y, c)) return false;  // a row of c
        const acc_t gl = grad_logp[r] * k;
        const acc_t gh = with_entropy ? grad_entropy[r] * k : acc_t(0);
        A = with_entropy ? -(gl + gh * entropy[r]) : -gl;
        B = -gh;
        c = 0;
        y_term = gl;
        return true;
      });
}

}  // namespace CPU_CAPABILITY

TK_DEFINE_ISA_ENTRY(token_logprobs_fwd, TokenLogprobsArgs, token_logprobs_fwd_rows)
TK_DEFINE_ISA_ENTRY(token_logprobs_bwd, TokenLogprobsArgs, token_logprobs_bwd_rows)

}  // namespace thermokern::cpu

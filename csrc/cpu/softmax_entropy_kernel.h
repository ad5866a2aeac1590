// softmax_entropy CPU kernels, compiled once per ISA ([Note: per-ISA kernels] in isa.h): per
// row, the entropy and statistics (forward) and -(g/T) p (log p + H) (backward), with the row
// statistics of row_stats_kernel.h.
#pragma once

#include <cstdint>

#include "row_stats_kernel.h"
#include "softmax_entropy_args.h"

namespace thermokern::cpu {
inline namespace CPU_CAPABILITY {

template <typename scalar_t>
void softmax_entropy_fwd_rows(const SoftmaxEntropyArgs& a, int64_t row_begin, int64_t row_end) {
  row_stats_rows<scalar_t>(a, row_begin, row_end, /*with_sum=*/false,
                           [](int64_t, const scalar_t*, double, const RowStats<double>&, double,
                              double, double) {});  // the statistics are all the outputs
}

template <typename scalar_t>
void softmax_entropy_bwd_rows(const SoftmaxEntropyArgs& a, int64_t row_begin, int64_t row_end) {
  using acc_t = acc_type_t<scalar_t>;
  const auto* grad = static_cast<const acc_t*>(a.grad);
  const auto* entropy = static_cast<const acc_t*>(a.entropy);
  softmax_affine_rows<scalar_t>(a, row_begin, row_end,
                                [&](int64_t r, acc_t k, acc_t& A, acc_t& B, acc_t& c, int64_t& y,
                                    acc_t& y_term) {
                                  const acc_t coef = -grad[r] * k;
                                  A = coef * entropy[r];
                                  B = coef;
                                  c = 0;
                                  y = -1;
                                  y_term = 0;
                                  return true;
                                });
}

}  // namespace CPU_CAPABILITY

TK_DEFINE_ISA_ENTRY(softmax_entropy_fwd, SoftmaxEntropyArgs, softmax_entropy_fwd_rows)
TK_DEFINE_ISA_ENTRY(softmax_entropy_bwd, SoftmaxEntropyArgs, softmax_entropy_bwd_rows)

}  // namespace thermokern::cpu

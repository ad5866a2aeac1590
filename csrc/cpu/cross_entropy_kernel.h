// cross_entropy CPU kernels (entropy-regularised cross-entropy), compiled once per ISA
// ([Note: per-ISA kernels] in isa.h): per row, the loss and the softmax_entropy statistics
// (forward) and the gradient (backward), with the row statistics of row_stats_kernel.h.
#pragma once

#include <cstdint>

#include "cross_entropy_args.h"
#include "row_stats_kernel.h"

namespace thermokern::cpu {
inline namespace CPU_CAPABILITY {

template <typename scalar_t>
void cross_entropy_fwd_rows(const CrossEntropyArgs& a, int64_t row_begin, int64_t row_end) {
  using acc_t = acc_type_t<scalar_t>;
  auto* loss = static_cast<acc_t*>(a.loss);
  const double eps = a.label_smoothing;
  const auto on_row = [&](int64_t r, const scalar_t* row, double k, const RowStats<double>& st,
                          double h, double ln, double x_sum) {
    int64_t y;
    if (!live_target(a, r, y, loss[r])) return;
    // CE = (1 - eps)(lse - z_y) + eps (lse - mean z) = log d + k (m - (1 - eps) x_y - eps mean x):
    // the differences to the shift m keep it free of cancellation for large logits.
    const double x_y = static_cast<double>(static_cast<acc_t>(row[y]));
    double gap = st.m - (1.0 - eps) * x_y;
    if (eps > 0.0) gap -= eps * (x_sum / static_cast<double>(a.C));
    const double ce = ln + k * gap;
    const double lse = st.m * k + ln;
    double value = ce - a.entropy_weight * h;
    if (a.z_loss_weight != 0.0) value += a.z_loss_weight * lse * lse;
    loss[r] = static_cast<acc_t>(value);
  };
  row_stats_rows<scalar_t>(a, row_begin, row_end, /*with_sum=*/eps > 0.0, on_row);
}

template <typename scalar_t>
void cross_entropy_bwd_rows(const CrossEntropyArgs& a, int64_t row_begin, int64_t row_end) {
  using acc_t = acc_type_t<scalar_t>;
  const auto* grad = static_cast<const acc_t*>(a.grad);
  const auto* entropy = static_cast<const acc_t*>(a.entropy);
  const auto* shift = static_cast<const acc_t*>(a.shift);
  const auto* log_norm = static_cast<const acc_t*>(a.log_norm);
  const acc_t beta = static_cast<acc_t>(a.entropy_weight);
  const acc_t eps = static_cast<acc_t>(a.label_smoothing);
  const acc_t zw2 = static_cast<acc_t>(2.0 * a.z_loss_weight);
  const acc_t inv_c = acc_t(1) / static_cast<acc_t>(a.C);
  softmax_affine_rows<scalar_t>(
      a, row_begin, row_end,
      [&](int64_t r, acc_t k, acc_t& A, acc_t& B, acc_t& c, int64_t& y, acc_t& y_term) {
        if (!live_target(a, r, y, c)) return false;  // a row of c
        const acc_t gk = grad[r] * k;
        const acc_t lse = shift[r] * k + log_norm[r];
        A = gk * (acc_t(1) + beta * entropy[r] + zw2 * lse);
        B = gk * beta;
        c = -gk * eps * inv_c;
        y_term = -gk * (acc_t(1) - eps);
        return true;
      });
}

}  // namespace CPU_CAPABILITY

TK_DEFINE_ISA_ENTRY(cross_entropy_fwd, CrossEntropyArgs, cross_entropy_fwd_rows)
TK_DEFINE_ISA_ENTRY(cross_entropy_bwd, CrossEntropyArgs, cross_entropy_bwd_rows)

}  // namespace thermokern::cpu

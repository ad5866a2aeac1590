// Tests of csrc/include/thermokern/mala.h (host build of the host/device header).
#include <cmath>
#include <cstdint>

#include "thermokern/mala.h"
#include "tk_test.h"

namespace {

// log q(a | b) = -|a - b + eta g(b)|^2 / (4 eta T), summed over a chain.
double log_q(const double* a, const double* b, const double* gb, int n, double eta, double t) {
  double s = 0;
  for (int i = 0; i < n; ++i) {
    const double d = a[i] - b[i] + eta * gb[i];
    s += d * d;
  }
  return -s / (4 * eta * t);
}

}  // namespace

// The factored sum equals the textbook log acceptance ratio.
TK_TEST(mala, log_alpha_matches_textbook_formula) {
  uint64_t state = 12345;
  auto next = [&] {  // a small LCG in [-1, 1)
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<double>(state >> 11) * 0x1.0p-53 * 2.0 - 1.0;
  };
  for (int trial = 0; trial < 200; ++trial) {
    constexpr int n = 7;
    double x[n], xp[n], g[n], gp[n];
    for (int i = 0; i < n; ++i) {
      x[i] = 3 * next();
      xp[i] = 3 * next();
      g[i] = 5 * next();
      gp[i] = 5 * next();
    }
    const double eta = 0.01 + std::fabs(next()), t = 0.1 + std::fabs(next());
    const double e = next(), ep = next();
    double s = 0;
    for (int i = 0; i < n; ++i) s += thermokern::mala_term<double>(x[i], xp[i], g[i], gp[i], eta);
    const double got = thermokern::mala_log_alpha<double>(e, ep, s, t);
    const double want = -(ep - e) / t + log_q(x, xp, gp, n, eta, t) - log_q(xp, x, g, n, eta, t);
    TK_CHECK_NEAR(got, want, 1e-11 * (1 + std::fabs(want)));
  }
}

// Chain c's uniform: word c % 4 of counter offset + ceil(numel / 4) + c / 4.
TK_TEST(mala, uniform_layout) {
  const uint64_t seed = 0x1234'5678'9ABCull, offset = (uint64_t{1} << 32) - 3;
  const int64_t numel = 37 * 13;  // 121 counters of proposal noise
  for (int64_t c = 0; c < 37; ++c) {
    TK_CHECK(thermokern::mala_uniform_counter(offset, numel, c) == offset + 121 + c / 4);
    const auto r = thermokern::philox_randint4x(seed, offset + 121 + c / 4);
    const double u = ((r.x[c % 4] >> 8) + 1) * 0x1.0p-24;
    TK_CHECK_NEAR(thermokern::mala_log_u<double>(seed, offset, numel, c), std::log(u), 1e-15);
    TK_CHECK_NEAR(thermokern::mala_log_u<float>(seed, offset, numel, c), std::log(u),
                  4e-7 * std::fabs(std::log(u)) + 1e-7);
  }
  TK_CHECK(thermokern::mala_counters(37 * 13, 37) == 121 + 10);
}

// Decisions: log u <= log alpha, NaN rejects, +inf accepts.
TK_TEST(mala, decide) {
  TK_CHECK(thermokern::mala_decide(-1.0, -0.5));
  TK_CHECK(thermokern::mala_decide(-0.5, -0.5));
  TK_CHECK(!thermokern::mala_decide(-0.5, -1.0));
  TK_CHECK(!thermokern::mala_decide(-0.5, std::nan("")));
  TK_CHECK(thermokern::mala_decide(0.0, HUGE_VAL));
  TK_CHECK(!thermokern::mala_decide(-1e-9, -HUGE_VAL));
}

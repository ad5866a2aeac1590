// A tiny self-contained unit-test harness for the header-only math (no framework download).
//
//   TK_TEST(group, name) { TK_CHECK(cond); TK_CHECK_EQ_U32(a, b); TK_CHECK_NEAR(a, b, tol); }
//
// The test binary runs every registered case whose "group.name" starts with the optional
// command-line prefix (ctest registers one entry per group), prints each failed check with
// its file and line, and exits non-zero if any check failed or no case matched.
#pragma once

#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace tk_test {

struct Case {
  std::string name;
  void (*fn)();
};

inline std::vector<Case>& registry() {
  static std::vector<Case> cases;
  return cases;
}

struct State {
  long checks = 0;
  long failures = 0;        // in the whole run
  long case_failures = 0;   // in the running case
};

inline State& state() {
  static State s;
  return s;
}

struct Registrar {
  Registrar(const char* group, const char* name, void (*fn)()) {
    registry().push_back(Case{std::string(group) + "." + name, fn});
  }
};

// Records one check; prints the first few failures of a case (random sweeps can fail
// thousands of times for one bug, and the first lines are the useful ones).
inline bool record(bool ok, const char* file, int line, const std::string& what) {
  State& s = state();
  ++s.checks;
  if (ok) return true;
  ++s.failures;
  if (++s.case_failures <= 20) {
    std::fprintf(stderr, "  FAILED %s:%d: %s\n", file, line, what.c_str());
  } else if (s.case_failures == 21) {
    std::fprintf(stderr, "  ... further failures of this case suppressed\n");
  }
  return false;
}

inline std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
inline std::string fmt(const char* f, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

inline int run_all(int argc, char** argv) {
  const char* prefix = argc > 1 ? argv[1] : "";
  if (std::strcmp(prefix, "--list") == 0) {
    for (const Case& c : registry()) std::printf("%s\n", c.name.c_str());
    return 0;
  }
  int ran = 0, failed_cases = 0;
  for (const Case& c : registry()) {
    if (c.name.compare(0, std::strlen(prefix), prefix) != 0) continue;
    ++ran;
    state().case_failures = 0;
    const long before = state().checks;
    c.fn();
    const long n = state().checks - before;
    if (state().case_failures == 0) {
      std::printf("[ OK   ] %s (%ld checks)\n", c.name.c_str(), n);
    } else {
      ++failed_cases;
      std::printf("[ FAIL ] %s (%ld of %ld checks failed)\n", c.name.c_str(),
                  state().case_failures, n);
    }
  }
  if (ran == 0) {
    std::fprintf(stderr, "no test case matches prefix '%s'\n", prefix);
    return 2;
  }
  std::printf("%d case(s), %d failed, %ld checks, %ld failed\n", ran, failed_cases,
              state().checks, state().failures);
  return failed_cases == 0 ? 0 : 1;
}

}  // namespace tk_test

#define TK_TEST_CAT_(a, b) a##b
#define TK_TEST_CAT(a, b) TK_TEST_CAT_(a, b)
#define TK_TEST(group, name)                                                         \
  static void TK_TEST_CAT(tk_test_fn_, TK_TEST_CAT(group, TK_TEST_CAT(_, name)))();  \
  static const ::tk_test::Registrar TK_TEST_CAT(                                     \
      tk_test_reg_, TK_TEST_CAT(group, TK_TEST_CAT(_, name)))(                       \
      #group, #name, &TK_TEST_CAT(tk_test_fn_, TK_TEST_CAT(group, TK_TEST_CAT(_, name)))); \
  static void TK_TEST_CAT(tk_test_fn_, TK_TEST_CAT(group, TK_TEST_CAT(_, name)))()

#define TK_CHECK(cond) ::tk_test::record(static_cast<bool>(cond), __FILE__, __LINE__, #cond)

// cond plus a printf-style explanation shown when it fails.
#define TK_CHECK_MSG(cond, ...) \
  ::tk_test::record(static_cast<bool>(cond), __FILE__, __LINE__, ::tk_test::fmt(__VA_ARGS__))

#define TK_CHECK_EQ_U32(a, b)                                                            \
  do {                                                                                   \
    const uint32_t tk_a_ = (a), tk_b_ = (b);                                             \
    ::tk_test::record(tk_a_ == tk_b_, __FILE__, __LINE__,                                \
                      ::tk_test::fmt("%s == %s: 0x%08x != 0x%08x", #a, #b, tk_a_, tk_b_)); \
  } while (0)

// |a - b| <= tol, with the values printed at full precision on failure.
#define TK_CHECK_NEAR(a, b, tol)                                                          \
  do {                                                                                    \
    const long double tk_a_ = (a), tk_b_ = (b), tk_t_ = (tol);                            \
    ::tk_test::record(std::fabs(tk_a_ - tk_b_) <= tk_t_, __FILE__, __LINE__,              \
                      ::tk_test::fmt("|%s - %s| <= %s: %.17Lg vs %.17Lg (diff %.3Lg, tol %.3Lg)", \
                                     #a, #b, #tol, tk_a_, tk_b_, std::fabs(tk_a_ - tk_b_), \
                                     tk_t_));                                             \
  } while (0)

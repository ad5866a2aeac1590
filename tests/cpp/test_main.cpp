// Entry point of thermokern_header_tests: `thermokern_header_tests [prefix | --list]`.
#include "tk_test.h"

int main(int argc, char** argv) { return tk_test::run_all(argc, argv); }

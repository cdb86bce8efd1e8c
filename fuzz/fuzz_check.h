// FUZZ_CHECK(condition): a property a fuzz target asserts about the code under test. A violation
// prints the condition and aborts, which libFuzzer reports as a crash and saves the input for.
#ifndef DARTSERVE_FUZZ_FUZZ_CHECK_H_
#define DARTSERVE_FUZZ_FUZZ_CHECK_H_

#include <cstdio>
#include <cstdlib>

#define FUZZ_CHECK(condition)                                                                 \
  do {                                                                                        \
    if (!(condition)) {                                                                       \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, __LINE__, #condition); \
      std::abort();                                                                           \
    }                                                                                         \
  } while (0)

#endif  // DARTSERVE_FUZZ_FUZZ_CHECK_H_

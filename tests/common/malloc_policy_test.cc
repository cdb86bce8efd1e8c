#include "common/malloc_policy.h"

#include <malloc.h>
#include <sys/resource.h>

#include <cstdlib>
#include <cstring>
#include <thread>

#include "gtest/gtest.h"

namespace dartserve {
namespace {

long MinorFaultsOfThisThread() {
  rusage usage{};
  getrusage(RUSAGE_THREAD, &usage);
  return usage.ru_minflt;
}

// A buffer larger than any glibc default would map on its own (over the 32 MiB mmap threshold
// ceiling and the 64 MiB limit of a thread's arena), allocated, written, freed and allocated again
// on a worker thread, as an engine step does with its activations.
TEST(MallocPolicyTest, LargeBuffersOfAWorkerThreadAreReusedWithoutPageFaults) {
  ASSERT_TRUE(TuneMallocForTensors().ok());
  constexpr size_t kBytes = size_t{100} << 20;  // 25,600 pages
  size_t mapped_while_held = 0;
  long faults_first = 0, faults_again = 0;
  std::thread worker([&] {
    for (long* faults : {&faults_first, &faults_again}) {
      const long before = MinorFaultsOfThisThread();
      char* buffer = static_cast<char*>(std::malloc(kBytes));
      ASSERT_NE(buffer, nullptr);
      std::memset(buffer, 1, kBytes);
      asm volatile("" : : "r"(buffer) : "memory");  // the writes happen: the buffer is "used"
      *faults = MinorFaultsOfThisThread() - before;
      mapped_while_held = std::max(mapped_while_held, mallinfo2().hblkhd);
      std::free(buffer);
    }
  });
  worker.join();
  EXPECT_EQ(mapped_while_held, 0u) << "the buffer got an mmap of its own";
  // The heap grew: its pages were touched for the first time (25,600 faults with 4 KiB pages, 50
  // with transparent huge pages). The second time the same pages, still resident, served it.
  EXPECT_GE(faults_first, 25);
  EXPECT_LT(faults_again * 10, faults_first) << faults_again << " faults the second time";
}

TEST(MallocPolicyTest, TrimmerStartsAndStops) {
  // Destroyed long before its first period: the destructor must not wait for a period.
  MallocTrimmer trimmer(absl::Hours(1));
}

}  // namespace
}  // namespace dartserve

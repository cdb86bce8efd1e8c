#include "common/malloc_policy.h"

#include <malloc.h>

namespace dartserve {

absl::Status TuneMallocForTensors() {
  constexpr int kOneGiB = 1 << 30;
  // mallopt returns 1 on success, 0 when it refuses a value.
  if (mallopt(M_MMAP_THRESHOLD, kOneGiB) != 1 || mallopt(M_TRIM_THRESHOLD, kOneGiB) != 1 ||
      mallopt(M_ARENA_MAX, 1) != 1) {
    return absl::InternalError("malloc refused the tensor settings (mallopt)");
  }
  return absl::OkStatus();
}

MallocTrimmer::MallocTrimmer(absl::Duration period)
    : thread_([this, period] {
        while (!stop_.WaitForNotificationWithTimeout(period)) malloc_trim(0);
      }) {}

MallocTrimmer::~MallocTrimmer() {
  stop_.Notify();
  thread_.join();
}

}  // namespace dartserve

// How a process that allocates large tensor buffers every step configures glibc's malloc, and the
// periodic trim that keeps its resident memory levelling off. Measurements and the alternatives
// tried: docs/performance.md ("Allocator") and docs/reliability.md ("Soak").
#ifndef DARTSERVE_COMMON_MALLOC_POLICY_H_
#define DARTSERVE_COMMON_MALLOC_POLICY_H_

#include <thread>

#include "absl/status/status.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

namespace dartserve {

// Serves every buffer, however large, from one reused heap instead of a fresh mmap per buffer.
// Call first thing in main, before any thread exists (the arena cap applies to arenas created
// after it). Not thread-safe.
//
// Why: glibc maps each allocation above its mmap threshold (which it raises as such blocks are
// freed, but never above 32 MiB) with its own mmap and unmaps it on free, and a thread's own arena
// can hold no block above 64 MiB at all, so a step whose activations or stacked KV exceed those
// sizes page-faults its buffers in anew on every step: at batch 32 and up, a fifth of the time
// went to page faults and throughput fell by half (the batch "cliff"). So: a fixed 1 GiB mmap
// threshold, a 1 GiB trim threshold (the heap top is not handed back on every free), and one arena
// (only the main arena grows without a block-size limit). Memory freed inside the heap is returned
// by MallocTrimmer instead. Returns INTERNAL if glibc refuses a setting.
absl::Status TuneMallocForTensors();

// Hands the free memory of glibc's malloc arenas back to the system every `period` until
// destroyed (malloc_trim(0) from a thread of its own). Thread-compatible: one owner creates and
// destroys it.
//
// Why: freed tensor buffers stay in the heap as free memory in fragments, resident; in a soak the
// bytes in use stayed flat while RSS kept growing. malloc_trim(0) releases the free pages inside
// every arena (madvise), not only at their tops. It locks the arena while it runs, stalling
// threads that allocate meanwhile: every 60 s cost no measurable throughput, every 10 s 23 %.
class MallocTrimmer {
 public:
  explicit MallocTrimmer(absl::Duration period);
  ~MallocTrimmer();
  MallocTrimmer(const MallocTrimmer&) = delete;
  MallocTrimmer& operator=(const MallocTrimmer&) = delete;

 private:
  absl::Notification stop_;
  std::thread thread_;  // last: starts once stop_ exists
};

}  // namespace dartserve

#endif  // DARTSERVE_COMMON_MALLOC_POLICY_H_

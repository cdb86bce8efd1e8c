// Dispatcher: spreads one model's requests over its replicas, each a Scheduler driving its own
// Engine (one model replica: on a GPU machine one per device; on a CPU, a share of the cores) with
// its own worker thread, torch threads and KV budget. See docs/design.md (threads).
//
// Every batch holds one replica's requests, so one model and one image geometry. Mixing image
// sizes inside one batch would need per-row token counts (ragged blocks), varlen attention over
// caches of different widths, RoPE tables per geometry and a token cap that counts real tokens;
// until a workload needs it, sizes are separate models with separate dispatchers.
//
// Request ids are unique per replica only: the caller keeps ids unique across the model (the
// service does, per call).
// Thread-safety: AddReplica before serving; everything else is thread-safe afterwards.
#ifndef DARTSERVE_SCHEDULER_DISPATCHER_H_
#define DARTSERVE_SCHEDULER_DISPATCHER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "scheduler/scheduler.h"

namespace dartserve::scheduler {

class Dispatcher {
 public:
  // Adds `scheduler` (not owned; must outlive the dispatcher) as a replica.
  void AddReplica(Scheduler* scheduler);

  // Submits to the least-loaded replica (queued + active; ties go to the earlier replica); when it
  // is full, tries the others in order of load. As Scheduler::Submit otherwise: ownership iff OK;
  // FAILED_PRECONDITION when there are no replicas.
  absl::Status Submit(std::unique_ptr<Request>& request);
  // Cancels `id` on whichever replica holds it. False if none does.
  bool Cancel(const std::string& id);
  // Stops admission on every replica (Scheduler::BeginDrain).
  void BeginDrain(absl::Duration grace);
  // Blocks until every replica is idle (Scheduler::WaitUntilIdle).
  void WaitUntilIdle();

  // The replicas' stats, summed (counts, bytes, iterations; draining if any is); the `last_batch`
  // fields are the largest over replicas.
  SchedulerStats stats() const;
  const std::vector<Scheduler*>& replicas() const { return replicas_; }

 private:
  std::vector<Scheduler*> replicas_;
};

}  // namespace dartserve::scheduler

#endif  // DARTSERVE_SCHEDULER_DISPATCHER_H_

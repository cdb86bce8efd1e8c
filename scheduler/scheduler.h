// Step-level continuous batching over one Engine (DESIGN.md §4).
//
// Each iteration runs one denoising step for every active request, in one batched Engine::Step.
// Requests join (Engine::Start: KV memory allocated, first step in the same iteration) and leave
// (finished, cancelled, expired, failed) at every iteration boundary, so a request never waits
// for a batch to finish and a batch never waits for a slow request.
//
// Admission:
//  - a bounded queue with priority classes (0 most urgent), FIFO within a class; a request's
//    effective class improves by one per `aging` waited, so low priorities cannot starve;
//  - an exact KV memory budget: a request's peak KV (Engine::KvBytes) is reserved when it is
//    admitted and released when it leaves; nothing is admitted beyond the budget, so load can
//    never end in out-of-memory. The queue head blocks admission until it fits (no overtaking,
//    so large requests are not starved by small ones);
//  - caps on requests and tokens per iteration.
//
// Contracts:
//  - Submit never blocks; it takes ownership of `*request` iff it returns OK.
//  - Every accepted request's sink gets OnFinished exactly once: the image, or an error
//    (CANCELLED, DEADLINE_EXCEEDED, INTERNAL when a step fails, UNAVAILABLE when drained).
//  - Cancellation and deadlines take effect at the next iteration boundary and free the request's
//    KV memory at once.
//  - All Engine calls and all sink calls happen on one thread: the worker (Start()), or the caller
//    of RunIteration() in tests. Sinks are called without the scheduler's lock held.
// Thread-safety: Submit, Cancel, BeginDrain and the stats accessors are thread-safe.
#ifndef DARTSERVE_SCHEDULER_SCHEDULER_H_
#define DARTSERVE_SCHEDULER_SCHEDULER_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "model/engine.h"
#include "scheduler/clock.h"
#include "scheduler/request.h"

namespace dartserve::scheduler {

// What one iteration did; reported to SchedulerOptions::on_iteration (metrics).
struct IterationInfo {
  absl::Duration duration;  // admission + step + delivery, by the scheduler's clock
  int batch_requests = 0;
  int64_t batch_tokens = 0;
  bool step_failed = false;
};

struct SchedulerOptions {
  int max_queued = 256;    // waiting requests (all classes); beyond: RESOURCE_EXHAUSTED
  int num_priorities = 3;  // classes 0 .. num_priorities - 1
  absl::Duration aging = absl::Seconds(10);    // waited per one-class promotion
  int max_batch_requests = 64;                 // active requests stepped per iteration
  int64_t max_batch_tokens = 1 << 16;          // tokens put through the model per iteration
  int64_t kv_budget_bytes = int64_t{4} << 30;  // total KV memory of active requests
  // Called on the worker thread after every iteration that stepped a batch. Must be cheap and must
  // not call back into the scheduler.
  std::function<void(const IterationInfo&)> on_iteration;
};

struct SchedulerStats {
  int queued = 0;
  int active = 0;
  int64_t kv_bytes_used = 0;
  int64_t kv_budget_bytes = 0;
  int64_t iterations = 0;
  int last_batch_requests = 0;
  int64_t last_batch_tokens = 0;
  int64_t total_batch_requests = 0;  // summed over iterations: / iterations = mean batch size
  int64_t total_batch_tokens = 0;
  bool draining = false;
};

class Scheduler {
 public:
  // `engine` and `clock` must outlive the scheduler.
  Scheduler(const SchedulerOptions& options, model::Engine* engine, Clock* clock = Clock::Real());
  // Stops the worker; requests still queued or active finish with UNAVAILABLE.
  ~Scheduler();

  // Queues `*request` (moved from iff OK). INVALID_ARGUMENT for bad parameters or priority,
  // ALREADY_EXISTS for a live id, RESOURCE_EXHAUSTED when the queue is full or the request alone
  // exceeds the KV budget, UNAVAILABLE while draining.
  absl::Status Submit(std::unique_ptr<Request>& request);
  // Marks a live request cancelled (effective at the next boundary). False if the id is unknown.
  bool Cancel(const std::string& id);

  // Starts the worker thread that runs iterations while there is work.
  void Start();
  // Stops admitting (Submit returns UNAVAILABLE). Work already accepted continues until `grace`
  // has passed, after which whatever remains finishes with UNAVAILABLE.
  void BeginDrain(absl::Duration grace);
  // Blocks until nothing is queued or active (use with Start()).
  void WaitUntilIdle();

  // One iteration on the calling thread (tests; do not mix with Start()). Returns false when there
  // was nothing to do.
  bool RunIteration();

  SchedulerStats stats() const;
  // Load for the dispatcher: queued + active requests.
  int load() const;

 private:
  struct Entry;
  using EntryPtr = std::unique_ptr<Entry>;

  void WorkerLoop();
  // Moves finished/cancelled/expired/drained entries out of the queue and the active set.
  void CollectLeavers(absl::Time now, std::vector<std::pair<EntryPtr, absl::Status>>* out);
  // Picks queued entries that fit the budgets, in priority order.
  std::vector<EntryPtr> Admit(absl::Time now);
  void Finish(Entry& entry, absl::StatusOr<Result> result);

  const SchedulerOptions options_;
  model::Engine* const engine_;
  Clock* const clock_;

  mutable std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable idle_cv_;
  std::vector<std::deque<EntryPtr>> queues_;  // per priority class, FIFO
  int queued_ = 0;
  std::vector<EntryPtr> active_;
  absl::flat_hash_set<std::string> live_ids_;
  absl::flat_hash_set<std::string> cancelled_;
  int64_t kv_used_ = 0;
  bool draining_ = false;
  absl::Time drain_deadline_ = absl::InfiniteFuture();
  bool stop_ = false;
  SchedulerStats stats_;
  std::thread worker_;
};

}  // namespace dartserve::scheduler

#endif  // DARTSERVE_SCHEDULER_SCHEDULER_H_

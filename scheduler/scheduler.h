// Step-level continuous batching over one Engine (docs/design.md).
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
//  - An Engine call that throws (anything, std::exception or not) is an error, INTERNAL: a Start
//    fails its request alone, a Step every request of its batch, a Render the images it was for.
//    The worker goes on; the other requests are not affected.
//  - Cancellation and deadlines take effect at the next iteration boundary and free the request's
//    KV memory at once. Cancel frees the request's id at once: a new request may reuse it while
//    the cancelled one is still on its way out.
//  - All Engine calls and all sink calls happen on one thread: the worker (Start()), or the caller
//    of RunIteration() in tests. Sinks are called without the scheduler's lock held.
// Thread-safety: Submit, Cancel, BeginDrain, WaitUntilIdle and the stats accessors are
// thread-safe. One mutex guards the queue, the active set and the bookkeeping (annotated below and
// checked by clang's -Wthread-safety in scripts/test.sh); Engine calls, sink calls and the
// on_iteration callback run without it.
#ifndef DARTSERVE_SCHEDULER_SCHEDULER_H_
#define DARTSERVE_SCHEDULER_SCHEDULER_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "model/engine.h"
#include "scheduler/clock.h"
#include "scheduler/mutex.h"
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
  ~Scheduler() ABSL_LOCKS_EXCLUDED(mu_);

  // Queues `*request` (moved from iff OK). INVALID_ARGUMENT for bad parameters or priority,
  // ALREADY_EXISTS for a live id, RESOURCE_EXHAUSTED when the queue is full or the request alone
  // exceeds the KV budget, UNAVAILABLE while draining.
  absl::Status Submit(std::unique_ptr<Request>& request) ABSL_LOCKS_EXCLUDED(mu_);
  // Marks the live request `id` cancelled and frees the id for a new request at once; the
  // cancelled request leaves at the next boundary (its sink hears CANCELLED then, and its KV
  // memory is freed then). False if no live request has the id.
  bool Cancel(const std::string& id) ABSL_LOCKS_EXCLUDED(mu_);

  // Starts the worker thread that runs iterations while there is work.
  void Start();
  // Stops admitting (Submit returns UNAVAILABLE). Work already accepted continues until `grace`
  // has passed, after which whatever remains finishes with UNAVAILABLE.
  void BeginDrain(absl::Duration grace) ABSL_LOCKS_EXCLUDED(mu_);
  // Blocks until nothing is queued or active and no iteration is under way, so every accepted
  // request's sink has had OnFinished (use with Start()).
  void WaitUntilIdle() ABSL_LOCKS_EXCLUDED(mu_);

  // One iteration on the calling thread (tests; do not mix with Start()). Returns false when there
  // was nothing to do.
  bool RunIteration() ABSL_LOCKS_EXCLUDED(mu_);

  SchedulerStats stats() const ABSL_LOCKS_EXCLUDED(mu_);
  // Load for the dispatcher: queued + active requests.
  int load() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Entry;
  using EntryPtr = std::unique_ptr<Entry>;
  // A request that leaves the scheduler, and what its sink will be told.
  struct Departure {
    EntryPtr entry;
    absl::StatusOr<Result> result;
  };

  void WorkerLoop() ABSL_LOCKS_EXCLUDED(mu_);

  // An iteration runs three phases, and only the worker (or RunIteration's caller) runs them, so
  // the Entry pointers of the batch stay valid between them without the lock.
  //
  // Admit: at the boundary, the requests that must leave (cancelled, expired, drained) leave, and
  // the queued ones that fit the budgets are started (KV allocated; they step in this iteration).
  // Returns the batch, every active request; `*changed` is set when any request left or joined.
  std::vector<Entry*> AdmitPhase(absl::Time now, bool* changed) ABSL_LOCKS_EXCLUDED(mu_);
  // Step: one Engine::Step over `batch`, then progress to the requests that go on. Returns the
  // step's status.
  absl::Status StepPhase(const std::vector<Entry*>& batch) ABSL_LOCKS_EXCLUDED(mu_);
  // Retire: the requests of `batch` that finished (all of them when the step failed) leave with
  // their image (INTERNAL when the step failed). Frees their entries.
  void RetirePhase(const std::vector<Entry*>& batch, const absl::Status& step_status)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Records the iteration (`stepped` is null when there was no batch) and wakes WaitUntilIdle.
  void EndIteration(const IterationInfo* stepped) ABSL_LOCKS_EXCLUDED(mu_);

  // Removes the cancelled, expired and drained requests from the queue and the active set.
  std::vector<Departure> TakeLeaversLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Why `entry` must leave now; OK when it stays.
  absl::Status LeaveReasonLocked(const Entry& entry, absl::Time now) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Pops the queued requests that fit the budgets, in priority order, and reserves their KV.
  std::vector<EntryPtr> PopAdmissibleLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The class whose head is admitted next: lowest effective class, then oldest. -1 when empty.
  int NextClassLocked(absl::Time now) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Engine::Start for each admitted request; those that fail (or throw) leave at once. Returns
  // the others.
  std::vector<EntryPtr> StartAll(std::vector<EntryPtr> admitted, absl::Time now)
      ABSL_LOCKS_EXCLUDED(mu_);
  // The results of the requests that ran all their steps: each gets its last OnProgress, then
  // all their images are rendered in one Engine::Render call.
  void CompleteAll(std::vector<std::pair<Entry*, absl::StatusOr<Result>>>& finished)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Engine::Render.
  absl::StatusOr<std::vector<Pixels>> RenderAll(std::span<const model::RenderJob> jobs,
                                                model::RenderKind kind) ABSL_LOCKS_EXCLUDED(mu_);

  // The one release of a request's bookkeeping, for every path by which a request leaves (after
  // its removal from the queue or the active set): its KV reservation and its live id (free for
  // reuse), unless Cancel already released the id (and a new request may hold it now).
  void ReleaseLocked(Entry& entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // After ReleaseLocked, without the lock: frees each engine state (its KV memory) before the
  // sink hears of it, then tells the sink, once.
  void Deliver(std::vector<Departure>& departures) ABSL_LOCKS_EXCLUDED(mu_);

  bool HasWorkLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return queued_ > 0 || !active_.empty();
  }

  const SchedulerOptions options_;
  model::Engine* const engine_;
  Clock* const clock_;

  mutable Mutex mu_;
  CondVar work_cv_;  // signalled on Submit, Cancel, BeginDrain and stop
  CondVar idle_cv_;  // signalled when an iteration ends idle
  std::vector<std::deque<EntryPtr>> queues_ ABSL_GUARDED_BY(mu_);  // per class, FIFO
  int queued_ ABSL_GUARDED_BY(mu_) = 0;
  // Removed from only by the worker (and the destructor, after it), so the worker may use the
  // entries' pointers without the lock; other threads only count it.
  std::vector<EntryPtr> active_ ABSL_GUARDED_BY(mu_);
  // The live (queued, active or starting) request of each id; Cancel removes its request's id.
  absl::flat_hash_map<std::string, Entry*> live_ids_ ABSL_GUARDED_BY(mu_);
  int64_t kv_used_ ABSL_GUARDED_BY(mu_) = 0;  // reserved by admitted requests
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time drain_deadline_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  // Set from admission to EndIteration: admitted requests being started are in neither the queue
  // nor the active set, and leavers are told after their removal, so "idle" needs this too.
  bool in_iteration_ ABSL_GUARDED_BY(mu_) = false;
  SchedulerStats stats_ ABSL_GUARDED_BY(mu_);
  std::thread worker_;  // Start() and the destructor only
};

}  // namespace dartserve::scheduler

#endif  // DARTSERVE_SCHEDULER_SCHEDULER_H_

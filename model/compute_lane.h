// A compute lane: one thread that runs the LibTorch work of every engine placed on it, one call at
// a time, and engines that do their work there (torch-free header, for the server's main and the
// benches).
//
// Why a lane and not each scheduler's own worker: libgomp keeps one OpenMP thread pool per thread
// that starts a parallel region, and counts the threads of all pools. Once they outnumber the
// CPUs, every idle OpenMP thread spins only ~100 times before it sleeps in futex, so each of the
// thousands of small operators in a denoising step pays a sleep and a wake-up. Five models each on
// its own worker (plus the main thread that loaded them) meant seven pool threads on two cores,
// and a server that ran slower with two torch threads than the Python peer did on its one thread.
// Engines that share a lane share its one pool (docs/design.md, "Threads"; docs/performance.md,
// "One OpenMP pool").
#ifndef DARTSERVE_MODEL_COMPUTE_LANE_H_
#define DARTSERVE_MODEL_COMPUTE_LANE_H_

#include <atomic>
#include <condition_variable>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/functional/function_ref.h"
#include "model/engine.h"

namespace dartserve::model {

// Thread-safe. The destructor waits for the call in progress and every queued one; destroy a lane
// after everything that may call Run (engines hold it by shared_ptr, so the last engine does).
class ComputeLane {
 public:
  // Starts the lane's thread, named `name` (at most 15 characters show in ps, perf and gdb).
  explicit ComputeLane(const std::string& name = "dartserve-lane");
  ~ComputeLane();
  ComputeLane(const ComputeLane&) = delete;
  ComputeLane& operator=(const ComputeLane&) = delete;

  // Runs `fn` on the lane's thread and returns once it has returned, rethrowing what it threw.
  // Calls from several threads run one at a time, in arrival order; a call from the lane's own
  // thread (fn calling Run) runs inline.
  void Run(absl::FunctionRef<void()> fn);

  // Seconds the lane's thread has spent running calls since it started (a call made from the
  // lane's own thread counts as part of its caller). Its increase over an interval, divided by the
  // interval, is the lane's utilisation: the server exports it as
  // dartserve_compute_lane_busy_seconds_total, which shows the models sharing a lane queueing
  // behind each other.
  double busy_seconds() const;

 private:
  struct Job;
  void Loop();

  std::mutex mu_;
  std::condition_variable cv_;  // a job was queued, one finished, or the lane is stopping
  std::deque<Job*> queue_;      // guarded by mu_
  bool stopping_ = false;       // guarded by mu_
  std::atomic<int64_t> busy_ns_{0};
  std::thread thread_;
};

// Wraps `engine` so that its torch calls (Start, Step, Render) run on `lane`; the const queries
// run on the caller's thread, as the Engine contract allows. The caller is still one thread per
// engine (its scheduler's worker), which now waits while the lane works.
std::unique_ptr<Engine> OnLane(std::unique_ptr<Engine> engine, std::shared_ptr<ComputeLane> lane);

}  // namespace dartserve::model

#endif  // DARTSERVE_MODEL_COMPUTE_LANE_H_

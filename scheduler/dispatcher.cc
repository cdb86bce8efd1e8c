#include "scheduler/dispatcher.h"

#include <algorithm>
#include <utility>

namespace dartserve::scheduler {

void Dispatcher::AddReplica(Scheduler* scheduler) { replicas_.push_back(scheduler); }

absl::Status Dispatcher::Submit(std::unique_ptr<Request>& request) {
  if (replicas_.empty()) return absl::FailedPreconditionError("dispatcher: no replicas");
  std::vector<std::pair<int, Scheduler*>> by_load;
  by_load.reserve(replicas_.size());
  for (Scheduler* s : replicas_) by_load.emplace_back(s->load(), s);
  std::stable_sort(by_load.begin(), by_load.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  absl::Status status;
  for (const auto& [load, scheduler] : by_load) {
    status = scheduler->Submit(request);
    if (status.code() != absl::StatusCode::kResourceExhausted) return status;
  }
  return status;
}

bool Dispatcher::Cancel(const std::string& id) {
  for (Scheduler* s : replicas_) {
    if (s->Cancel(id)) return true;
  }
  return false;
}

void Dispatcher::BeginDrain(absl::Duration grace) {
  for (Scheduler* s : replicas_) s->BeginDrain(grace);
}

void Dispatcher::WaitUntilIdle() {
  for (Scheduler* s : replicas_) s->WaitUntilIdle();
}

SchedulerStats Dispatcher::stats() const {
  SchedulerStats sum;
  for (const Scheduler* s : replicas_) {
    const SchedulerStats r = s->stats();
    sum.queued += r.queued;
    sum.active += r.active;
    sum.kv_bytes_used += r.kv_bytes_used;
    sum.kv_budget_bytes += r.kv_budget_bytes;
    sum.iterations += r.iterations;
    sum.last_batch_requests = std::max(sum.last_batch_requests, r.last_batch_requests);
    sum.last_batch_tokens = std::max(sum.last_batch_tokens, r.last_batch_tokens);
    sum.total_batch_requests += r.total_batch_requests;
    sum.total_batch_tokens += r.total_batch_tokens;
    sum.draining = sum.draining || r.draining;
  }
  return sum;
}

}  // namespace dartserve::scheduler

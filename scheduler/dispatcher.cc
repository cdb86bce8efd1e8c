#include "scheduler/dispatcher.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace dartserve::scheduler {

void Dispatcher::AddReplica(const std::string& model, Scheduler* scheduler) {
  replicas_[model].push_back(scheduler);
}

absl::Status Dispatcher::Submit(const std::string& model, std::unique_ptr<Request>& request) {
  auto it = replicas_.find(model);
  if (it == replicas_.end()) {
    return absl::NotFoundError(absl::StrCat("model: no model named \"", model, "\""));
  }
  std::vector<std::pair<int, Scheduler*>> by_load;
  for (Scheduler* s : it->second) by_load.emplace_back(s->load(), s);
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
  for (auto& [model, schedulers] : replicas_) {
    for (Scheduler* s : schedulers) {
      if (s->Cancel(id)) return true;
    }
  }
  return false;
}

void Dispatcher::BeginDrain(absl::Duration grace) {
  for (auto& [model, schedulers] : replicas_) {
    for (Scheduler* s : schedulers) s->BeginDrain(grace);
  }
}

std::vector<std::string> Dispatcher::models() const {
  std::vector<std::string> out;
  for (const auto& [model, schedulers] : replicas_) out.push_back(model);
  return out;
}

const std::vector<Scheduler*>& Dispatcher::replicas(const std::string& model) const {
  static const std::vector<Scheduler*> kNone;
  auto it = replicas_.find(model);
  return it == replicas_.end() ? kNone : it->second;
}

}  // namespace dartserve::scheduler

#include "scheduler/scheduler.h"

#include <algorithm>
#include <cmath>
#include <exception>

#include "absl/strings/str_cat.h"

namespace dartserve::scheduler {

struct Scheduler::Entry {
  Request request;
  absl::Time submitted;
  absl::Time admitted;
  int64_t kv_bytes = 0;
  int64_t tokens = 0;
  std::unique_ptr<model::EngineRequest> state;  // set while active
  bool finished = false;
};

Scheduler::Scheduler(const SchedulerOptions& options, model::Engine* engine, Clock* clock)
    : options_(options),
      engine_(engine),
      clock_(clock),
      queues_(std::max(1, options.num_priorities)) {
  stats_.kv_budget_bytes = options.kv_budget_bytes;
}

Scheduler::~Scheduler() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  if (worker_.joinable()) worker_.join();
  // The worker is gone: this thread may now call sinks and free engine state.
  std::vector<EntryPtr> rest;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& q : queues_) {
      for (auto& e : q) rest.push_back(std::move(e));
      q.clear();
    }
    for (auto& e : active_) rest.push_back(std::move(e));
    active_.clear();
  }
  for (auto& e : rest) {
    e->state.reset();
    Finish(*e, absl::UnavailableError("server is shutting down"));
  }
}

absl::Status Scheduler::Submit(std::unique_ptr<Request>& request) {
  if (request == nullptr || request->sink == nullptr) {
    return absl::InvalidArgumentError("request and its sink must be set");
  }
  if (request->id.empty()) return absl::InvalidArgumentError("request_id: must not be empty");
  if (request->priority < 0 || request->priority >= options_.num_priorities) {
    return absl::InvalidArgumentError(
        absl::StrCat("priority: must be in [0, ", options_.num_priorities, ")"));
  }
  if (request->preview_every < 0 || request->preview_max_side < 0) {
    return absl::InvalidArgumentError("preview: every and max_side must be >= 0");
  }
  if (absl::Status s = engine_->Validate(request->params); !s.ok()) return s;
  const int64_t kv = engine_->KvBytes(request->params);
  if (kv > options_.kv_budget_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "request needs ", kv, " bytes of KV memory; the budget is ", options_.kv_budget_bytes));
  }
  auto entry = std::make_unique<Entry>();
  entry->kv_bytes = kv;
  entry->tokens = engine_->TokensPerStep(request->params);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (draining_ || stop_) return absl::UnavailableError("server is draining");
    if (queued_ >= options_.max_queued) {
      return absl::ResourceExhaustedError(
          absl::StrCat("queue is full (", options_.max_queued, " waiting requests)"));
    }
    if (live_ids_.contains(request->id)) {
      return absl::AlreadyExistsError(absl::StrCat("request_id: ", request->id, " is in flight"));
    }
    entry->submitted = clock_->Now();
    live_ids_.insert(request->id);
    const int priority = request->priority;
    entry->request = std::move(*request);
    request.reset();
    queues_[priority].push_back(std::move(entry));
    ++queued_;
  }
  work_cv_.notify_all();
  return absl::OkStatus();
}

bool Scheduler::Cancel(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!live_ids_.contains(id)) return false;
  cancelled_.insert(id);
  work_cv_.notify_all();
  return true;
}

void Scheduler::Start() {
  worker_ = std::thread([this] { WorkerLoop(); });
}

void Scheduler::BeginDrain(absl::Duration grace) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    draining_ = true;
    drain_deadline_ = clock_->Now() + grace;
  }
  work_cv_.notify_all();
}

void Scheduler::WaitUntilIdle() {
  std::unique_lock<std::mutex> lock(mu_);
  idle_cv_.wait(lock, [this] { return queued_ == 0 && active_.empty(); });
}

void Scheduler::WorkerLoop() {
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [this] { return stop_ || queued_ > 0 || !active_.empty(); });
      if (stop_) return;
    }
    RunIteration();
  }
}

void Scheduler::CollectLeavers(absl::Time now,
                               std::vector<std::pair<EntryPtr, absl::Status>>* out) {
  const bool drained = draining_ && now >= drain_deadline_;
  auto reason = [&](const Entry& e) -> absl::Status {
    if (cancelled_.contains(e.request.id)) return absl::CancelledError("request was cancelled");
    if (now >= e.request.deadline) return absl::DeadlineExceededError("deadline exceeded");
    if (drained) return absl::UnavailableError("server is draining; the grace period ended");
    return absl::OkStatus();
  };
  for (auto& q : queues_) {
    for (auto it = q.begin(); it != q.end();) {
      absl::Status why = reason(**it);
      if (why.ok()) {
        ++it;
        continue;
      }
      out->emplace_back(std::move(*it), why);
      it = q.erase(it);
      --queued_;
    }
  }
  for (auto it = active_.begin(); it != active_.end();) {
    absl::Status why = reason(**it);
    if (why.ok()) {
      ++it;
      continue;
    }
    kv_used_ -= (*it)->kv_bytes;
    out->emplace_back(std::move(*it), why);
    it = active_.erase(it);
  }
  for (const auto& [entry, why] : *out) {
    live_ids_.erase(entry->request.id);
    cancelled_.erase(entry->request.id);
  }
}

std::vector<Scheduler::EntryPtr> Scheduler::Admit(absl::Time now) {
  std::vector<EntryPtr> admitted;
  int count = static_cast<int>(active_.size());
  int64_t tokens = 0;
  for (const auto& e : active_) tokens += e->tokens;
  while (count < options_.max_batch_requests) {
    // The best head: lowest effective class (class minus one per `aging` waited), then oldest.
    int best = -1;
    double best_class = 0;
    for (int c = 0; c < static_cast<int>(queues_.size()); ++c) {
      if (queues_[c].empty()) continue;
      const Entry& head = *queues_[c].front();
      const double waited = absl::FDivDuration(now - head.submitted, options_.aging);
      const double effective = c - std::floor(std::max(0.0, waited));
      if (best < 0 || effective < best_class ||
          (effective == best_class && head.submitted < queues_[best].front()->submitted)) {
        best = c;
        best_class = effective;
      }
    }
    if (best < 0) break;
    Entry& head = *queues_[best].front();
    if (kv_used_ + head.kv_bytes > options_.kv_budget_bytes) break;  // waits for memory
    if (count > 0 && tokens + head.tokens > options_.max_batch_tokens) break;
    kv_used_ += head.kv_bytes;
    tokens += head.tokens;
    ++count;
    admitted.push_back(std::move(queues_[best].front()));
    queues_[best].pop_front();
    --queued_;
  }
  return admitted;
}

void Scheduler::Finish(Entry& entry, absl::StatusOr<Result> result) {
  if (entry.finished) return;
  entry.finished = true;
  entry.request.sink->OnFinished(std::move(result));
}

bool Scheduler::RunIteration() {
  const absl::Time now = clock_->Now();
  std::vector<std::pair<EntryPtr, absl::Status>> leavers;
  std::vector<EntryPtr> admitted;
  {
    std::lock_guard<std::mutex> lock(mu_);
    CollectLeavers(now, &leavers);
    admitted = Admit(now);
  }
  for (auto& [entry, why] : leavers) {
    entry->state.reset();  // frees the KV memory before the sink hears of it
    Finish(*entry, why);
  }

  // Start the admitted requests: their KV memory is allocated now, and their first step runs in
  // this same iteration.
  std::vector<EntryPtr> started;
  for (EntryPtr& e : admitted) {
    absl::StatusOr<std::unique_ptr<model::EngineRequest>> state = engine_->Start(e->request.params);
    if (!state.ok()) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        kv_used_ -= e->kv_bytes;
        live_ids_.erase(e->request.id);
        cancelled_.erase(e->request.id);
      }
      Finish(*e, state.status());
      continue;
    }
    e->state = *std::move(state);
    e->admitted = now;
    e->request.sink->OnStarted(now - e->submitted);
    started.push_back(std::move(e));
  }

  std::vector<Entry*> batch;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (EntryPtr& e : started) active_.push_back(std::move(e));
    for (const EntryPtr& e : active_) batch.push_back(e.get());
  }
  if (batch.empty()) {
    std::lock_guard<std::mutex> lock(mu_);
    if (queued_ == 0) idle_cv_.notify_all();
    return !leavers.empty() || !admitted.empty();
  }

  std::vector<model::EngineRequest*> states;
  int64_t tokens = 0;
  for (Entry* e : batch) {
    states.push_back(e->state.get());
    tokens += e->tokens;
  }
  absl::Status step_status;
  try {
    step_status = engine_->Step(states);
  } catch (const std::exception& e) {
    step_status = absl::InternalError(absl::StrCat("denoising step threw: ", e.what()));
  }

  // Deliver progress; collect the requests that leave (finished or failed).
  std::vector<Entry*> leaving;
  for (Entry* e : batch) {
    if (!step_status.ok()) {
      leaving.push_back(e);
      continue;
    }
    const int step = e->state->steps_done(), total = e->state->total_steps();
    if (e->state->finished()) {
      leaving.push_back(e);
      continue;
    }
    const Request& r = e->request;
    if (r.preview_every > 0 && step % r.preview_every == 0) {
      absl::StatusOr<model::Pixels> preview = engine_->Render(*e->state, r.preview_max_side);
      r.sink->OnProgress(step, total, preview.ok() ? &*preview : nullptr);
    } else {
      r.sink->OnProgress(step, total, nullptr);
    }
  }
  std::vector<std::pair<EntryPtr, absl::StatusOr<Result>>> done;
  for (Entry* e : leaving) {
    absl::StatusOr<Result> result =
        absl::InternalError(absl::StrCat("denoising step failed: ", step_status.message()));
    if (step_status.ok()) {
      const int total = e->state->total_steps();
      e->request.sink->OnProgress(total, total, nullptr);
      absl::StatusOr<model::Pixels> image = engine_->Render(*e->state, 0);
      if (image.ok()) {
        result = Result{.image = *std::move(image),
                        .seed = e->request.params.seed,
                        .steps = total,
                        .queue_time = e->admitted - e->submitted,
                        .compute_time = clock_->Now() - e->admitted};
      } else {
        result = image.status();
      }
    }
    done.emplace_back(nullptr, std::move(result));
    std::lock_guard<std::mutex> lock(mu_);
    auto it = std::find_if(active_.begin(), active_.end(),
                           [e](const EntryPtr& p) { return p.get() == e; });
    done.back().first = std::move(*it);
    active_.erase(it);
    kv_used_ -= e->kv_bytes;
    live_ids_.erase(e->request.id);
    cancelled_.erase(e->request.id);
  }
  for (auto& [entry, result] : done) {
    entry->state.reset();
    Finish(*entry, std::move(result));
  }
  if (options_.on_iteration) {
    options_.on_iteration({.duration = clock_->Now() - now,
                           .batch_requests = static_cast<int>(batch.size()),
                           .batch_tokens = tokens,
                           .step_failed = !step_status.ok()});
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.iterations;
    stats_.last_batch_requests = static_cast<int>(batch.size());
    stats_.last_batch_tokens = tokens;
    stats_.total_batch_requests += static_cast<int64_t>(batch.size());
    stats_.total_batch_tokens += tokens;
    if (queued_ == 0 && active_.empty()) idle_cv_.notify_all();
  }
  return true;
}

SchedulerStats Scheduler::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  SchedulerStats s = stats_;
  s.queued = queued_;
  s.active = static_cast<int>(active_.size());
  s.kv_bytes_used = kv_used_;
  s.draining = draining_;
  return s;
}

int Scheduler::load() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queued_ + static_cast<int>(active_.size());
}

}  // namespace dartserve::scheduler

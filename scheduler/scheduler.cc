#include "scheduler/scheduler.h"

#include <algorithm>
#include <cmath>
#include <exception>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/client_value.h"

namespace dartserve::scheduler {
namespace {

// Runs `call` (an Engine call returning absl::Status or absl::StatusOr) with whatever it throws
// as INTERNAL "<what> threw: ...". An exception that escaped would end the worker thread, and
// with it the process (std::terminate), instead of failing the requests at hand.
template <typename Call>
auto CatchingThrows(absl::string_view what, Call&& call) -> decltype(call()) {
  try {
    return call();
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, " threw: ", e.what()));
  } catch (...) {
    return absl::InternalError(absl::StrCat(what, " threw a non-standard exception"));
  }
}

}  // namespace

struct Scheduler::Entry {
  Request request;
  absl::Time submitted;
  absl::Time admitted;
  int64_t kv_bytes = 0;
  int64_t tokens = 0;
  bool kv_reserved = false;                     // counted in kv_used_ (under mu_)
  std::unique_ptr<model::EngineRequest> state;  // set while active
  bool finished = false;                        // the sink had OnFinished
  bool cancelled = false;  // under Scheduler::mu_: Cancel marked it; it leaves at the boundary
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
    MutexLock lock(&mu_);
    stop_ = true;
  }
  work_cv_.SignalAll();
  if (worker_.joinable()) worker_.join();
  // The worker is gone: this thread may now call sinks and free engine state.
  std::vector<Departure> rest;
  {
    MutexLock lock(&mu_);
    const absl::Status why = absl::UnavailableError("server is shutting down");
    for (auto& q : queues_) {
      for (EntryPtr& e : q) rest.push_back({std::move(e), why});
      q.clear();
    }
    queued_ = 0;
    for (EntryPtr& e : active_) rest.push_back({std::move(e), why});
    active_.clear();
    for (Departure& d : rest) ReleaseLocked(*d.entry);
  }
  Deliver(rest);
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
    MutexLock lock(&mu_);
    if (draining_ || stop_) return absl::UnavailableError("server is draining");
    if (queued_ >= options_.max_queued) {
      return absl::ResourceExhaustedError(
          absl::StrCat("queue is full (", options_.max_queued, " waiting requests)"));
    }
    if (live_ids_.contains(request->id)) {
      return absl::AlreadyExistsError(
          absl::StrCat("request_id: ", QuoteClientValue(request->id), " is in flight"));
    }
    entry->submitted = clock_->Now();
    live_ids_[request->id] = entry.get();
    const int priority = request->priority;
    entry->request = std::move(*request);
    request.reset();
    queues_[priority].push_back(std::move(entry));
    ++queued_;
  }
  work_cv_.SignalAll();
  return absl::OkStatus();
}

bool Scheduler::Cancel(const std::string& id) {
  {
    MutexLock lock(&mu_);
    auto it = live_ids_.find(id);
    if (it == live_ids_.end()) return false;
    it->second->cancelled = true;
    live_ids_.erase(it);
  }
  work_cv_.SignalAll();
  return true;
}

void Scheduler::Start() {
  worker_ = std::thread([this] { WorkerLoop(); });
}

void Scheduler::BeginDrain(absl::Duration grace) {
  {
    MutexLock lock(&mu_);
    draining_ = true;
    drain_deadline_ = clock_->Now() + grace;
  }
  work_cv_.SignalAll();
}

void Scheduler::WaitUntilIdle() {
  MutexLock lock(&mu_);
  while (HasWorkLocked() || in_iteration_) idle_cv_.Wait(&mu_);
}

void Scheduler::WorkerLoop() {
  while (true) {
    {
      MutexLock lock(&mu_);
      while (!stop_ && !HasWorkLocked()) work_cv_.Wait(&mu_);
      if (stop_) return;
    }
    RunIteration();
  }
}

bool Scheduler::RunIteration() {
  const absl::Time now = clock_->Now();
  bool changed = false;
  const std::vector<Entry*> batch = AdmitPhase(now, &changed);
  if (batch.empty()) {
    EndIteration(nullptr);
    return changed;
  }
  // Counted before RetirePhase, which frees the entries that leave.
  int64_t tokens = 0;
  for (const Entry* e : batch) tokens += e->tokens;
  const absl::Status step_status = StepPhase(batch);
  RetirePhase(batch, step_status);
  const IterationInfo info{.duration = clock_->Now() - now,
                           .batch_requests = static_cast<int>(batch.size()),
                           .batch_tokens = tokens,
                           .step_failed = !step_status.ok()};
  if (options_.on_iteration) options_.on_iteration(info);
  EndIteration(&info);
  return true;
}

std::vector<Scheduler::Entry*> Scheduler::AdmitPhase(absl::Time now, bool* changed) {
  std::vector<Departure> leavers;
  std::vector<EntryPtr> admitted;
  {
    // One critical section, so the KV that leavers release is already free for admission.
    MutexLock lock(&mu_);
    in_iteration_ = true;
    leavers = TakeLeaversLocked(now);
    admitted = PopAdmissibleLocked(now);
  }
  *changed = !leavers.empty() || !admitted.empty();
  // Leavers free their KV memory before the admitted requests allocate theirs.
  Deliver(leavers);
  std::vector<EntryPtr> started = StartAll(std::move(admitted), now);

  std::vector<Entry*> batch;
  MutexLock lock(&mu_);
  for (EntryPtr& e : started) active_.push_back(std::move(e));
  batch.reserve(active_.size());
  for (const EntryPtr& e : active_) batch.push_back(e.get());
  return batch;
}

std::vector<Scheduler::Departure> Scheduler::TakeLeaversLocked(absl::Time now) {
  std::vector<Departure> out;
  for (auto& q : queues_) {
    for (auto it = q.begin(); it != q.end();) {
      absl::Status why = LeaveReasonLocked(**it, now);
      if (why.ok()) {
        ++it;
        continue;
      }
      out.push_back({std::move(*it), std::move(why)});
      it = q.erase(it);
      --queued_;
    }
  }
  for (auto it = active_.begin(); it != active_.end();) {
    absl::Status why = LeaveReasonLocked(**it, now);
    if (why.ok()) {
      ++it;
      continue;
    }
    out.push_back({std::move(*it), std::move(why)});
    it = active_.erase(it);
  }
  for (Departure& d : out) ReleaseLocked(*d.entry);
  return out;
}

absl::Status Scheduler::LeaveReasonLocked(const Entry& entry, absl::Time now) const {
  if (entry.cancelled) return absl::CancelledError("request was cancelled");
  if (now >= entry.request.deadline) return absl::DeadlineExceededError("deadline exceeded");
  if (draining_ && now >= drain_deadline_) {
    return absl::UnavailableError("server is draining; the grace period ended");
  }
  return absl::OkStatus();
}

std::vector<Scheduler::EntryPtr> Scheduler::PopAdmissibleLocked(absl::Time now) {
  std::vector<EntryPtr> admitted;
  int count = static_cast<int>(active_.size());
  int64_t tokens = 0;
  for (const EntryPtr& e : active_) tokens += e->tokens;
  while (count < options_.max_batch_requests) {
    const int best = NextClassLocked(now);
    if (best < 0) break;
    Entry& head = *queues_[best].front();
    // The head waits for memory rather than being overtaken, so large requests never starve.
    if (kv_used_ + head.kv_bytes > options_.kv_budget_bytes) break;
    if (count > 0 && tokens + head.tokens > options_.max_batch_tokens) break;
    kv_used_ += head.kv_bytes;
    head.kv_reserved = true;
    tokens += head.tokens;
    ++count;
    admitted.push_back(std::move(queues_[best].front()));
    queues_[best].pop_front();
    --queued_;
  }
  return admitted;
}

int Scheduler::NextClassLocked(absl::Time now) const {
  // Effective class: the class minus one per `aging` waited by the class's head.
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
  return best;
}

std::vector<Scheduler::EntryPtr> Scheduler::StartAll(std::vector<EntryPtr> admitted,
                                                     absl::Time now) {
  std::vector<EntryPtr> started;
  std::vector<Departure> failed;
  for (EntryPtr& e : admitted) {
    absl::StatusOr<std::unique_ptr<model::EngineRequest>> state =
        CatchingThrows("starting the request", [&] { return engine_->Start(e->request.params); });
    if (!state.ok()) {
      failed.push_back({std::move(e), state.status()});
      continue;
    }
    e->state = *std::move(state);
    e->admitted = now;
    e->request.sink->OnStarted(now - e->submitted);
    started.push_back(std::move(e));
  }
  if (!failed.empty()) {
    {
      MutexLock lock(&mu_);
      for (Departure& d : failed) ReleaseLocked(*d.entry);
    }
    Deliver(failed);
  }
  return started;
}

absl::Status Scheduler::StepPhase(const std::vector<Entry*>& batch) {
  std::vector<model::EngineRequest*> states;
  states.reserve(batch.size());
  for (Entry* e : batch) states.push_back(e->state.get());
  const absl::Status status =
      CatchingThrows("denoising step", [&] { return engine_->Step(states); });
  if (!status.ok()) return status;
  // Progress for the requests that go on; those that finished hear of it in RetirePhase. The
  // previews due at this step are rendered first, one batched Render per kind.
  std::vector<Entry*> going_on;
  for (Entry* e : batch) {
    if (!e->state->finished()) going_on.push_back(e);
  }
  std::vector<absl::StatusOr<Pixels>> previews(going_on.size());
  for (const model::RenderKind kind : {model::RenderKind::kLinear, model::RenderKind::kDecoded}) {
    std::vector<size_t> due;
    std::vector<model::RenderJob> jobs;
    for (size_t i = 0; i < going_on.size(); ++i) {
      const Request& r = going_on[i]->request;
      if (r.preview_every > 0 && going_on[i]->state->steps_done() % r.preview_every == 0 &&
          r.preview_kind == kind) {
        due.push_back(i);
        jobs.push_back({.request = going_on[i]->state.get(), .max_side = r.preview_max_side});
      }
    }
    if (jobs.empty()) continue;
    absl::StatusOr<std::vector<Pixels>> rendered = RenderAll(jobs, kind);
    for (size_t j = 0; j < due.size(); ++j) {
      previews[due[j]] =
          rendered.ok() ? std::move((*rendered)[j]) : absl::StatusOr<Pixels>(rendered.status());
    }
  }
  for (size_t i = 0; i < going_on.size(); ++i) {
    const int step = going_on[i]->state->steps_done(), total = going_on[i]->state->total_steps();
    // A preview that was not due (still the default, an error) or failed to render leaves a
    // Progress without an image.
    const Pixels* preview = previews[i].ok() ? &*previews[i] : nullptr;
    going_on[i]->request.sink->OnProgress(step, total, preview);
  }
  return status;
}

absl::StatusOr<std::vector<Pixels>> Scheduler::RenderAll(std::span<const model::RenderJob> jobs,
                                                         model::RenderKind kind) {
  return CatchingThrows("rendering", [&] { return engine_->Render(jobs, kind); });
}

void Scheduler::RetirePhase(const std::vector<Entry*>& batch, const absl::Status& step_status) {
  std::vector<std::pair<Entry*, absl::StatusOr<Result>>> leaving;
  for (Entry* e : batch) {
    if (!step_status.ok()) {
      leaving.emplace_back(
          e, absl::InternalError(absl::StrCat("denoising step failed: ", step_status.message())));
    } else if (e->state->finished()) {
      leaving.emplace_back(e, absl::UnknownError("not rendered"));
    }
  }
  if (leaving.empty()) return;
  if (step_status.ok()) CompleteAll(leaving);
  std::vector<Departure> done;
  done.reserve(leaving.size());
  {
    MutexLock lock(&mu_);
    for (auto& [e, result] : leaving) {
      auto it = std::find_if(active_.begin(), active_.end(),
                             [e = e](const EntryPtr& p) { return p.get() == e; });
      done.push_back({std::move(*it), std::move(result)});
      active_.erase(it);
      ReleaseLocked(*done.back().entry);
    }
  }
  Deliver(done);
}

void Scheduler::CompleteAll(std::vector<std::pair<Entry*, absl::StatusOr<Result>>>& finished) {
  std::vector<model::RenderJob> jobs;
  jobs.reserve(finished.size());
  for (auto& [e, result] : finished) {
    const int total = e->state->total_steps();
    e->request.sink->OnProgress(total, total, nullptr);
    jobs.push_back({.request = e->state.get()});
  }
  // Every image that finished in this step, in one Render (for a latent model, one decoder call).
  absl::StatusOr<std::vector<Pixels>> images = RenderAll(jobs, model::RenderKind::kDecoded);
  const absl::Time now = clock_->Now();
  for (size_t i = 0; i < finished.size(); ++i) {
    Entry& e = *finished[i].first;
    if (!images.ok()) {
      finished[i].second = images.status();
      continue;
    }
    finished[i].second = Result{.image = std::move((*images)[i]),
                                .seed = e.request.params.seed,
                                .steps = e.state->total_steps(),
                                .queue_time = e.admitted - e.submitted,
                                .compute_time = now - e.admitted};
  }
}

void Scheduler::EndIteration(const IterationInfo* stepped) {
  MutexLock lock(&mu_);
  if (stepped != nullptr) {
    ++stats_.iterations;
    stats_.last_batch_requests = stepped->batch_requests;
    stats_.last_batch_tokens = stepped->batch_tokens;
    stats_.total_batch_requests += stepped->batch_requests;
    stats_.total_batch_tokens += stepped->batch_tokens;
  }
  in_iteration_ = false;
  if (!HasWorkLocked()) idle_cv_.SignalAll();
}

void Scheduler::ReleaseLocked(Entry& entry) {
  if (entry.kv_reserved) {
    kv_used_ -= entry.kv_bytes;
    entry.kv_reserved = false;
  }
  auto it = live_ids_.find(entry.request.id);
  if (it != live_ids_.end() && it->second == &entry) live_ids_.erase(it);
}

void Scheduler::Deliver(std::vector<Departure>& departures) {
  for (Departure& d : departures) {
    Entry& e = *d.entry;
    e.state.reset();  // frees the KV memory before the sink hears of it
    if (e.finished) continue;
    e.finished = true;
    e.request.sink->OnFinished(std::move(d.result));
  }
}

SchedulerStats Scheduler::stats() const {
  MutexLock lock(&mu_);
  SchedulerStats s = stats_;
  s.queued = queued_;
  s.active = static_cast<int>(active_.size());
  s.kv_bytes_used = kv_used_;
  s.draining = draining_;
  return s;
}

int Scheduler::load() const {
  MutexLock lock(&mu_);
  return queued_ + static_cast<int>(active_.size());
}

}  // namespace dartserve::scheduler

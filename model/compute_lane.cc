#include "model/compute_lane.h"

#include <pthread.h>

#include <chrono>
#include <optional>
#include <utility>

namespace dartserve::model {

struct ComputeLane::Job {
  absl::FunctionRef<void()> fn;
  std::exception_ptr error;
  bool done = false;  // guarded by the lane's mu_
};

ComputeLane::ComputeLane(const std::string& name) : thread_([this] { Loop(); }) {
  pthread_setname_np(thread_.native_handle(), name.substr(0, 15).c_str());
}

ComputeLane::~ComputeLane() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void ComputeLane::Run(absl::FunctionRef<void()> fn) {
  if (std::this_thread::get_id() == thread_.get_id()) {
    fn();
    return;
  }
  Job job{fn};
  {
    std::unique_lock<std::mutex> lock(mu_);
    queue_.push_back(&job);
    cv_.notify_all();
    cv_.wait(lock, [&job] { return job.done; });
  }
  if (job.error) std::rethrow_exception(job.error);
}

void ComputeLane::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and nothing left to run
    Job* job = queue_.front();
    queue_.pop_front();
    lock.unlock();
    const auto start = std::chrono::steady_clock::now();
    try {
      job->fn();
    } catch (...) {
      job->error = std::current_exception();
    }
    busy_ns_.fetch_add(std::chrono::duration_cast<std::chrono::nanoseconds>(
                           std::chrono::steady_clock::now() - start)
                           .count(),
                       std::memory_order_relaxed);
    lock.lock();
    job->done = true;
    cv_.notify_all();
  }
}

double ComputeLane::busy_seconds() const {
  return static_cast<double>(busy_ns_.load(std::memory_order_relaxed)) * 1e-9;
}

namespace {

class LaneEngine final : public Engine {
 public:
  LaneEngine(std::unique_ptr<Engine> engine, std::shared_ptr<ComputeLane> lane)
      : engine_(std::move(engine)), lane_(std::move(lane)) {}

  const ModelInfo& info() const override { return engine_->info(); }
  absl::Status Validate(const GenerateParams& params) const override {
    return engine_->Validate(params);
  }
  int64_t KvBytes(const GenerateParams& params) const override { return engine_->KvBytes(params); }
  int Steps(const GenerateParams& params) const override { return engine_->Steps(params); }
  int64_t TokensPerStep(const GenerateParams& params) const override {
    return engine_->TokensPerStep(params);
  }

  absl::StatusOr<std::unique_ptr<EngineRequest>> Start(const GenerateParams& params) override {
    return RunOnLane([&] { return engine_->Start(params); });
  }
  absl::Status Step(std::span<EngineRequest* const> requests) override {
    return RunOnLane([&] { return engine_->Step(requests); });
  }
  absl::StatusOr<std::vector<Pixels>> Render(std::span<const RenderJob> jobs,
                                             RenderKind kind) override {
    return RunOnLane([&] { return engine_->Render(jobs, kind); });
  }

 private:
  template <typename F>
  auto RunOnLane(F f) -> decltype(f()) {
    std::optional<decltype(f())> out;
    lane_->Run([&] { out.emplace(f()); });
    return *std::move(out);
  }

  const std::unique_ptr<Engine> engine_;
  const std::shared_ptr<ComputeLane> lane_;
};

}  // namespace

std::unique_ptr<Engine> OnLane(std::unique_ptr<Engine> engine, std::shared_ptr<ComputeLane> lane) {
  return std::make_unique<LaneEngine>(std::move(engine), std::move(lane));
}

}  // namespace dartserve::model

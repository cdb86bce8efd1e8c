// A deterministic Engine and Clock for scheduler tests: no torch, no threads, no sleeps.
#ifndef DARTSERVE_TESTS_TESTING_FAKE_ENGINE_H_
#define DARTSERVE_TESTS_TESTING_FAKE_ENGINE_H_

#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "model/engine.h"
#include "scheduler/clock.h"
#include "scheduler/request.h"

namespace dartserve::testing {

class FakeClock : public scheduler::Clock {
 public:
  absl::Time Now() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return now_;
  }
  void Advance(absl::Duration d) {
    std::lock_guard<std::mutex> lock(mu_);
    now_ += d;
  }

 private:
  mutable std::mutex mu_;
  absl::Time now_ = absl::FromUnixSeconds(1'000'000);
};

// Requests take `seed % 100` steps when the seed is >= 1 and < 100, else `default_steps`.
// KV bytes: `kv_per_row` per row, two rows when guided. Step() records each batch (by seed),
// checks the live KV total against `kv_limit`, and fails on the call numbered `fail_on_call`.
class FakeEngine : public model::Engine {
 public:
  int default_steps = 4;
  int64_t kv_per_row = 100;
  int64_t tokens_per_row = 16;
  int fail_on_call = -1;  // 0-based Step() call that returns INTERNAL
  model::ModelInfo model_info{.num_classes = 10, .denoising_steps = 4, .progress_steps = 4};

  const model::ModelInfo& info() const override { return model_info; }
  absl::Status Validate(const model::GenerateParams& p) const override {
    if (p.class_id && *p.class_id < 0) return absl::InvalidArgumentError("class_id: negative");
    return absl::OkStatus();
  }
  int64_t KvBytes(const model::GenerateParams& p) const override {
    return kv_per_row * (p.guidance_scale != 1.0f ? 2 : 1);
  }
  int Steps(const model::GenerateParams& p) const override {
    return p.seed >= 1 && p.seed < 100 ? static_cast<int>(p.seed) : default_steps;
  }
  int64_t TokensPerStep(const model::GenerateParams& p) const override {
    return tokens_per_row * (p.guidance_scale != 1.0f ? 2 : 1);
  }

  class Req : public model::EngineRequest {
   public:
    Req(FakeEngine* engine, const model::GenerateParams& p)
        : engine_(engine), params(p), total(engine->Steps(p)), kv(engine->KvBytes(p)) {
      engine_->live_kv += kv;
      ++engine_->live_requests;
    }
    ~Req() override {
      engine_->live_kv -= kv;
      --engine_->live_requests;
    }
    int steps_done() const override { return done; }
    int total_steps() const override { return total; }
    FakeEngine* engine_;
    model::GenerateParams params;
    int total;
    int64_t kv;
    int done = 0;
  };

  absl::StatusOr<std::unique_ptr<model::EngineRequest>> Start(
      const model::GenerateParams& p) override {
    return std::make_unique<Req>(this, p);
  }
  absl::Status Step(std::span<model::EngineRequest* const> requests) override {
    max_live_kv = std::max(max_live_kv, live_kv);
    std::vector<uint64_t> seeds;
    for (auto* r : requests) seeds.push_back(static_cast<Req*>(r)->params.seed);
    batches.push_back(seeds);
    if (static_cast<int>(batches.size()) - 1 == fail_on_call) {
      return absl::InternalError("injected failure");
    }
    for (auto* r : requests) ++static_cast<Req*>(r)->done;
    return absl::OkStatus();
  }
  // An 8x8 gray image (downscaled to max_side) whose value is the request's steps done.
  absl::StatusOr<std::vector<Pixels>> Render(std::span<const model::RenderJob> jobs,
                                             model::RenderKind kind) override {
    render_calls.push_back({kind, static_cast<int>(jobs.size())});
    std::vector<Pixels> out;
    for (const model::RenderJob& job : jobs) {
      const auto& req = static_cast<const Req&>(*job.request);
      const int side = job.max_side > 0 ? std::min(job.max_side, 8) : 8;
      out.push_back(
          Pixels{side, side, 1, std::vector<uint8_t>(side * side, static_cast<uint8_t>(req.done))});
    }
    return out;
  }

  int64_t live_kv = 0;
  int64_t max_live_kv = 0;
  int live_requests = 0;
  std::vector<std::vector<uint64_t>> batches;
  struct RenderCall {
    model::RenderKind kind;
    int jobs;
  };
  std::vector<RenderCall> render_calls;  // one per Render, in order
};

// Records a request's events; thread-safe.
class RecordingSink : public scheduler::RequestSink {
 public:
  void OnStarted(absl::Duration queue_time) override {
    std::lock_guard<std::mutex> lock(mu_);
    started = true;
    this->queue_time = queue_time;
  }
  void OnProgress(int step, int total, const Pixels* preview) override {
    std::lock_guard<std::mutex> lock(mu_);
    steps.push_back(step);
    if (preview != nullptr) preview_steps.push_back(step), preview_side = preview->width;
  }
  void OnFinished(absl::StatusOr<scheduler::Result> r) override {
    std::lock_guard<std::mutex> lock(mu_);
    ++finished;
    result = std::move(r);
  }

  std::mutex mu_;
  bool started = false;
  absl::Duration queue_time;
  std::vector<int> steps;
  std::vector<int> preview_steps;
  int preview_side = 0;
  int finished = 0;
  absl::StatusOr<scheduler::Result> result = absl::UnknownError("not finished");
};

}  // namespace dartserve::testing

#endif  // DARTSERVE_TESTS_TESTING_FAKE_ENGINE_H_

// Test doubles shared by the server's tests: a FakeEngine whose steps the test lets run one by
// one (or all), a model spec over it, a request for it and a bounded client context.
#ifndef DARTSERVE_TESTS_SERVER_GATED_ENGINE_H_
#define DARTSERVE_TESTS_SERVER_GATED_ENGINE_H_

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "dartserve/v1/image_generator.pb.h"
#include "server/server.h"
#include "tests/testing/fake_engine.h"

namespace dartserve::server {

// Every wait in these tests is bounded by this (far beyond what a passing run takes), so a
// regression fails instead of hanging the suite.
inline constexpr std::chrono::seconds kBound(60);

// FakeEngine whose Step waits for permits (or an open gate), so tests control progress.
class GatedEngine : public testing::FakeEngine {
 public:
  int render_side = 8;

  absl::Status Step(std::span<model::EngineRequest* const> requests) override {
    {
      std::unique_lock<std::mutex> lock(mu_);
      ++entered_;
      cv_.notify_all();
      if (!cv_.wait_for(lock, kBound, [this] { return open_ || permits_ > 0; })) {
        return absl::DeadlineExceededError("GatedEngine: the test never let this step run");
      }
      if (!open_) --permits_;
    }
    absl::Status s = FakeEngine::Step(requests);
    std::lock_guard<std::mutex> lock(mu_);
    ++steps_run_;
    cv_.notify_all();
    return s;
  }
  absl::StatusOr<std::vector<Pixels>> Render(std::span<const model::RenderJob> jobs,
                                             model::RenderKind kind) override {
    std::vector<Pixels> out;
    for (const model::RenderJob& job : jobs) {
      const int side = job.max_side > 0 ? std::min(job.max_side, render_side) : render_side;
      Pixels px{side, side, 3, std::vector<uint8_t>(side * side * 3)};
      // Noise-like content, so PNG previews are large (to exceed HTTP/2 flow-control windows).
      uint32_t x =
          static_cast<uint32_t>(static_cast<const Req&>(*job.request).done) * 2654435761u + 1;
      for (uint8_t& b : px.data) b = static_cast<uint8_t>((x = x * 1664525u + 1013904223u) >> 24);
      out.push_back(std::move(px));
    }
    return out;
  }

  void Open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  // Closes the gate and restarts the step counts (after warm-up).
  void Close() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = false;
    entered_ = steps_run_ = 0;
  }
  void Allow(int steps) {
    std::lock_guard<std::mutex> lock(mu_);
    permits_ += steps;
    cv_.notify_all();
  }
  // Blocks until Step has been entered `n` times in total.
  void WaitEntered(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, kBound, [&] { return entered_ >= n; })) {
      ADD_FAILURE() << "Step was entered " << entered_ << " times, expected " << n;
    }
  }
  void WaitStepsRun(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, kBound, [&] { return steps_run_ >= n; })) {
      ADD_FAILURE() << steps_run_ << " steps ran, expected " << n;
    }
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
  int permits_ = 0;
  int entered_ = 0;
  int steps_run_ = 0;
};

inline model::ModelInfo FakeInfo() {
  model::ModelInfo info;
  info.num_classes = 10;
  info.class_names = {"zero", "one", "two",   "three", "four",
                      "five", "six", "seven", "eight", "nine"};
  info.image_size = 8;
  info.channels = 3;
  info.denoising_steps = 4;  // FakeEngine::default_steps
  info.progress_steps = 4;
  info.default_guidance = 1.0f;
  return info;
}

// A GatedEngine describing itself as FakeInfo(), gate open.
inline std::unique_ptr<GatedEngine> OpenGatedEngine() {
  auto engine = std::make_unique<GatedEngine>();
  engine->model_info = FakeInfo();
  engine->Open();
  return engine;
}

// A one-replica model spec over `engine`.
inline ModelSpec FakeSpec(std::string name, std::unique_ptr<model::Engine> engine,
                          scheduler::SchedulerOptions options = {}) {
  ModelSpec spec{.name = std::move(name), .scheduler = options};
  spec.engines.push_back(std::move(engine));
  return spec;
}

// A request for `n` images of class `class_id` (FakeInfo() has classes 0-9).
inline v1::GenerateImageRequest ClassRequest(int class_id, uint64_t seed, int n = 1) {
  v1::GenerateImageRequest r;
  r.set_class_id(class_id);
  r.set_seed(seed);
  r.set_num_images(static_cast<uint32_t>(n));
  return r;
}

// A client context whose calls fail with DEADLINE_EXCEEDED after kBound (tests that want another
// deadline set their own).
class BoundedContext : public grpc::ClientContext {
 public:
  BoundedContext() { set_deadline(std::chrono::system_clock::now() + kBound); }
};

}  // namespace dartserve::server

#endif  // DARTSERVE_TESTS_SERVER_GATED_ENGINE_H_

// Fault injection through the real service: an engine whose Step fails (an error status) or
// throws, or whose Start throws, on demand, behind an in-process Server driven over gRPC. The
// promise under test (docs/reliability.md, "Fault injection"): the requests of the batch that
// failed end INTERNAL, every other request completes, the server goes on serving, and its
// metrics count each call by its outcome.
//
// Faults are armed by request seed, so they fire whatever the timing; the engine records each
// failed batch, which is what the calls' outcomes are checked against. No sleeps: the gate of
// GatedEngine (tests/server/gated_engine.h) orders the deterministic tests, and every wait is
// bounded (kBound).
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <new>
#include <optional>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "dartserve/v1/image_generator.grpc.pb.h"
#include "server/server.h"
#include "tests/server/gated_engine.h"
#include "tests/testing/prometheus.h"

namespace dartserve::server {
namespace {

enum class Fault {
  kStepError,         // Step returns INTERNAL
  kStepThrows,        // Step throws std::runtime_error (as LibTorch throws c10::Error)
  kStepThrowsNonStd,  // Step throws something that is not a std::exception
  kStartThrows,       // Start throws std::bad_alloc (its KV memory cannot be allocated)
};

std::string FaultName(Fault fault) {
  switch (fault) {
    case Fault::kStepError:
      return "StepError";
    case Fault::kStepThrows:
      return "StepThrows";
    case Fault::kStepThrowsNonStd:
      return "StepThrowsNonStd";
    case Fault::kStartThrows:
      return "StartThrows";
  }
  return "Unknown";
}

// A GatedEngine (4 steps per image for seeds >= 100; gate open) with faults armed per request
// seed: a Start fault fires when that request starts, a Step fault on the first Step whose batch
// holds it, at once (a faulty Step does not wait at the gate). Thread-safe: the test arms and
// reads; the scheduler's worker starts and steps.
class FaultyEngine : public GatedEngine {
 public:
  FaultyEngine() {
    model_info = FakeInfo();
    Open();
  }

  void Arm(uint64_t seed, Fault fault) {
    std::lock_guard lock(faults_mu_);
    armed_[seed] = fault;
  }

  // The seeds of each batch whose Step failed, in order.
  std::vector<std::vector<uint64_t>> failed_batches() {
    std::lock_guard lock(faults_mu_);
    return failed_batches_;
  }
  std::set<uint64_t> failed_starts() {
    std::lock_guard lock(faults_mu_);
    return failed_starts_;
  }

  absl::StatusOr<std::unique_ptr<model::EngineRequest>> Start(
      const model::GenerateParams& p) override {
    {
      std::lock_guard lock(faults_mu_);
      auto it = armed_.find(p.seed);
      if (it != armed_.end() && it->second == Fault::kStartThrows) {
        armed_.erase(it);
        failed_starts_.insert(p.seed);
        throw std::bad_alloc();
      }
    }
    return FakeEngine::Start(p);
  }

  absl::Status Step(std::span<model::EngineRequest* const> requests) override {
    std::optional<Fault> fault;
    {
      std::lock_guard lock(faults_mu_);
      std::vector<uint64_t> seeds;
      for (model::EngineRequest* r : requests) {
        const uint64_t seed = static_cast<Req*>(r)->params.seed;
        seeds.push_back(seed);
        auto it = armed_.find(seed);
        if (it != armed_.end() && it->second != Fault::kStartThrows) {
          fault = it->second;
          armed_.erase(it);
        }
      }
      if (fault) failed_batches_.push_back(seeds);
    }
    if (!fault) return GatedEngine::Step(requests);
    switch (*fault) {
      case Fault::kStepError:
        return absl::InternalError("injected step error");
      case Fault::kStepThrows:
        throw std::runtime_error("injected step exception");
      case Fault::kStepThrowsNonStd:
        throw 42;
      case Fault::kStartThrows:
        break;
    }
    return absl::OkStatus();
  }

 private:
  std::mutex faults_mu_;  // guards the members below
  std::map<uint64_t, Fault> armed_;
  std::vector<std::vector<uint64_t>> failed_batches_;
  std::set<uint64_t> failed_starts_;
};

// An in-process server over one FaultyEngine (model "faulty"), warmed up, with a metrics endpoint.
struct Harness {
  std::unique_ptr<Server> server;
  FaultyEngine* engine = nullptr;  // owned by the server
  std::unique_ptr<v1::ImageGenerator::Stub> stub;

  explicit Harness(scheduler::SchedulerOptions options = {}) {
    auto owned = std::make_unique<FaultyEngine>();
    engine = owned.get();
    std::vector<ModelSpec> models;
    models.push_back(FakeSpec("faulty", std::move(owned), options));
    absl::StatusOr<std::unique_ptr<Server>> started = Server::Start(
        {.address = "127.0.0.1:0", .metrics_address = "127.0.0.1:0"}, std::move(models));
    EXPECT_TRUE(started.ok()) << started.status();
    if (!started.ok()) return;
    server = *std::move(started);
    EXPECT_TRUE(server->WarmUp().ok());
    stub = v1::ImageGenerator::NewStub(grpc::CreateChannel(
        absl::StrCat("127.0.0.1:", server->port()), grpc::InsecureChannelCredentials()));
  }

  // The value of `series` on the server's /metrics, as Prometheus would scrape it (0 if absent).
  double Metric(const std::string& series) {
    absl::StatusOr<std::string> text =
        testing::HttpGet("127.0.0.1", server->metrics_port(), "/metrics");
    EXPECT_TRUE(text.ok()) << text.status();
    return text.ok() ? testing::SampleValue(*text, series).value_or(0) : 0;
  }
};

// One GenerateImage call, read message by message.
class Call {
 public:
  Call(v1::ImageGenerator::Stub& stub, const v1::GenerateImageRequest& request)
      : num_images_(static_cast<int>(request.num_images())) {
    reader_ = stub.GenerateImage(&context_, request);
  }

  // Reads the Accepted message, which the server sends once the call's images are submitted.
  void ReadAccepted() {
    v1::GenerateImageResponse m;
    ASSERT_TRUE(reader_->Read(&m));
    ASSERT_TRUE(m.has_accepted());
  }

  // Reads to the end; the final status.
  grpc::Status Finish() {
    v1::GenerateImageResponse m;
    while (reader_->Read(&m)) {
      if (m.has_result()) ++results_;
      if (m.has_progress()) ++progress_;
    }
    return reader_->Finish();
  }

  int results() const { return results_; }
  int progress() const { return progress_; }
  int num_images() const { return num_images_; }

 private:
  const int num_images_;
  BoundedContext context_;
  std::unique_ptr<grpc::ClientReader<v1::GenerateImageResponse>> reader_;
  int results_ = 0;
  int progress_ = 0;
};

// OK with every image and every step's Progress (4 steps per image).
void ExpectCompleted(Call& call, const grpc::Status& status) {
  EXPECT_TRUE(status.ok()) << status.error_code() << ": " << status.error_message();
  EXPECT_EQ(call.results(), call.num_images());
  EXPECT_EQ(call.progress(), 4 * call.num_images());
}

void ExpectInternal(const grpc::Status& status) {
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INTERNAL) << status.error_message();
}

constexpr char kInternal[] = "dartserve_requests_total{model=\"faulty\",status=\"internal\"}";
constexpr char kOk[] = "dartserve_requests_total{model=\"faulty\",status=\"ok\"}";
constexpr char kImages[] = "dartserve_images_total{model=\"faulty\"}";

class StepFaultTest : public ::testing::TestWithParam<Fault> {};

// With at most three requests per batch: X steps alone (held at the gate), P (armed), A, B and C
// queue behind it in that order; once the gate opens, the next batch is X, P and A and fails,
// then B and C run.
TEST_P(StepFaultTest, FailsItsBatchAndTheQueueBehindCompletes) {
  Harness h({.max_batch_requests = 3});
  ASSERT_NE(h.server, nullptr);
  h.engine->Arm(2000, GetParam());
  h.engine->Close();
  Call x(*h.stub, ClassRequest(3, 1000));
  x.ReadAccepted();
  h.engine->WaitEntered(1);
  // One after the other, so that they queue in this order.
  Call p(*h.stub, ClassRequest(3, 2000));
  p.ReadAccepted();
  Call a(*h.stub, ClassRequest(3, 3000));
  a.ReadAccepted();
  Call b(*h.stub, ClassRequest(3, 4000));
  b.ReadAccepted();
  Call c(*h.stub, ClassRequest(3, 5000));
  c.ReadAccepted();
  h.engine->Open();

  for (Call* call : {&x, &p, &a}) ExpectInternal(call->Finish());
  for (Call* call : {&b, &c}) ExpectCompleted(*call, call->Finish());
  EXPECT_EQ(h.engine->failed_batches(), (std::vector<std::vector<uint64_t>>{{1000, 2000, 3000}}));
  // The server goes on serving.
  Call d(*h.stub, ClassRequest(3, 6000));
  ExpectCompleted(d, d.Finish());

  EXPECT_EQ(h.Metric(kInternal), 3);
  EXPECT_EQ(h.Metric(kOk), 3);
  EXPECT_EQ(h.Metric(kImages), 3);  // warm-up runs beside the service and is not counted
}

INSTANTIATE_TEST_SUITE_P(Faults, StepFaultTest,
                         ::testing::Values(Fault::kStepError, Fault::kStepThrows,
                                           Fault::kStepThrowsNonStd),
                         [](const ::testing::TestParamInfo<Fault>& info) {
                           return FaultName(info.param);
                         });

// A request whose Start throws fails alone: the batch it was to join steps on without it.
TEST(StartFaultTest, FailsOnlyItsRequest) {
  Harness h;
  ASSERT_NE(h.server, nullptr);
  h.engine->Arm(2000, Fault::kStartThrows);
  h.engine->Close();
  Call x(*h.stub, ClassRequest(3, 1000));
  x.ReadAccepted();
  h.engine->WaitEntered(1);
  Call p(*h.stub, ClassRequest(3, 2000));
  p.ReadAccepted();
  Call a(*h.stub, ClassRequest(3, 3000));
  a.ReadAccepted();
  h.engine->Open();

  const grpc::Status failed = p.Finish();
  ExpectInternal(failed);
  EXPECT_TRUE(absl::StrContains(failed.error_message(), "threw")) << failed.error_message();
  for (Call* call : {&x, &a}) ExpectCompleted(*call, call->Finish());
  EXPECT_EQ(h.engine->failed_starts(), std::set<uint64_t>{2000});
  EXPECT_TRUE(h.engine->failed_batches().empty());
  EXPECT_EQ(h.Metric(kInternal), 1);
  EXPECT_EQ(h.Metric(kOk), 2);
}

// Concurrent calls of one and two images, some armed with each fault, with no control over which
// requests share a batch: a call ends INTERNAL exactly when one of its images was in a failed
// batch or failed to start, every other call completes, and the metrics agree with the clients.
TEST(ConcurrentFaultTest, OnlyTheFailedBatchesCallsFail) {
  Harness h;
  ASSERT_NE(h.server, nullptr);
  constexpr int kClients = 4, kCallsPerClient = 12;
  // Call i of client c: seed 10000 + 1000 c + 10 i, images seed .. seed + n - 1.
  auto seed_of = [](int client, int i) { return uint64_t{10000} + 1000 * client + 10 * i; };
  auto images_of = [](int client, int i) { return 1 + (client + i) % 2; };
  const std::map<uint64_t, Fault> armed = {{seed_of(0, 3), Fault::kStepError},
                                           {seed_of(1, 5), Fault::kStepThrows},
                                           {seed_of(2, 7), Fault::kStepThrowsNonStd},
                                           {seed_of(3, 4), Fault::kStartThrows}};
  for (const auto& [seed, fault] : armed) h.engine->Arm(seed, fault);

  struct Outcome {
    grpc::Status status;
    int results = 0;
    int progress = 0;
  };
  std::vector<std::vector<Outcome>> outcomes(kClients, std::vector<Outcome>(kCallsPerClient));
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      for (int i = 0; i < kCallsPerClient; ++i) {
        Call call(*h.stub, ClassRequest(3, seed_of(c, i), images_of(c, i)));
        outcomes[c][i].status = call.Finish();
        outcomes[c][i].results = call.results();
        outcomes[c][i].progress = call.progress();
      }
    });
  }
  for (std::thread& t : clients) t.join();

  std::set<uint64_t> failed_seeds = h.engine->failed_starts();
  for (const std::vector<uint64_t>& batch : h.engine->failed_batches()) {
    failed_seeds.insert(batch.begin(), batch.end());
  }
  int internal = 0, ok = 0, results = 0;
  for (int c = 0; c < kClients; ++c) {
    for (int i = 0; i < kCallsPerClient; ++i) {
      SCOPED_TRACE(absl::StrCat("client ", c, " call ", i));
      const Outcome& o = outcomes[c][i];
      bool failed = false;
      for (int k = 0; k < images_of(c, i); ++k) failed |= failed_seeds.contains(seed_of(c, i) + k);
      if (armed.contains(seed_of(c, i))) {
        EXPECT_TRUE(failed) << "an armed request's fault fired";
      }
      results += o.results;
      if (failed) {
        ExpectInternal(o.status);
        ++internal;
      } else {
        EXPECT_TRUE(o.status.ok()) << o.status.error_code() << ": " << o.status.error_message();
        EXPECT_EQ(o.results, images_of(c, i));
        EXPECT_EQ(o.progress, 4 * images_of(c, i));
        ++ok;
      }
    }
  }
  EXPECT_GE(internal, static_cast<int>(armed.size()));
  EXPECT_GT(ok, 0);
  EXPECT_EQ(h.Metric(kInternal), internal);
  EXPECT_EQ(h.Metric(kOk), ok);
  // A failed call still delivers the images that finished before its failure.
  EXPECT_EQ(h.Metric(kImages), results);
}

}  // namespace
}  // namespace dartserve::server

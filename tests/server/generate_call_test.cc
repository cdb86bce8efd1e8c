// GenerateCall's logic without a network: a transport that only records, and a scheduler the
// test steps itself, so the test picks the moments a network would pick.
#include <gtest/gtest.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "scheduler/dispatcher.h"
#include "scheduler/scheduler.h"
#include "server/server_metrics.h"
#include "server/stream.h"
#include "server/validation.h"
#include "server/work_queue.h"
#include "tests/server/gated_engine.h"
#include "tests/testing/fake_engine.h"

namespace dartserve::server {
namespace {

// A GenerateCall over a transport that only records: the call's logic without gRPC, driven by a
// scheduler the test steps itself, so the test picks the moments a network would pick.
class RecordingCall final : public GenerateCall {
 public:
  RecordingCall(const PreparedCall& prepared, WorkQueue* network)
      : GenerateCall(prepared), network_(network) {}

  // The status EndCall gave (bounded wait: a call that never ends fails the test).
  absl::Status WaitEnded() {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, kBound, [this] { return ends_ > 0; })) {
      return absl::DeadlineExceededError("EndCall was never called");
    }
    return status_;
  }
  int ends() {
    std::lock_guard<std::mutex> lock(mu_);
    return ends_;
  }
  int results() {
    std::lock_guard<std::mutex> lock(mu_);
    return results_;
  }

 private:
  void WriteEvent(const v1::GenerateImageResponse* event) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (event->has_result()) ++results_;
    }
    // The write completes later, on another thread, as a transport's would.
    network_->Post([self = shared_from_this()] { self->WriteDone(true); });
  }
  void EndCall(const absl::Status& status) override {
    std::lock_guard<std::mutex> lock(mu_);
    ++ends_;
    status_ = status;
    cv_.notify_all();
  }

  WorkQueue* const network_;
  std::mutex mu_;
  std::condition_variable cv_;
  int ends_ = 0;
  int results_ = 0;
  absl::Status status_;
};

// CancelGeneration finds a call by id, then cancels it; the call can finish in between (its last
// write done, its id freed). Cancel must then say it did nothing, so that CancelGeneration
// answers NOT_FOUND rather than OK for a stream that ends OK with all its images.
TEST(GenerateCallTest, CancelReportsWhetherItTookEffect) {
  ServerMetrics metrics;
  CallRegistry registry;
  WorkQueue network(1);
  WorkQueue pump(1);
  testing::FakeEngine engine;
  engine.model_info = FakeInfo();
  scheduler::Scheduler replica({}, &engine);  // stepped here: RunIteration, no worker
  scheduler::Dispatcher dispatcher;
  dispatcher.AddReplica(&replica);
  absl::StatusOr<ValidatedRequest> request =
      ValidateGenerateRequest(ClassRequest(1, 5, 2), FakeInfo(), "fake", 0);
  ASSERT_TRUE(request.ok()) << request.status();
  auto prepare = [&](const std::string& id) {
    return PreparedCall{.deps = {.scheduler = &dispatcher,
                                 .model_name = "fake",
                                 .progress_steps = FakeInfo().progress_steps,
                                 .model_metrics = &metrics.ForModel("fake"),
                                 .metrics = &metrics,
                                 .pump = &pump,
                                 .registry = &registry},
                        .request_id = id,
                        .request = *request};
  };
  auto run_to_idle = [&] {
    for (int i = 0; i < 1000 && replica.RunIteration(); ++i) {
    }
  };

  // Finished: the client got OK and both images; a late Cancel changes nothing and says so,
  // before the transport has released the call and after.
  auto finished = std::make_shared<RecordingCall>(prepare("finished"), &network);
  ASSERT_TRUE(finished->Start(absl::InfiniteFuture()).ok());
  run_to_idle();
  EXPECT_TRUE(finished->WaitEnded().ok());
  EXPECT_FALSE(finished->Cancel("cancelled by CancelGeneration"));
  finished->Released();
  EXPECT_FALSE(finished->Cancel("cancelled by CancelGeneration"));
  EXPECT_EQ(finished->ends(), 1);
  EXPECT_EQ(finished->results(), 2);

  // Mid-stream: the cancel takes effect once; a second one finds the call already ending.
  auto running = std::make_shared<RecordingCall>(prepare("running"), &network);
  ASSERT_TRUE(running->Start(absl::InfiniteFuture()).ok());
  ASSERT_TRUE(replica.RunIteration());
  EXPECT_TRUE(running->Cancel("cancelled by CancelGeneration"));
  EXPECT_FALSE(running->Cancel("cancelled by CancelGeneration"));
  const absl::Status cancelled = running->WaitEnded();
  EXPECT_EQ(cancelled.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(cancelled.message(), "cancelled by CancelGeneration");
  running->Released();

  // Already ending another way (the client went away): the cancel does not take it over.
  auto gone = std::make_shared<RecordingCall>(prepare("gone"), &network);
  ASSERT_TRUE(gone->Start(absl::InfiniteFuture()).ok());
  gone->ClientGone();
  EXPECT_FALSE(gone->Cancel("cancelled by CancelGeneration"));
  const absl::Status client_gone = gone->WaitEnded();
  EXPECT_EQ(client_gone.code(), absl::StatusCode::kCancelled);
  EXPECT_NE(client_gone.message(), "cancelled by CancelGeneration");
  gone->Released();
  run_to_idle();  // the scheduler retires the cancelled images
  EXPECT_EQ(replica.stats().active + replica.stats().queued, 0);
}

}  // namespace
}  // namespace dartserve::server

// One GenerateImage call: a gRPC server-streaming reactor that submits the call's images to the
// scheduler and streams Accepted -> Progress -> Result back (DESIGN.md §5).
//
// Threads and lifetime:
//  - the scheduler's worker calls the per-image sinks; they only queue events and never block;
//  - a WorkQueue thread ("pump") encodes PNGs and starts writes, one write in flight at a time;
//  - gRPC's threads call OnWriteDone/OnCancel/OnDone, which only update state and post to the
//    pump: nothing blocks or encodes in reactor callbacks;
//  - the sinks hold the call by shared_ptr, so they may outlive the reactor's OnDone; after
//    OnDone, events are dropped. Finish is called exactly once, on every path.
// Backpressure: at most one Progress per image waits in the queue; a newer preview replaces an
// unsent one (counted in dartserve_previews_dropped_total), so a slow reader loses previews and
// never results, and the queue stays bounded by 2 * num_images + 1 messages.
#ifndef DARTSERVE_SERVER_STREAM_H_
#define DARTSERVE_SERVER_STREAM_H_

#include <grpcpp/grpcpp.h>

#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "dartserve/v1/image_generator.grpc.pb.h"
#include "scheduler/scheduler.h"
#include "server/server_metrics.h"
#include "server/validation.h"
#include "server/work_queue.h"

namespace dartserve::server {

class GenerateCall;

// A reactor that ends a GenerateImage call at once with `status` (bad request, duplicate id,
// draining, ...), sending nothing else.
grpc::ServerWriteReactor<v1::GenerateImageResponse>* RejectCall(const absl::Status& status);

// Live calls by request id: duplicate detection and CancelGeneration. Thread-safe.
class CallRegistry {
 public:
  // False when `id` is already live.
  bool Add(const std::string& id, std::weak_ptr<GenerateCall> call);
  void Remove(const std::string& id, const GenerateCall* call);
  std::shared_ptr<GenerateCall> Find(const std::string& id);
  size_t size();

 private:
  std::mutex mu_;
  absl::flat_hash_map<std::string, std::weak_ptr<GenerateCall>> calls_;
};

struct CallContext {
  scheduler::Scheduler* scheduler = nullptr;
  const ModelInfo* model = nullptr;
  ModelMetrics* model_metrics = nullptr;
  ServerMetrics* metrics = nullptr;
  WorkQueue* pump = nullptr;
  CallRegistry* registry = nullptr;
};

class GenerateCall : public grpc::ServerWriteReactor<v1::GenerateImageResponse>,
                     public std::enable_shared_from_this<GenerateCall> {
 public:
  // Registers `request_id`, submits the images and returns the reactor for gRPC. Errors
  // (duplicate id, queue full, draining, ...) finish the call with that status and no Accepted.
  static grpc::ServerWriteReactor<v1::GenerateImageResponse>* Start(
      grpc::CallbackServerContext* context, const CallContext& deps, std::string request_id,
      const ValidatedRequest& request);

  // CancelGeneration: the call ends with CANCELLED and its images leave the scheduler.
  void Cancel(const std::string& why);

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

  // Events from the per-image sinks (scheduler worker thread).
  void ImageStarted(int index, absl::Duration queue_time);
  void ImageProgress(int index, int step, int total, const model::Pixels* preview);
  void ImageFinished(int index, absl::StatusOr<scheduler::Result> result);

  GenerateCall(const CallContext& deps, std::string request_id, const ValidatedRequest& request);

 private:
  struct Outgoing {
    enum Kind { kAccepted, kProgress, kResult } kind;
    int index = 0;
    int step = 0;
    int total = 0;
    std::optional<model::Pixels> pixels;  // preview or final image
    scheduler::Result result;             // kResult
    v1::Accepted accepted;                // kAccepted
  };

  std::string ImageId(int index) const;
  void CancelImages();
  // Under mu_: sets the final status (first one wins) and makes sure the pump will run.
  void SetFinalLocked(const absl::Status& status);
  void SchedulePumpLocked();
  // Under mu_: removes queued progress of image `index` (-1: of all images), counting previews.
  void DropProgressLocked(int index);
  void Pump();

  const CallContext deps_;
  const std::string request_id_;
  const ValidatedRequest request_;
  const absl::Time arrived_;
  std::shared_ptr<GenerateCall> self_;  // keeps the reactor alive until OnDone

  std::mutex mu_;
  std::deque<Outgoing> queue_;
  bool hold_ = true;        // until Accepted is queued: events wait, the pump does not run
  bool pumping_ = false;    // a pump job is posted or a write is in flight
  bool final_set_ = false;  // the call's outcome is known
  absl::Status final_status_;
  bool finished_ = false;  // Finish was called
  bool done_ = false;      // OnDone ran
  bool first_preview_sent_ = false;
  int images_done_ = 0;
  int submitted_ = 0;
  v1::GenerateImageResponse response_;  // the write in flight
};

}  // namespace dartserve::server

#endif  // DARTSERVE_SERVER_STREAM_H_

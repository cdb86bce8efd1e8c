// A generation request as the scheduler sees it, and the sink its events go to.
#ifndef DARTSERVE_SCHEDULER_REQUEST_H_
#define DARTSERVE_SCHEDULER_REQUEST_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/pixels.h"
#include "model/engine.h"

namespace dartserve::scheduler {

struct Result {
  Pixels image;
  uint64_t seed = 0;
  int steps = 0;
  absl::Duration queue_time;    // submit -> admitted
  absl::Duration compute_time;  // admitted -> final image rendered
};

// Receives one request's events. Every method is called on the scheduler's worker thread and must
// not block (a slow consumer must drop or queue, never stall the loop). Order: OnStarted at most
// once, then OnProgress per step, then OnFinished exactly once — also for requests that fail,
// are cancelled or expire before they start.
class RequestSink {
 public:
  virtual ~RequestSink() = default;
  virtual void OnStarted(absl::Duration queue_time) {}
  // `preview` is set on the steps the request's cadence asks for, null otherwise.
  virtual void OnProgress(int step, int total_steps, const Pixels* preview) {}
  virtual void OnFinished(absl::StatusOr<Result> result) = 0;
};

struct Request {
  std::string id;  // unique among the scheduler's live requests; used by Cancel
  model::GenerateParams params;
  int priority = 1;  // 0 is the most urgent; must be < SchedulerOptions::num_priorities
  absl::Time deadline = absl::InfiniteFuture();  // counts queue time too
  int preview_every = 0;                         // send a preview every n steps (0: none)
  int preview_max_side = 0;  // downscale previews to this longer side (0: full size)
  // How previews are made (latent models: the linear map or the full decoder).
  model::RenderKind preview_kind = model::RenderKind::kLinear;
  std::shared_ptr<RequestSink> sink;
};

}  // namespace dartserve::scheduler

#endif  // DARTSERVE_SCHEDULER_REQUEST_H_

// One GenerateImage call: submits the call's images to the scheduler and streams Accepted ->
// Progress -> Result back (docs/service.md), over a transport: a gRPC server-streaming reactor
// (GrpcGenerateCall, below) or an HTTP response (server/http_stream.h). The stream's logic lives
// here once; a transport only writes one message at a time and reports back.
//
// Threads and lifetime:
//  - the scheduler's worker calls the per-image sinks; they only queue events and never block;
//  - a WorkQueue thread ("pump") encodes PNGs and starts writes (WriteEvent), one write in flight
//    at a time;
//  - the transport's threads call WriteDone/ClientGone/Released (gRPC: OnWriteDone/OnCancel/
//    OnDone), which only update state and post to the pump: nothing blocks or encodes there;
//  - the sinks hold the call by shared_ptr, so they may outlive the transport's Released; after
//    it, events are dropped. EndCall is called exactly once, on every path.
// Backpressure: every step of every image gets its Progress message (the proto promises it), in
// step order, the last one before the image's Result. What waits per image is counters (steps
// reached, steps sent), at most one preview image and at most one result: a newer preview
// replaces an unsent one (counted in dartserve_previews_dropped_total, and its step still goes out
// without an image). So a slow reader loses previews, never steps or results, and a call holds at
// most 2 * num_images images. Images take turns (round robin), so one image's steps do not hold
// back another's result.
// Request ids: a call that ends early (CancelGeneration, the client, its deadline, a failed image,
// a failed submit) first cancels its images in the scheduler, which frees their ids there at once,
// and only then finishes and frees its own id in the registry; so once a client sees its stream
// end, a retry with the same id is accepted, and a call never cancels ids after it has finished
// (when a retry may hold them).
// Locks: each class's state is guarded by its mutex (ABSL_GUARDED_BY, checked by clang's
// -Wthread-safety in scripts/test.sh). Order: GenerateCall::mu_ before CallRegistry::mu_ (the pump
// frees the call's id under its lock) and the pump's queue; neither is held while calling into the
// scheduler.
#ifndef DARTSERVE_SERVER_STREAM_H_
#define DARTSERVE_SERVER_STREAM_H_

#include <grpcpp/grpcpp.h>

#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "dartserve/v1/image_generator.grpc.pb.h"
#include "scheduler/dispatcher.h"
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
  bool Add(const std::string& id, std::weak_ptr<GenerateCall> call) ABSL_LOCKS_EXCLUDED(mu_);
  void Remove(const std::string& id, const GenerateCall* call) ABSL_LOCKS_EXCLUDED(mu_);
  std::shared_ptr<GenerateCall> Find(const std::string& id) ABSL_LOCKS_EXCLUDED(mu_);
  size_t size() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::weak_ptr<GenerateCall>> calls_ ABSL_GUARDED_BY(mu_);
};

struct CallContext {
  scheduler::Dispatcher* scheduler = nullptr;  // the model's replicas
  absl::string_view model_name;                // outlives the call
  int progress_steps = 0;                      // Progress messages per image
  ModelMetrics* model_metrics = nullptr;
  ServerMetrics* metrics = nullptr;
  WorkQueue* pump = nullptr;
  CallRegistry* registry = nullptr;
};

// What a GenerateImage call needs once the service has checked and resolved its request.
struct PreparedCall {
  CallContext deps;
  std::string request_id;  // never empty: the server picks one when the client did not
  ValidatedRequest request;
};

// The transport-neutral call. A transport derives from it, implements WriteEvent and EndCall,
// and reports writes, a vanished client and its own end through WriteDone, ClientGone and
// Released. Create it with std::make_shared (the call hands out shared_ptrs to itself).
class GenerateCall : public std::enable_shared_from_this<GenerateCall> {
 public:
  explicit GenerateCall(const PreparedCall& prepared);
  virtual ~GenerateCall() = default;

  // Registers the request id and submits the images (each with `deadline`). ALREADY_EXISTS
  // (counted in the metrics) when the id is live: then nothing started and the transport ends
  // the call on its own. Otherwise the call runs: it calls WriteEvent for each message and
  // EndCall once (an error before Accepted, such as a full queue, is an EndCall with no
  // WriteEvent before it), and stays alive at least until Released.
  absl::Status Start(absl::Time deadline) ABSL_LOCKS_EXCLUDED(mu_);

  // CancelGeneration: the call ends with CANCELLED, its images are cancelled in the scheduler
  // (their ids free at once), and unsent messages are dropped. Returns whether it took effect:
  // false when the call had already finished (its status sent, or about to be: a call found in
  // the registry can finish before this runs) or was already ending with another error (the
  // client gone, its deadline, a failed image); then it changes nothing the client will see.
  bool Cancel(const std::string& why) ABSL_LOCKS_EXCLUDED(mu_);

  // Transport -> call. Any thread; none blocks.
  // The write WriteEvent started has ended; !ok: the client can take nothing more (the call
  // ends with CANCELLED).
  void WriteDone(bool ok) ABSL_LOCKS_EXCLUDED(mu_);
  // The client went away or its deadline passed: as Cancel.
  void ClientGone() ABSL_LOCKS_EXCLUDED(mu_);
  // The transport is done with the call (after EndCall, or when the client is gone for good):
  // later events are dropped. Called exactly once, after Start succeeded.
  void Released() ABSL_LOCKS_EXCLUDED(mu_);

  // Events from the per-image sinks (scheduler worker thread).
  void ImageStarted(int index, absl::Duration queue_time);
  void ImageProgress(int index, int step, int total, const Pixels* preview)
      ABSL_LOCKS_EXCLUDED(mu_);
  void ImageFinished(int index, absl::StatusOr<scheduler::Result> result) ABSL_LOCKS_EXCLUDED(mu_);

  const std::string& request_id() const { return request_id_; }

 protected:
  // Call -> transport, from a pump thread, never under the call's lock. WriteEvent starts sending
  // `event` (valid until WriteDone) and must not call WriteDone itself before returning; EndCall
  // ends the call with `status`; no WriteEvent follows it.
  virtual void WriteEvent(const v1::GenerateImageResponse* event) = 0;
  virtual void EndCall(const absl::Status& status) = 0;

 private:
  // The next message, as the pump takes it out of the call's state.
  struct Outgoing {
    enum Kind { kAccepted, kProgress, kResult } kind;
    int index = 0;
    int step = 0;
    int total = 0;
    absl::Time step_done;          // kProgress: when the scheduler reported step `step`
    std::optional<Pixels> pixels;  // preview or final image
    scheduler::Result result;      // kResult
    v1::Accepted accepted;         // kAccepted
  };
  // What image `index` still has to send.
  struct ImageOutput {
    int total = 0;                      // its progress steps, as the scheduler reports them
    int reached = 0;                    // the last step the scheduler reported
    int sent = 0;                       // Progress messages taken by the pump: steps 1 .. sent
    std::vector<absl::Time> step_done;  // [s - 1]: when the scheduler reported step s
    std::optional<Pixels> preview;      // the newest unsent preview, of step `preview_step`
    int preview_step = 0;
    std::optional<scheduler::Result> result;  // sent once every step has been
    bool ready = false;                       // listed in ready_
  };

  std::string ImageId(int index) const;
  // Cancels the submitted images in the scheduler (never under mu_: see the file comment).
  void CancelImages() ABSL_LOCKS_EXCLUDED(mu_);
  // Ends the call with `status` unless it has finished or already failed (then only drops what
  // `keep_results` does not keep). Pending progress is dropped, and unsent results and Accepted
  // too unless `keep_results`. Returns true when the caller must call ReleaseImages once mu_ is
  // released; until it has, the call does not finish.
  bool AbortLocked(const absl::Status& status, bool keep_results)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // AbortLocked, then ReleaseImages when it asks for it. Returns AbortLocked's result.
  bool Abort(const absl::Status& status, bool keep_results) ABSL_LOCKS_EXCLUDED(mu_);
  // After AbortLocked returned true: cancels the images, then lets the pump finish the call.
  void ReleaseImages() ABSL_LOCKS_EXCLUDED(mu_);
  void SchedulePumpLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Puts image `index` at the end of ready_ if it has something to send and is not listed yet.
  void MarkReadyLocked(int index) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool HasOutputLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return accepted_pending_ || !ready_.empty();
  }
  // Takes the next message: Accepted first, then the first ready image's next Progress or Result.
  // Requires HasOutputLocked().
  Outgoing TakeNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops every image's pending progress and preview (and its result unless `keep_results`).
  void DropOutputLocked(bool keep_results) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The pump job: sends the next message, or finishes the call once nothing is left to send, the
  // outcome is known and no image release is under way.
  void Pump() ABSL_LOCKS_EXCLUDED(mu_);
  // Pump only: fill response_ from `item`, encoding its PNG. A preview that cannot be encoded goes
  // without its image; a result image that cannot be encoded is an error (the call fails).
  void FillProgress(Outgoing& item);
  absl::Status FillResult(Outgoing& item);

  const CallContext deps_;
  const std::string request_id_;
  const ValidatedRequest request_;
  const absl::Time arrived_;

  absl::Mutex mu_;
  std::shared_ptr<GenerateCall> self_ ABSL_GUARDED_BY(mu_);  // keeps the call alive to Released
  bool accepted_pending_ ABSL_GUARDED_BY(mu_) = false;
  v1::Accepted accepted_ ABSL_GUARDED_BY(mu_);
  std::vector<ImageOutput> images_ ABSL_GUARDED_BY(mu_);  // one per requested image
  std::deque<int> ready_ ABSL_GUARDED_BY(mu_);            // images with something to send, in turn
  // Until Start has submitted the images: events wait, the pump does not run.
  bool hold_ ABSL_GUARDED_BY(mu_) = true;
  int releasing_ ABSL_GUARDED_BY(mu_) = 0;       // ReleaseImages calls still to come
  bool pumping_ ABSL_GUARDED_BY(mu_) = false;    // a pump job is posted or a write is in flight
  bool final_set_ ABSL_GUARDED_BY(mu_) = false;  // the call's outcome is known
  absl::Status final_status_ ABSL_GUARDED_BY(mu_);
  bool finished_ ABSL_GUARDED_BY(mu_) = false;  // EndCall was called
  bool done_ ABSL_GUARDED_BY(mu_) = false;      // Released ran
  int images_done_ ABSL_GUARDED_BY(mu_) = 0;
  int submitted_ ABSL_GUARDED_BY(mu_) = 0;
  // Pump only: `pumping_` lets one pump job or write run at a time, and mu_ orders them.
  bool first_preview_sent_ = false;
  v1::GenerateImageResponse response_;  // the write in flight
};

// The gRPC transport: a server-streaming reactor over a GenerateCall. Starts `prepared` with the
// context's deadline and returns the reactor gRPC runs; a call that cannot start (duplicate id)
// is a reactor that only finishes with that status.
grpc::ServerWriteReactor<v1::GenerateImageResponse>* StartGrpcCall(
    grpc::CallbackServerContext* context, const PreparedCall& prepared);

}  // namespace dartserve::server

#endif  // DARTSERVE_SERVER_STREAM_H_

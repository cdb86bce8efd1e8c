#include "server/stream.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/png.h"
#include "server/grpc_status.h"

namespace dartserve::server {
namespace {

// A scheduler request id for image `index` of a call; '#' cannot occur in client ids.
constexpr char kImageSeparator = '#';

class ImageSink : public scheduler::RequestSink {
 public:
  ImageSink(std::shared_ptr<GenerateCall> call, int index)
      : call_(std::move(call)), index_(index) {}
  void OnStarted(absl::Duration queue_time) override { call_->ImageStarted(index_, queue_time); }
  void OnProgress(int step, int total, const Pixels* preview) override {
    call_->ImageProgress(index_, step, total, preview);
  }
  void OnFinished(absl::StatusOr<scheduler::Result> result) override {
    call_->ImageFinished(index_, std::move(result));
  }

 private:
  const std::shared_ptr<GenerateCall> call_;
  const int index_;
};

absl::Time Deadline(const grpc::CallbackServerContext* context) {
  const auto deadline = context->deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(deadline);
}

// Finishes a call that never started.
class RejectedCall : public grpc::ServerWriteReactor<v1::GenerateImageResponse> {
 public:
  explicit RejectedCall(const absl::Status& status) { Finish(ToGrpcStatus(status)); }
  void OnDone() override { delete this; }
};

}  // namespace

grpc::ServerWriteReactor<v1::GenerateImageResponse>* RejectCall(const absl::Status& status) {
  return new RejectedCall(status);
}

bool CallRegistry::Add(const std::string& id, std::weak_ptr<GenerateCall> call) {
  absl::MutexLock lock(&mu_);
  auto [it, inserted] = calls_.try_emplace(id, call);
  if (inserted) return true;
  if (!it->second.expired()) return false;
  it->second = std::move(call);
  return true;
}

void CallRegistry::Remove(const std::string& id, const GenerateCall* call) {
  absl::MutexLock lock(&mu_);
  auto it = calls_.find(id);
  if (it == calls_.end()) return;
  std::shared_ptr<GenerateCall> live = it->second.lock();
  if (live == nullptr || live.get() == call) calls_.erase(it);
}

std::shared_ptr<GenerateCall> CallRegistry::Find(const std::string& id) {
  absl::MutexLock lock(&mu_);
  auto it = calls_.find(id);
  return it == calls_.end() ? nullptr : it->second.lock();
}

size_t CallRegistry::size() {
  absl::MutexLock lock(&mu_);
  return calls_.size();
}

GenerateCall::GenerateCall(const PreparedCall& prepared)
    : deps_(prepared.deps),
      request_id_(prepared.request_id),
      request_(prepared.request),
      arrived_(absl::Now()),
      images_(static_cast<size_t>(prepared.request.num_images)) {}

absl::Status GenerateCall::Start(absl::Time deadline) {
  if (!deps_.registry->Add(request_id_, weak_from_this())) {
    const absl::Status status = absl::AlreadyExistsError(
        absl::StrCat("request_id: ", QuoteClientValue(request_id_), " is already in flight"));
    deps_.metrics->RecordRequest(std::string(deps_.model_name), status, 0);
    return status;
  }
  {
    absl::MutexLock lock(&mu_);
    self_ = shared_from_this();
  }

  const int queued_before = deps_.scheduler->stats().queued;
  absl::Status submit_status;
  for (int i = 0; i < request_.num_images && submit_status.ok(); ++i) {
    {
      absl::MutexLock lock(&mu_);
      if (final_set_ && !final_status_.ok()) break;  // cancelled meanwhile
    }
    auto r = std::make_unique<scheduler::Request>();
    r->id = ImageId(i);
    r->params = request_.params;
    r->params.seed = request_.params.seed + static_cast<uint64_t>(i);
    r->priority = request_.priority;
    r->deadline = deadline;
    r->preview_every = request_.preview_every;
    r->preview_max_side = request_.preview_max_side;
    r->preview_kind = request_.preview_kind;
    r->sink = std::make_shared<ImageSink>(shared_from_this(), i);
    submit_status = deps_.scheduler->Submit(r);
    if (submit_status.ok()) {
      absl::MutexLock lock(&mu_);
      ++submitted_;
    }
  }

  bool release = false;
  {
    absl::MutexLock lock(&mu_);
    // A failed submit ends the call with that error alone (nothing was sent yet).
    if (!submit_status.ok()) release = AbortLocked(submit_status, /*keep_results=*/false);
    if (final_set_ && !final_status_.ok()) {
      // Ended before it was accepted (a failed submit, a cancel or a failed image meanwhile): no
      // Accepted, and the images submitted so far, including any after the cancel, leave the
      // scheduler before the call ends.
      if (!release) {
        ++releasing_;
        release = true;
      }
    } else {
      v1::Accepted& accepted = accepted_;
      accepted.set_request_id(request_id_);
      accepted.set_model(std::string(deps_.model_name));
      accepted.set_seed(request_.params.seed);
      accepted.set_queue_position(static_cast<uint32_t>(queued_before));
      accepted.set_num_images(static_cast<uint32_t>(request_.num_images));
      accepted.set_total_steps(static_cast<uint32_t>(deps_.progress_steps));
      accepted_pending_ = true;
    }
    hold_ = false;
    SchedulePumpLocked();
  }
  if (release) ReleaseImages();
  return absl::OkStatus();
}

std::string GenerateCall::ImageId(int index) const {
  return absl::StrCat(request_id_, std::string(1, kImageSeparator), index);
}

void GenerateCall::CancelImages() {
  int submitted;
  {
    absl::MutexLock lock(&mu_);
    submitted = submitted_;
  }
  for (int i = 0; i < submitted; ++i) deps_.scheduler->Cancel(ImageId(i));
}

bool GenerateCall::Cancel(const std::string& why) {
  // AbortLocked decides under mu_, where the pump also decides to finish: exactly one of them
  // sets the call's outcome, so a true here means the client sees CANCELLED.
  return Abort(absl::CancelledError(why), /*keep_results=*/false);
}

bool GenerateCall::AbortLocked(const absl::Status& status, bool keep_results) {
  if (finished_ || done_) return false;
  if (!final_set_ || final_status_.ok()) {
    final_set_ = true;
    final_status_ = status;
    DropOutputLocked(keep_results);
    ++releasing_;
    SchedulePumpLocked();
    return true;
  }
  // Already failed: its images are being (or have been) cancelled by the first failure.
  if (!keep_results) DropOutputLocked(/*keep_results=*/false);
  SchedulePumpLocked();
  return false;
}

bool GenerateCall::Abort(const absl::Status& status, bool keep_results) {
  bool release;
  {
    absl::MutexLock lock(&mu_);
    release = AbortLocked(status, keep_results);
  }
  if (release) ReleaseImages();
  return release;
}

void GenerateCall::ReleaseImages() {
  CancelImages();
  absl::MutexLock lock(&mu_);
  --releasing_;
  SchedulePumpLocked();
}

void GenerateCall::SchedulePumpLocked() {
  if (hold_ || pumping_ || finished_ || done_) return;
  if (!HasOutputLocked() && !final_set_) return;
  pumping_ = true;
  // The job holds a reference: the reactor is not freed while a pump is pending.
  deps_.pump->Post([call = shared_from_this()] { call->Pump(); });
}

void GenerateCall::MarkReadyLocked(int index) {
  ImageOutput& image = images_[index];
  if (image.ready || (image.sent >= image.reached && !image.result.has_value())) return;
  image.ready = true;
  ready_.push_back(index);
}

GenerateCall::Outgoing GenerateCall::TakeNextLocked() {
  if (accepted_pending_) {
    accepted_pending_ = false;
    return Outgoing{.kind = Outgoing::kAccepted, .accepted = std::move(accepted_)};
  }
  const int index = ready_.front();
  ready_.pop_front();
  ImageOutput& image = images_[index];
  image.ready = false;
  Outgoing out{.index = index};
  if (image.sent < image.reached) {
    out.kind = Outgoing::kProgress;
    out.step = ++image.sent;
    out.total = image.total;
    out.step_done = image.step_done[out.step - 1];
    if (image.preview.has_value() && image.preview_step == out.step) {
      out.pixels = std::move(image.preview);
      image.preview.reset();
    }
  } else {
    // Every step was sent: the result comes last.
    out.kind = Outgoing::kResult;
    out.result = *std::move(image.result);
    image.result.reset();
    out.pixels = std::move(out.result.image);
  }
  // Its next message waits for the other images' turns.
  MarkReadyLocked(index);
  return out;
}

void GenerateCall::DropOutputLocked(bool keep_results) {
  if (!keep_results) accepted_pending_ = false;
  for (ImageOutput& image : images_) {
    image.reached = image.sent;
    image.preview.reset();
    if (!keep_results) image.result.reset();
  }
  // Only images with a result still have something to send.
  std::deque<int> still_ready;
  for (const int index : ready_) {
    if (images_[index].result.has_value()) {
      still_ready.push_back(index);
    } else {
      images_[index].ready = false;
    }
  }
  ready_ = std::move(still_ready);
}

void GenerateCall::ImageStarted(int index, absl::Duration queue_time) {
  deps_.model_metrics->queue_wait.Observe(absl::ToDoubleSeconds(queue_time));
}

void GenerateCall::ImageProgress(int index, int step, int total, const Pixels* preview) {
  absl::MutexLock lock(&mu_);
  if (final_set_ || done_) return;
  ImageOutput& image = images_[index];
  image.total = total;
  image.reached = std::max(image.reached, step);
  if (image.step_done.size() < static_cast<size_t>(step)) image.step_done.resize(step, absl::Now());
  if (preview != nullptr) {
    // One preview per image waits at most: the newest. The replaced one's step still goes out,
    // without an image.
    if (image.preview.has_value()) deps_.model_metrics->previews_dropped.Increment();
    image.preview = *preview;
    image.preview_step = step;
  }
  MarkReadyLocked(index);
  SchedulePumpLocked();
}

void GenerateCall::ImageFinished(int index, absl::StatusOr<scheduler::Result> result) {
  if (!result.ok()) {
    // Results already waiting still go out; pending progress does not; the other images are
    // cancelled.
    Abort(result.status(), /*keep_results=*/true);
    return;
  }
  absl::MutexLock lock(&mu_);
  if (final_set_) return;
  images_[index].result = *std::move(result);
  MarkReadyLocked(index);
  if (++images_done_ == request_.num_images) {
    final_set_ = true;
    final_status_ = absl::OkStatus();
  }
  SchedulePumpLocked();
}

void GenerateCall::Pump() {
  Outgoing item;
  std::optional<absl::Status> finish;
  {
    absl::MutexLock lock(&mu_);
    if (done_ || finished_) {
      pumping_ = false;
      return;
    }
    if (!HasOutputLocked()) {
      if (!final_set_ || releasing_ > 0) {
        pumping_ = false;
        return;
      }
      finished_ = true;  // pumping_ stays set: nothing runs after Finish
      finish = final_status_;
      // The id is free again before the client can see the status (a retry must not collide).
      deps_.registry->Remove(request_id_, this);
    } else {
      item = TakeNextLocked();
    }
  }
  if (finish.has_value()) {
    deps_.metrics->RecordRequest(std::string(deps_.model_name), *finish,
                                 absl::ToDoubleSeconds(absl::Now() - arrived_));
    EndCall(*finish);
    return;
  }

  response_.Clear();
  absl::Status filled;
  switch (item.kind) {
    case Outgoing::kAccepted:
      *response_.mutable_accepted() = std::move(item.accepted);
      break;
    case Outgoing::kProgress:
      FillProgress(item);
      break;
    case Outgoing::kResult:
      filled = FillResult(item);
      break;
  }
  if (!filled.ok()) {
    bool release;
    {
      absl::MutexLock lock(&mu_);
      pumping_ = false;
      release = AbortLocked(filled, /*keep_results=*/false);
    }
    if (release) ReleaseImages();
    return;
  }
  WriteEvent(&response_);
}

void GenerateCall::FillProgress(Outgoing& item) {
  v1::Progress* p = response_.mutable_progress();
  p->set_image_index(static_cast<uint32_t>(item.index));
  p->set_step(static_cast<uint32_t>(item.step));
  p->set_total_steps(static_cast<uint32_t>(item.total));
  p->set_step_done_unix_seconds(static_cast<double>(absl::ToUnixMicros(item.step_done)) / 1e6);
  if (!item.pixels.has_value()) return;
  const absl::Time t0 = absl::Now();
  absl::StatusOr<std::string> png = EncodePng(*item.pixels);
  deps_.model_metrics->png_encode.Observe(absl::ToDoubleSeconds(absl::Now() - t0));
  if (!png.ok()) return;
  p->set_preview_png(*std::move(png));
  deps_.model_metrics->previews_sent.Increment();
  if (!first_preview_sent_) {
    first_preview_sent_ = true;
    deps_.model_metrics->time_to_first_preview.Observe(
        absl::ToDoubleSeconds(absl::Now() - arrived_));
  }
}

absl::Status GenerateCall::FillResult(Outgoing& item) {
  const absl::Time t0 = absl::Now();
  absl::StatusOr<std::string> png = EncodePng(*item.pixels);
  const double encode = absl::ToDoubleSeconds(absl::Now() - t0);
  deps_.model_metrics->png_encode.Observe(encode);
  if (!png.ok()) {
    return absl::InternalError(absl::StrCat("encoding PNG: ", png.status().message()));
  }
  deps_.model_metrics->images.Increment();
  v1::Result* r = response_.mutable_result();
  r->set_image_index(static_cast<uint32_t>(item.index));
  r->set_png(*std::move(png));
  r->set_width(static_cast<uint32_t>(item.pixels->width));
  r->set_height(static_cast<uint32_t>(item.pixels->height));
  r->set_seed(item.result.seed);
  r->mutable_timings()->set_queue_seconds(absl::ToDoubleSeconds(item.result.queue_time));
  r->mutable_timings()->set_compute_seconds(absl::ToDoubleSeconds(item.result.compute_time));
  r->mutable_timings()->set_encode_seconds(encode);
  return absl::OkStatus();
}

void GenerateCall::WriteDone(bool ok) {
  bool release = false;
  {
    absl::MutexLock lock(&mu_);
    pumping_ = false;
    if (ok) {
      SchedulePumpLocked();
    } else {
      // The stream is broken (client gone or call cancelled): nothing more can be delivered.
      release = AbortLocked(absl::CancelledError("the client stopped reading"),
                            /*keep_results=*/false);
    }
  }
  if (release) ReleaseImages();
}

void GenerateCall::ClientGone() {
  Abort(absl::CancelledError("the client cancelled the call or its deadline passed"),
        /*keep_results=*/false);
}

void GenerateCall::Released() {
  std::shared_ptr<GenerateCall> self;
  {
    absl::MutexLock lock(&mu_);
    done_ = true;
    DropOutputLocked(/*keep_results=*/false);
    self = std::move(self_);
  }
  deps_.registry->Remove(request_id_, this);
  // `self` goes out of scope here; sinks still held by the scheduler keep the object alive.
}

namespace {

// gRPC's reactor callbacks forwarded to the call, and the call's writes to gRPC.
class GrpcGenerateCall final : public GenerateCall,
                               public grpc::ServerWriteReactor<v1::GenerateImageResponse> {
 public:
  using GenerateCall::GenerateCall;

  void OnWriteDone(bool ok) override { WriteDone(ok); }
  void OnCancel() override { ClientGone(); }
  void OnDone() override { Released(); }

 private:
  void WriteEvent(const v1::GenerateImageResponse* event) override { StartWrite(event); }
  void EndCall(const absl::Status& status) override { Finish(ToGrpcStatus(status)); }
};

}  // namespace

grpc::ServerWriteReactor<v1::GenerateImageResponse>* StartGrpcCall(
    grpc::CallbackServerContext* context, const PreparedCall& prepared) {
  auto call = std::make_shared<GrpcGenerateCall>(prepared);
  if (absl::Status s = call->Start(Deadline(context)); !s.ok()) return RejectCall(s);
  return call.get();  // alive until OnDone (the call holds itself)
}

}  // namespace dartserve::server

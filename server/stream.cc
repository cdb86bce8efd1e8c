#include "server/stream.h"

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

GenerateCall::GenerateCall(const CallContext& deps, std::string request_id,
                           const ValidatedRequest& request)
    : deps_(deps), request_id_(std::move(request_id)), request_(request), arrived_(absl::Now()) {}

grpc::ServerWriteReactor<v1::GenerateImageResponse>* GenerateCall::Start(
    grpc::CallbackServerContext* context, const CallContext& deps, std::string request_id,
    const ValidatedRequest& request) {
  auto call = std::make_shared<GenerateCall>(deps, std::move(request_id), request);
  if (!deps.registry->Add(call->request_id_, call)) {
    const absl::Status status = absl::AlreadyExistsError(
        absl::StrCat("request_id: '", call->request_id_, "' is already in flight"));
    deps.metrics->RecordRequest(std::string(deps.model_name), status, 0);
    return RejectCall(status);
  }
  {
    absl::MutexLock lock(&call->mu_);
    call->self_ = call;
  }

  const int queued_before = deps.scheduler->stats().queued;
  absl::Status submit_status;
  for (int i = 0; i < request.num_images && submit_status.ok(); ++i) {
    auto r = std::make_unique<scheduler::Request>();
    r->id = call->ImageId(i);
    r->params = request.params;
    r->params.seed = request.params.seed + static_cast<uint64_t>(i);
    r->priority = request.priority;
    r->deadline = Deadline(context);
    r->preview_every = request.preview_every;
    r->preview_max_side = request.preview_max_side;
    r->preview_kind = request.preview_kind;
    r->sink = std::make_shared<ImageSink>(call, i);
    submit_status = deps.scheduler->Submit(r);
    if (submit_status.ok()) {
      absl::MutexLock lock(&call->mu_);
      ++call->submitted_;
    }
  }

  absl::MutexLock lock(&call->mu_);
  if (!submit_status.ok()) {
    // Nothing was sent yet: the call ends with the submit error alone.
    call->queue_.clear();
    call->SetFinalLocked(submit_status);
    call->hold_ = false;
    call->SchedulePumpLocked();
    deps.pump->Post([call] { call->CancelImages(); });
    return call.get();
  }
  Outgoing accepted{.kind = Outgoing::kAccepted};
  accepted.accepted.set_request_id(call->request_id_);
  accepted.accepted.set_model(std::string(deps.model_name));
  accepted.accepted.set_seed(request.params.seed);
  accepted.accepted.set_queue_position(static_cast<uint32_t>(queued_before));
  accepted.accepted.set_num_images(static_cast<uint32_t>(request.num_images));
  accepted.accepted.set_total_steps(static_cast<uint32_t>(deps.progress_steps));
  call->queue_.push_front(std::move(accepted));
  call->hold_ = false;
  call->SchedulePumpLocked();
  return call.get();
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

void GenerateCall::Cancel(const std::string& why) {
  {
    absl::MutexLock lock(&mu_);
    queue_.clear();
    SetFinalLocked(absl::CancelledError(why));
  }
  CancelImages();
}

void GenerateCall::SetFinalLocked(const absl::Status& status) {
  if (!final_set_) {
    final_set_ = true;
    final_status_ = status;
  }
  SchedulePumpLocked();
}

void GenerateCall::SchedulePumpLocked() {
  if (hold_ || pumping_ || finished_ || done_) return;
  if (queue_.empty() && !final_set_) return;
  pumping_ = true;
  // The job holds a reference: the reactor is not freed while a pump is pending.
  deps_.pump->Post([call = shared_from_this()] { call->Pump(); });
}

void GenerateCall::DropProgressLocked(int index) {
  std::erase_if(queue_, [&](const Outgoing& o) {
    if (o.kind != Outgoing::kProgress || (index >= 0 && o.index != index)) return false;
    if (o.pixels.has_value()) deps_.model_metrics->previews_dropped.Increment();
    return true;
  });
}

void GenerateCall::ImageStarted(int index, absl::Duration queue_time) {
  deps_.model_metrics->queue_wait.Observe(absl::ToDoubleSeconds(queue_time));
}

void GenerateCall::ImageProgress(int index, int step, int total, const Pixels* preview) {
  absl::MutexLock lock(&mu_);
  if (final_set_ || done_) return;
  for (Outgoing& o : queue_) {
    if (o.kind != Outgoing::kProgress || o.index != index) continue;
    // One progress per image waits at most: keep the newest preview.
    if (preview != nullptr) {
      if (o.pixels.has_value()) deps_.model_metrics->previews_dropped.Increment();
      o.pixels = *preview;
      o.step = step;
    } else if (!o.pixels.has_value()) {
      o.step = step;
    }
    return;
  }
  Outgoing o{.kind = Outgoing::kProgress, .index = index, .step = step, .total = total};
  if (preview != nullptr) o.pixels = *preview;
  queue_.push_back(std::move(o));
  SchedulePumpLocked();
}

void GenerateCall::ImageFinished(int index, absl::StatusOr<scheduler::Result> result) {
  bool cancel_siblings = false;
  {
    absl::MutexLock lock(&mu_);
    if (!result.ok()) {
      if (!final_set_) {
        // Results already queued still go out; pending progress does not.
        DropProgressLocked(-1);
        cancel_siblings = true;
      }
      SetFinalLocked(result.status());
    } else if (!final_set_) {
      // The final image replaces any progress of this image still waiting.
      DropProgressLocked(index);
      Outgoing o{.kind = Outgoing::kResult, .index = index};
      o.pixels = std::move(result->image);
      o.result = *std::move(result);
      queue_.push_back(std::move(o));
      if (++images_done_ == request_.num_images) SetFinalLocked(absl::OkStatus());
      SchedulePumpLocked();
    }
  }
  if (cancel_siblings) CancelImages();
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
    if (queue_.empty()) {
      if (!final_set_) {
        pumping_ = false;
        return;
      }
      finished_ = true;  // pumping_ stays set: nothing runs after Finish
      finish = final_status_;
      // The id is free again before the client can see the status (a retry must not collide).
      deps_.registry->Remove(request_id_, this);
    } else {
      item = std::move(queue_.front());
      queue_.pop_front();
    }
  }
  if (finish.has_value()) {
    deps_.metrics->RecordRequest(std::string(deps_.model_name), *finish,
                                 absl::ToDoubleSeconds(absl::Now() - arrived_));
    Finish(ToGrpcStatus(*finish));
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
    absl::MutexLock lock(&mu_);
    SetFinalLocked(filled);
    queue_.clear();
    pumping_ = false;
    SchedulePumpLocked();
    return;
  }
  StartWrite(&response_);
}

void GenerateCall::FillProgress(Outgoing& item) {
  v1::Progress* p = response_.mutable_progress();
  p->set_image_index(static_cast<uint32_t>(item.index));
  p->set_step(static_cast<uint32_t>(item.step));
  p->set_total_steps(static_cast<uint32_t>(item.total));
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

void GenerateCall::OnWriteDone(bool ok) {
  absl::MutexLock lock(&mu_);
  if (!ok) {
    // The stream is broken (client gone or call cancelled): nothing more can be delivered.
    queue_.clear();
    if (!final_set_) {
      final_set_ = true;
      final_status_ = absl::CancelledError("the client stopped reading");
    }
  }
  pumping_ = false;
  SchedulePumpLocked();
  if (!ok) deps_.pump->Post([call = shared_from_this()] { call->CancelImages(); });
}

void GenerateCall::OnCancel() { Cancel("the client cancelled the call or its deadline passed"); }

void GenerateCall::OnDone() {
  std::shared_ptr<GenerateCall> self;
  {
    absl::MutexLock lock(&mu_);
    done_ = true;
    queue_.clear();
    self = std::move(self_);
  }
  deps_.registry->Remove(request_id_, this);
  // `self` goes out of scope here; sinks still held by the scheduler keep the object alive.
}

}  // namespace dartserve::server

#include "server/service.h"

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "server/grpc_status.h"

namespace dartserve::server {
namespace {

grpc::ServerUnaryReactor* Reply(grpc::CallbackServerContext* context, const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

// Compares without an early exit, so the time taken does not reveal how much of a token matched.
bool ConstantTimeEquals(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= a[i] ^ b[i % std::max<size_t>(1, b.size())];
  return diff == 0;
}

// The call's "authorization" metadata, if any.
std::optional<absl::string_view> Authorization(const grpc::CallbackServerContext& context) {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) return std::nullopt;
  return absl::string_view(it->second.data(), it->second.size());
}

}  // namespace

ImageGeneratorService::ImageGeneratorService(std::vector<ServedModel*> models,
                                             ServerMetrics* metrics, WorkQueue* pump,
                                             ServiceOptions options)
    : models_(std::move(models)),
      metrics_(metrics),
      pump_(pump),
      options_(std::move(options)),
      started_(absl::Now()) {}

absl::Status ImageGeneratorService::Authenticate(
    std::optional<absl::string_view> authorization) const {
  if (options_.auth_token.empty()) return absl::OkStatus();
  if (!authorization.has_value()) {
    return absl::UnauthenticatedError("authorization: a bearer token is required");
  }
  if (!ConstantTimeEquals(std::string(*authorization),
                          absl::StrCat("Bearer ", options_.auth_token))) {
    return absl::UnauthenticatedError("authorization: the bearer token is not valid");
  }
  return absl::OkStatus();
}

ServedModel* ImageGeneratorService::FindModel(const std::string& name) const {
  if (name.empty()) return models_.front();
  for (ServedModel* m : models_) {
    if (m->name == name) return m;
  }
  return nullptr;
}

absl::StatusOr<PreparedCall> ImageGeneratorService::PrepareGenerate(
    std::optional<absl::string_view> authorization, const v1::GenerateImageRequest& request) {
  ServedModel* model = FindModel(request.model());
  const std::string model_label = model != nullptr ? model->name : "unknown";
  auto reject = [&](const absl::Status& status) {
    metrics_->RecordRequest(model_label, status, 0);
    return status;
  };
  if (absl::Status s = Authenticate(authorization); !s.ok()) return reject(s);
  if (draining_) return reject(absl::UnavailableError("server is shutting down"));
  if (model == nullptr) {
    std::vector<std::string> names;
    for (const ServedModel* m : models_) names.push_back(m->name);
    return reject(
        absl::NotFoundError(absl::StrCat("model: unknown model ", QuoteClientValue(request.model()),
                                         "; served: ", absl::StrJoin(names, ", "))));
  }
  if (absl::Status s = ValidateRequestId(request.request_id()); !s.ok()) return reject(s);
  absl::StatusOr<ValidatedRequest> validated = ValidateGenerateRequest(
      request, model->info, model->name, absl::Uniform<uint64_t>(absl::BitGen()));
  if (!validated.ok()) return reject(validated.status());
  // What only the model can check (a prompt's length in tokens). The scheduler repeats it; doing
  // it here rejects the call before anything is accepted.
  if (absl::Status s = model->engines.front()->Validate(validated->params); !s.ok()) {
    return reject(s);
  }

  std::string id = request.request_id();
  if (id.empty()) id = absl::StrCat("req-", absl::ToUnixMicros(started_), "-", next_id_++);
  return PreparedCall{.deps = {.scheduler = &model->dispatcher,
                               .model_name = model->name,
                               .progress_steps = model->info.progress_steps,
                               .model_metrics = &metrics_->ForModel(model->name),
                               .metrics = metrics_,
                               .pump = pump_,
                               .registry = &calls_},
                      .request_id = std::move(id),
                      .request = *std::move(validated)};
}

absl::Status ImageGeneratorService::Cancel(const std::string& request_id) {
  if (request_id.empty()) return absl::InvalidArgumentError("request_id: must not be empty");
  if (absl::Status s = ValidateRequestId(request_id); !s.ok()) return s;
  std::shared_ptr<GenerateCall> call = calls_.Find(request_id);
  if (call == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("request_id: no request ", QuoteClientValue(request_id), " in flight"));
  }
  // The call may have finished since Find (its last write done, its id about to be freed): then
  // the client gets every image and OK, and saying OK here would claim a cancel that never was.
  if (!call->Cancel("cancelled by CancelGeneration")) {
    return absl::NotFoundError(
        absl::StrCat("request_id: request ", QuoteClientValue(request_id), " has already ended"));
  }
  return absl::OkStatus();
}

void ImageGeneratorService::DescribeModels(v1::ListModelsResponse& response) const {
  for (const ServedModel* m : models_) {
    v1::ModelInfo* info = response.add_models();
    info->set_name(m->name);
    info->set_conditioning(std::string(model::ConditioningName(m->info.conditioning)));
    info->set_num_classes(static_cast<uint32_t>(m->info.num_classes));
    for (const std::string& n : m->info.class_names) info->add_class_names(n);
    info->set_image_size(static_cast<uint32_t>(m->info.image_size));
    info->set_channels(static_cast<uint32_t>(m->info.channels));
    info->set_steps(static_cast<uint32_t>(m->info.denoising_steps));
    info->set_progress_steps(static_cast<uint32_t>(m->info.progress_steps));
    info->set_latent(m->info.latent);
    info->set_default_flow_steps(static_cast<uint32_t>(m->info.default_flow_steps));
    if (m->info.default_flow_steps > 0) {
      info->set_max_flow_steps(static_cast<uint32_t>(m->info.limits.max_flow_steps));
    }
    info->set_default_guidance_scale(m->info.default_guidance);
    info->set_is_default(m == models_.front());
    info->set_parameters(static_cast<uint64_t>(m->info.parameters));
    for (const std::string& p : m->info.example_prompts) info->add_example_prompts(p);
  }
}

void ImageGeneratorService::DescribeServer(v1::GetServerInfoResponse& response) const {
  response.set_version(options_.version);
  response.set_uptime_seconds(absl::ToDoubleSeconds(absl::Now() - started_));
  uint32_t waiting = 0, running = 0;
  for (const ServedModel* m : models_) {
    const scheduler::SchedulerStats stats = m->dispatcher.stats();
    waiting += static_cast<uint32_t>(stats.queued);
    running += static_cast<uint32_t>(stats.active);
  }
  response.set_requests_waiting(waiting);
  response.set_requests_running(running);
  response.set_draining(draining_);
}

grpc::ServerWriteReactor<v1::GenerateImageResponse>* ImageGeneratorService::GenerateImage(
    grpc::CallbackServerContext* context, const v1::GenerateImageRequest* request) {
  absl::StatusOr<PreparedCall> prepared = PrepareGenerate(Authorization(*context), *request);
  if (!prepared.ok()) return RejectCall(prepared.status());
  return StartGrpcCall(context, *prepared);
}

grpc::ServerUnaryReactor* ImageGeneratorService::CancelGeneration(
    grpc::CallbackServerContext* context, const v1::CancelGenerationRequest* request,
    v1::CancelGenerationResponse* response) {
  if (absl::Status s = Authenticate(Authorization(*context)); !s.ok()) return Reply(context, s);
  return Reply(context, Cancel(request->request_id()));
}

grpc::ServerUnaryReactor* ImageGeneratorService::ListModels(grpc::CallbackServerContext* context,
                                                            const v1::ListModelsRequest* request,
                                                            v1::ListModelsResponse* response) {
  if (absl::Status s = Authenticate(Authorization(*context)); !s.ok()) return Reply(context, s);
  DescribeModels(*response);
  return Reply(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* ImageGeneratorService::GetServerInfo(
    grpc::CallbackServerContext* context, const v1::GetServerInfoRequest* request,
    v1::GetServerInfoResponse* response) {
  if (absl::Status s = Authenticate(Authorization(*context)); !s.ok()) return Reply(context, s);
  DescribeServer(*response);
  return Reply(context, absl::OkStatus());
}

}  // namespace dartserve::server

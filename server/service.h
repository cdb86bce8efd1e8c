// The ImageGenerator service over one dispatcher (of one or more replicas) per served model: the
// gRPC service (callback API), and the transport-neutral operations under it that the HTTP front
// end (server/http_api.h) calls too, so both share one copy of authentication, validation and the
// stream logic (server/stream.h).
#ifndef DARTSERVE_SERVER_SERVICE_H_
#define DARTSERVE_SERVER_SERVICE_H_

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "dartserve/v1/image_generator.grpc.pb.h"
#include "model/engine.h"
#include "scheduler/dispatcher.h"
#include "scheduler/scheduler.h"
#include "server/server_metrics.h"
#include "server/stream.h"
#include "server/validation.h"
#include "server/work_queue.h"

namespace dartserve::server {

// A model as served: its name and description, and its replicas: one engine per replica, each
// driven by its own scheduler (worker thread, KV budget), and the dispatcher that spreads requests
// over them.
struct ServedModel {
  std::string name;
  model::ModelInfo info;  // the first replica's; every replica serves the same model
  std::vector<std::unique_ptr<model::Engine>> engines;
  std::vector<std::unique_ptr<scheduler::Scheduler>> schedulers;  // schedulers[i] drives engines[i]
  scheduler::Dispatcher dispatcher;                               // over `schedulers`
};

struct ServiceOptions {
  std::string version = "dev";
  // When set, every ImageGenerator call must carry "authorization: Bearer <token>".
  std::string auth_token;
};

// Thread-safe: every method may be called from any thread at any time.
class ImageGeneratorService final : public v1::ImageGenerator::CallbackService {
 public:
  // `models` (the first is the default), `metrics` and `pump` must outlive the service.
  ImageGeneratorService(std::vector<ServedModel*> models, ServerMetrics* metrics, WorkQueue* pump,
                        ServiceOptions options);

  // New GenerateImage calls fail with UNAVAILABLE from now on.
  void StopAccepting() { draining_ = true; }

  // The operations both front ends share. `authorization` is the call's "authorization" value
  // (gRPC metadata, HTTP header); nullopt when it has none.
  //
  // UNAUTHENTICATED unless `authorization` is "Bearer <token>" (or no token is configured).
  absl::Status Authenticate(std::optional<absl::string_view> authorization) const;
  // GenerateImage's checks, in order: token, draining, model, request id, the request against
  // the API's limits and the model; resolves defaults and picks the id when the client gave
  // none. A rejection is counted in the metrics (dartserve_requests_total) and returned.
  absl::StatusOr<PreparedCall> PrepareGenerate(std::optional<absl::string_view> authorization,
                                               const v1::GenerateImageRequest& request);
  // CancelGeneration (after Authenticate): INVALID_ARGUMENT for a bad id, NOT_FOUND when no call
  // with that id is in flight or the call found ended some other way first (finished with its
  // images, or already failing); OK only when the call's stream ends with CANCELLED.
  absl::Status Cancel(const std::string& request_id);
  // ListModels and GetServerInfo (after Authenticate).
  void DescribeModels(v1::ListModelsResponse& response) const;
  void DescribeServer(v1::GetServerInfoResponse& response) const;

  grpc::ServerWriteReactor<v1::GenerateImageResponse>* GenerateImage(
      grpc::CallbackServerContext* context, const v1::GenerateImageRequest* request) override;
  grpc::ServerUnaryReactor* CancelGeneration(grpc::CallbackServerContext* context,
                                             const v1::CancelGenerationRequest* request,
                                             v1::CancelGenerationResponse* response) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const v1::ListModelsRequest* request,
                                       v1::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* GetServerInfo(grpc::CallbackServerContext* context,
                                          const v1::GetServerInfoRequest* request,
                                          v1::GetServerInfoResponse* response) override;

 private:
  ServedModel* FindModel(const std::string& name) const;

  const std::vector<ServedModel*> models_;
  ServerMetrics* const metrics_;
  WorkQueue* const pump_;
  const ServiceOptions options_;
  const absl::Time started_;
  std::atomic<bool> draining_{false};
  std::atomic<uint64_t> next_id_{0};
  CallRegistry calls_;
};

}  // namespace dartserve::server

#endif  // DARTSERVE_SERVER_SERVICE_H_

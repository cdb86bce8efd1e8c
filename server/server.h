// The dartserve server: gRPC (ImageGenerator, grpc.health.v1, reflection), the HTTP front end on
// the same service (JSON API, OpenAI-compatible images, the web page; server/http_api.h), one
// scheduler per model, the PNG/write pump, and the metrics endpoint, wired together with one
// lifecycle:
//
//   Start (health NOT_SERVING) -> WarmUp (health SERVING) -> Shutdown(grace) (NOT_SERVING, no new
//   calls, in-flight calls finish within `grace`, the rest fail with UNAVAILABLE) -> destroyed.
#ifndef DARTSERVE_SERVER_SERVER_H_
#define DARTSERVE_SERVER_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "model/compute_lane.h"
#include "scheduler/scheduler.h"
#include "server/http_api.h"
#include "server/http_server.h"
#include "server/server_metrics.h"
#include "server/service.h"
#include "server/work_queue.h"

namespace dartserve::server {

struct ModelSpec {
  std::string name;  // unique among the server's models
  // One engine per replica, at least one, all serving the same model (the first's info() is what
  // ListModels reports). Each gets its own scheduler with `scheduler` as options: its own worker
  // thread and KV budget.
  std::vector<std::unique_ptr<model::Engine>> engines;
  scheduler::SchedulerOptions scheduler;  // on_iteration is set by the server (metrics)
};

struct ServerOptions {
  // gRPC listen address; port 0 picks a free port (see Server::port()).
  std::string address = "0.0.0.0:50051";
  // SO_REUSEPORT on the gRPC port. Off (the default), a port another process listens on is an
  // error; on, several processes that all set it share the port and the kernel spreads
  // connections over them, which is what an operator must mean for it to be right.
  bool reuse_port = false;
  // Metrics HTTP listen address; empty: no metrics endpoint. It serves the server's dartserve_*
  // families and the process_* ones (ProcessMetrics, with ServiceOptions::version).
  std::string metrics_address = "0.0.0.0:9464";
  // HTTP listen address ("<IPv4>:<port>", port 0 picks); empty: no HTTP front end. It takes the
  // same token (ServiceOptions::auth_token), TLS pair and request size limit as gRPC.
  std::string http_address;
  int http_threads = 64;  // HTTP requests served at once (a stream holds one for its length)
  ServiceOptions service;
  // TLS (gRPC and HTTP): both PEM strings set -> TLS; both empty -> plaintext.
  std::string tls_cert_pem;
  std::string tls_key_pem;
  int max_receive_message_bytes = 1 << 20;  // requests are small; bounds client-driven memory
  int max_send_message_bytes = 64 << 20;
  int pump_threads = 2;  // PNG encoding and writes
  // The compute lanes the models' engines run on (model/compute_lane.h), lane i for replica i:
  // their busy time is exported as dartserve_compute_lane_busy_seconds_total{lane="i"}. Empty:
  // no such metric (engines that run on their schedulers' workers).
  std::vector<std::shared_ptr<model::ComputeLane>> lanes;
};

class Server {
 public:
  // Starts listening at once (health NOT_SERVING until WarmUp succeeds). `models` must not be
  // empty; the first is the default. Model names must be unique. Errors: INVALID_ARGUMENT for
  // bad options or models; UNAVAILABLE "cannot listen on ADDRESS: REASON" when the gRPC port
  // cannot be bound ("address in use" when another process holds it), and the HTTP server's and
  // the metrics endpoint's errors. A failed start stops whatever it had started.
  static absl::StatusOr<std::unique_ptr<Server>> Start(ServerOptions options,
                                                       std::vector<ModelSpec> models);
  ~Server();

  int port() const { return port_; }
  // The metrics endpoint's port; 0 when it is off (empty ServerOptions::metrics_address).
  int metrics_port() const { return metrics_endpoint_ ? metrics_endpoint_->port() : 0; }
  // The HTTP port; 0 when it is off (empty ServerOptions::http_address).
  int http_port() const { return http_server_ ? http_server_->port() : 0; }
  ServerMetrics& metrics() { return *metrics_; }
  ServedModel& model(size_t i) { return *models_[i]; }

  // Generates one image per model through its scheduler, then marks the server SERVING.
  absl::Status WarmUp();
  void SetServing(bool serving);
  // Graceful stop; idempotent. Returns when every call has ended. Also safe on a server whose
  // Start failed part-way (the destructor calls it).
  void Shutdown(absl::Duration grace);

 private:
  Server() = default;
  // Starts `spec`'s schedulers (one per engine) and its metrics; the result lives in models_.
  ServedModel* StartModel(ModelSpec& spec);

  // Shared: the metrics endpoint holds them weakly.
  std::shared_ptr<ServerMetrics> metrics_;
  std::shared_ptr<ProcessMetrics> process_metrics_;
  std::unique_ptr<WorkQueue> pump_;
  std::vector<std::unique_ptr<ServedModel>> models_;
  std::unique_ptr<ImageGeneratorService> service_;
  std::unique_ptr<grpc::Server> grpc_server_;
  std::unique_ptr<HttpApi> http_api_;
  std::unique_ptr<HttpServer> http_server_;  // calls http_api_
  std::unique_ptr<MetricsEndpoint> metrics_endpoint_;
  int port_ = 0;
  bool shut_down_ = false;
};

}  // namespace dartserve::server

#endif  // DARTSERVE_SERVER_SERVER_H_

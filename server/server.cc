#include "server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <system_error>

#include "absl/algorithm/container.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace dartserve::server {
namespace {

// Sink for warm-up requests: the caller waits for OnFinished.
class WarmUpSink : public scheduler::RequestSink {
 public:
  void OnFinished(absl::StatusOr<scheduler::Result> result) override {
    std::lock_guard<std::mutex> lock(mu_);
    status_ = result.status();
    done_ = true;
    cv_.notify_all();
  }
  absl::Status Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return done_; });
    return status_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  absl::Status status_;
};

// Generates one image on every replica of `model` (each has its own worker thread, whose first
// torch calls are the slow ones), one replica at a time.
absl::Status WarmUpModel(const ServedModel& model) {
  for (const std::unique_ptr<scheduler::Scheduler>& replica : model.schedulers) {
    auto sink = std::make_shared<WarmUpSink>();
    auto request = std::make_unique<scheduler::Request>();
    request->id = "#warmup";
    if (model.info.conditioning == model::Conditioning::kClass) request->params.class_id = 0;
    request->params.guidance_scale = model.info.default_guidance;
    request->sink = sink;
    if (absl::Status s = replica->Submit(request); !s.ok()) return s;
    if (absl::Status s = sink->Wait(); !s.ok()) return s;
  }
  return absl::OkStatus();
}

// Why gRPC could not listen on `address` ("host:port", "[v6]:port"), found by binding it as gRPC
// does (SO_REUSEADDR, and SO_REUSEPORT when `reuse_port`): gRPC itself only logs the reason.
// Empty when the probe binds (the failure was transient, or only gRPC's log explains it).
std::string ListenFailure(const std::string& address, bool reuse_port) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) return "";
  std::string host = address.substr(0, colon);
  const std::string port = address.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &found) != 0) {
    return "";
  }
  int error = 0;
  for (const addrinfo* a = found; a != nullptr && error == 0; a = a->ai_next) {
    const int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuse_port) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (bind(fd, a->ai_addr, a->ai_addrlen) != 0) error = errno;
    close(fd);
  }
  freeaddrinfo(found);
  switch (error) {
    case 0:
      return "";
    case EADDRINUSE:
      return "address in use";
    case EACCES:
      return "permission denied (ports below 1024 need privileges)";
    case EADDRNOTAVAIL:
      return "no such address on this machine";
    default:
      return std::generic_category().message(error);
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<Server>> Server::Start(ServerOptions options,
                                                      std::vector<ModelSpec> models) {
  if (models.empty()) return absl::InvalidArgumentError("model: at least one model is needed");
  absl::flat_hash_set<std::string> names;
  for (const ModelSpec& m : models) {
    if (m.name.empty() || !names.insert(m.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("model: names must be unique and non-empty ('", m.name, "')"));
    }
    if (m.engines.empty() || absl::c_linear_search(m.engines, nullptr)) {
      return absl::InvalidArgumentError(
          absl::StrCat("model '", m.name, "': at least one engine is needed"));
    }
  }
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (!options.tls_cert_pem.empty() || !options.tls_key_pem.empty()) {
    if (options.tls_cert_pem.empty() || options.tls_key_pem.empty()) {
      return absl::InvalidArgumentError("tls: both a certificate and a key are needed");
    }
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({options.tls_key_pem, options.tls_cert_pem});
    credentials = grpc::SslServerCredentials(ssl);
  }
  // From here on, an error return destroys `server`, whose Shutdown stops what was started.
  std::unique_ptr<Server> server(new Server());
  server->metrics_ = std::make_shared<ServerMetrics>();
  for (size_t i = 0; i < options.lanes.size(); ++i) {
    prometheus::Counter& busy = server->metrics_->ForLane(static_cast<int>(i));
    server->metrics_->AddCollectHook([lane = options.lanes[i], &busy] {
      busy.Increment(lane->busy_seconds() - busy.Value());  // a counter only moves up
    });
  }
  server->pump_ = std::make_unique<WorkQueue>(options.pump_threads);
  std::vector<ServedModel*> served;
  for (ModelSpec& spec : models) {
    served.push_back(server->StartModel(spec));
  }
  server->service_ = std::make_unique<ImageGeneratorService>(
      std::move(served), server->metrics_.get(), server->pump_.get(), options.service);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  // gRPC sets SO_REUSEPORT by default, so a second server on the same port would start and
  // silently receive a share of the connections.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, options.reuse_port ? 1 : 0);
  builder.AddListeningPort(options.address, credentials, &server->port_);
  builder.SetMaxReceiveMessageSize(options.max_receive_message_bytes);
  builder.SetMaxSendMessageSize(options.max_send_message_bytes);
  builder.RegisterService(server->service_.get());
  server->grpc_server_ = builder.BuildAndStart();
  if (server->grpc_server_ == nullptr || server->port_ == 0) {
    const std::string why = ListenFailure(options.address, options.reuse_port);
    return absl::UnavailableError(
        why.empty() ? absl::StrCat("cannot listen on ", options.address, " (see gRPC's log)")
                    : absl::StrCat("cannot listen on ", options.address, ": ", why));
  }
  server->SetServing(false);

  if (!options.http_address.empty()) {
    server->http_api_ = std::make_unique<HttpApi>(
        server->service_.get(),
        HttpApiOptions{.max_body_bytes = static_cast<size_t>(options.max_receive_message_bytes)});
    absl::StatusOr<std::unique_ptr<HttpServer>> http = HttpServer::Start(
        {.address = options.http_address,
         .threads = options.http_threads,
         .tls_cert_pem = options.tls_cert_pem,
         .tls_key_pem = options.tls_key_pem},
        [api = server->http_api_.get()](HttpExchange& exchange) { api->Handle(exchange); });
    if (!http.ok()) return http.status();
    server->http_server_ = *std::move(http);
  }

  if (!options.metrics_address.empty()) {
    absl::StatusOr<std::unique_ptr<MetricsEndpoint>> endpoint =
        MetricsEndpoint::Start(options.metrics_address, server->metrics_);
    if (!endpoint.ok()) return endpoint.status();
    server->metrics_endpoint_ = *std::move(endpoint);
    server->process_metrics_ = std::make_shared<ProcessMetrics>(options.service.version);
    server->metrics_endpoint_->Add(server->process_metrics_);
  }
  return server;
}

ServedModel* Server::StartModel(ModelSpec& spec) {
  auto m = std::make_unique<ServedModel>();
  m->name = spec.name;
  m->info = spec.engines.front()->info();
  m->engines = std::move(spec.engines);
  ModelMetrics* mm = &metrics_->ForModel(m->name);
  spec.scheduler.on_iteration = [mm](const scheduler::IterationInfo& it) {
    mm->step_duration.Observe(absl::ToDoubleSeconds(it.duration));
    mm->step_batch_requests.Observe(it.batch_requests);
    mm->step_batch_tokens.Observe(static_cast<double>(it.batch_tokens));
  };
  for (const std::unique_ptr<model::Engine>& engine : m->engines) {
    m->schedulers.push_back(std::make_unique<scheduler::Scheduler>(spec.scheduler, engine.get()));
    m->schedulers.back()->Start();
    m->dispatcher.AddReplica(m->schedulers.back().get());
  }
  const scheduler::Dispatcher* dispatcher = &m->dispatcher;
  // Gauges that mirror the scheduler's state are read when /metrics is scraped.
  metrics_->AddCollectHook([mm, dispatcher] {
    const scheduler::SchedulerStats s = dispatcher->stats();
    mm->running.Set(s.active);
    mm->waiting.Set(s.queued);
    mm->kv_bytes.Set(static_cast<double>(s.kv_bytes_used));
    mm->kv_usage_ratio.Set(
        s.kv_budget_bytes > 0 ? static_cast<double>(s.kv_bytes_used) / s.kv_budget_bytes : 0);
  });
  models_.push_back(std::move(m));
  return models_.back().get();
}

Server::~Server() { Shutdown(absl::ZeroDuration()); }

void Server::SetServing(bool serving) {
  if (grpc_server_ == nullptr) return;  // Start failed before gRPC ran
  if (grpc::HealthCheckServiceInterface* health = grpc_server_->GetHealthCheckService()) {
    health->SetServingStatus(serving);
  }
}

absl::Status Server::WarmUp() {
  for (const auto& m : models_) {
    if (absl::Status s = WarmUpModel(*m); !s.ok()) {
      return absl::Status(s.code(),
                          absl::StrCat("warm-up of model '", m->name, "' failed: ", s.message()));
    }
  }
  SetServing(true);
  return absl::OkStatus();
}

void Server::Shutdown(absl::Duration grace) {
  if (shut_down_) return;
  shut_down_ = true;
  // After a failed Start, any of the parts may be missing.
  SetServing(false);
  if (service_ != nullptr) service_->StopAccepting();
  for (const auto& m : models_) m->dispatcher.BeginDrain(grace);
  // Bounded: at the end of `grace` the schedulers fail what is left with UNAVAILABLE.
  for (const auto& m : models_) m->dispatcher.WaitUntilIdle();
  if (grpc_server_ != nullptr) {
    // The calls now only have their last messages to write; give them a moment, then cancel.
    grpc_server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
    grpc_server_->Wait();
  }
  // Its streams have ended with their calls; this waits for the handlers to return.
  http_server_.reset();
  metrics_endpoint_.reset();
}

}  // namespace dartserve::server

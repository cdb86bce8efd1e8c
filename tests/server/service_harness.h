// The gRPC service tests' harness: an in-process Server on a free port over a gated fake engine
// (tests/server/gated_engine.h), driven through the real generated stub, so that tests hold
// requests mid-run without sleeps.
#ifndef DARTSERVE_TESTS_SERVER_SERVICE_HARNESS_H_
#define DARTSERVE_TESTS_SERVER_SERVICE_HARNESS_H_

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "dartserve/v1/image_generator.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "server/server.h"
#include "tests/server/gated_engine.h"

namespace dartserve::server {

// The value of one sample line of a Prometheus exposition (0 when absent).
inline double MetricValue(const std::string& exposition, const std::string& series) {
  const std::string key = series + " ";
  const size_t at = exposition.find(key);
  return at == std::string::npos ? 0 : std::stod(exposition.substr(at + key.size()));
}

struct Harness {
  std::unique_ptr<Server> server;
  GatedEngine* engine = nullptr;  // owned by the server
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::ImageGenerator::Stub> stub;

  grpc::health::v1::HealthCheckResponse::ServingStatus Health() {
    BoundedContext ctx;
    grpc::health::v1::HealthCheckResponse response;
    grpc::Status s = grpc::health::v1::Health::NewStub(channel)->Check(
        &ctx, grpc::health::v1::HealthCheckRequest(), &response);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return response.status();
  }
};

struct HarnessOptions {
  scheduler::SchedulerOptions scheduler;
  std::string auth_token;
  bool warm_up = true;
  bool open_gate = true;
  bool metrics = false;
};

inline Harness Start(HarnessOptions opts = {}) {
  Harness h;
  std::unique_ptr<GatedEngine> engine = OpenGatedEngine();
  h.engine = engine.get();
  std::vector<ModelSpec> models;
  models.push_back(FakeSpec("fake", std::move(engine), opts.scheduler));
  ServerOptions options;
  options.address = "127.0.0.1:0";
  options.metrics_address = opts.metrics ? "127.0.0.1:0" : "";
  options.service.auth_token = opts.auth_token;
  absl::StatusOr<std::unique_ptr<Server>> server =
      Server::Start(std::move(options), std::move(models));
  EXPECT_TRUE(server.ok()) << server.status();
  h.server = *std::move(server);
  if (opts.warm_up) {
    EXPECT_TRUE(h.server->WarmUp().ok());
  }
  if (!opts.open_gate) h.engine->Close();
  h.channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", h.server->port()),
                                  grpc::InsecureChannelCredentials());
  h.stub = v1::ImageGenerator::NewStub(h.channel);
  return h;
}

struct CallResult {
  std::vector<v1::GenerateImageResponse> messages;
  grpc::Status status;
};

inline CallResult Generate(v1::ImageGenerator::Stub& stub, const v1::GenerateImageRequest& request,
                           grpc::ClientContext* context = nullptr) {
  BoundedContext local;
  if (context == nullptr) context = &local;
  CallResult out;
  auto reader = stub.GenerateImage(context, request);
  v1::GenerateImageResponse m;
  while (reader->Read(&m)) out.messages.push_back(m);
  out.status = reader->Finish();
  return out;
}

}  // namespace dartserve::server

#endif  // DARTSERVE_TESTS_SERVER_SERVICE_HARNESS_H_

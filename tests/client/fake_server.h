// An in-process gRPC server with a scripted ImageGenerator, for client tests that need a real
// channel but no model (and so no LibTorch).
#ifndef DARTSERVE_TESTS_CLIENT_FAKE_SERVER_H_
#define DARTSERVE_TESTS_CLIENT_FAKE_SERVER_H_

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "dartserve/v1/image_generator.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"

namespace dartserve::client {

// GenerateImage answers Accepted, then per image one Progress without a preview, one with a
// 1-byte preview and a Result, then OK; a request whose class_id is `fail_class` gets Accepted
// and then `fail_code`. With `hang`, every call blocks after Accepted until the client cancels
// it or CancelGeneration names its request_id (CANCELLED). With `skip_results`, calls end OK
// without their Results (a server that loses images). ListModels returns `models`.
// Thread-safe: handlers run on gRPC's threads, the accessors on the test's.
class FakeImageGenerator final : public v1::ImageGenerator::Service {
 public:
  int fail_class = -1;
  grpc::StatusCode fail_code = grpc::StatusCode::RESOURCE_EXHAUSTED;
  bool hang = false;
  bool skip_results = false;
  v1::ListModelsResponse models;

  grpc::Status GenerateImage(grpc::ServerContext* context, const v1::GenerateImageRequest* request,
                             grpc::ServerWriter<v1::GenerateImageResponse>* writer) override {
    {
      std::lock_guard lock(mu_);
      ++calls_;
      ++calls_by_class_[request->class_id()];
      max_in_flight_ = std::max(max_in_flight_, ++in_flight_);
      cv_.notify_all();
    }
    const grpc::Status status = Answer(context, *request, writer);
    std::lock_guard lock(mu_);
    --in_flight_;
    cancelled_ids_.erase(request->request_id());
    return status;
  }

  // OK for a hanging call's id (which then ends CANCELLED), NOT_FOUND otherwise.
  grpc::Status CancelGeneration(grpc::ServerContext*, const v1::CancelGenerationRequest* request,
                                v1::CancelGenerationResponse*) override {
    std::lock_guard lock(mu_);
    ++cancel_calls_;
    if (!hanging_ids_.contains(request->request_id())) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "not in flight");
    }
    cancelled_ids_.insert(request->request_id());
    return grpc::Status::OK;
  }

  grpc::Status ListModels(grpc::ServerContext* context, const v1::ListModelsRequest*,
                          v1::ListModelsResponse* response) override {
    {
      std::lock_guard lock(mu_);
      const auto& metadata = context->client_metadata();
      const auto it = metadata.find("authorization");
      last_authorization_ =
          it == metadata.end() ? "" : std::string(it->second.data(), it->second.size());
    }
    *response = models;
    return grpc::Status::OK;
  }

  int calls() {
    std::lock_guard lock(mu_);
    return calls_;
  }
  int calls_with_class(int class_id) {
    std::lock_guard lock(mu_);
    return calls_by_class_[class_id];
  }
  int max_in_flight() {
    std::lock_guard lock(mu_);
    return max_in_flight_;
  }
  int cancel_calls() {
    std::lock_guard lock(mu_);
    return cancel_calls_;
  }
  std::string last_authorization() {
    std::lock_guard lock(mu_);
    return last_authorization_;
  }
  // Blocks until `n` GenerateImage calls are in the handler at once.
  void WaitForInFlight(int n) {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return in_flight_ >= n; });
  }

 private:
  grpc::Status Answer(grpc::ServerContext* context, const v1::GenerateImageRequest& request,
                      grpc::ServerWriter<v1::GenerateImageResponse>* writer) {
    const int num_images = std::max<int>(request.num_images(), 1);
    v1::GenerateImageResponse response;
    response.mutable_accepted()->set_request_id("r");
    response.mutable_accepted()->set_num_images(num_images);
    if (hang && !request.request_id().empty()) {
      // Before Accepted goes out, so that a CancelGeneration sent on it finds the id.
      std::lock_guard lock(mu_);
      hanging_ids_.insert(request.request_id());
    }
    writer->Write(response);
    if (hang) {
      // The sync API has no cancellation callback; poll, which ends as soon as the client's
      // cancellation or a CancelGeneration arrives.
      while (!context->IsCancelled() && !CancelledById(request.request_id())) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      std::lock_guard lock(mu_);
      hanging_ids_.erase(request.request_id());
      return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
    }
    if (request.class_id() == fail_class) return grpc::Status(fail_code, "scripted failure");
    if (skip_results) return grpc::Status::OK;
    for (int i = 0; i < num_images; ++i) {
      response.mutable_progress()->set_image_index(i);
      writer->Write(response);
      response.mutable_progress()->set_preview_png("p");
      writer->Write(response);
      response.mutable_result()->set_image_index(i);
      writer->Write(response);
    }
    return grpc::Status::OK;
  }

  bool CancelledById(const std::string& id) {
    std::lock_guard lock(mu_);
    return cancelled_ids_.contains(id);
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::set<std::string> hanging_ids_;
  std::set<std::string> cancelled_ids_;
  int cancel_calls_ = 0;
  int calls_ = 0;
  std::map<int, int> calls_by_class_;
  int in_flight_ = 0;
  int max_in_flight_ = 0;
  std::string last_authorization_;
};

// A plaintext server on a free localhost port, serving `service` and, with `health`, gRPC's
// default grpc.health.v1 service (SERVING until set otherwise through health()). Shuts down on
// destruction.
class InProcessServer {
 public:
  InProcessServer(grpc::Service* service, bool health) {
    // Process-wide: it applies to servers built after the call, so set it every time.
    grpc::EnableDefaultHealthCheckService(health);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(service);
    server_ = builder.BuildAndStart();
  }
  ~InProcessServer() {
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  }

  bool ok() const { return server_ != nullptr && port_ > 0; }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }
  grpc::HealthCheckServiceInterface* health() { return server_->GetHealthCheckService(); }

 private:
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

}  // namespace dartserve::client

#endif  // DARTSERVE_TESTS_CLIENT_FAKE_SERVER_H_

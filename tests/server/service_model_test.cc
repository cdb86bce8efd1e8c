// The gRPC service end to end over real tiny models with random weights (LibTorch): progress
// steps of token-level DART-AR, decodable results and previews, text prompts. The gated-engine
// tests are in tests/server/service_test.cc.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/png.h"
#include "dartserve/v1/image_generator.grpc.pb.h"
#include "model/dart_engine.h"
#include "server/server.h"
#include "tests/server/service_harness.h"
#include "tests/testing/tiny_model.h"

namespace dartserve::server {
namespace {

// A server (no metrics endpoint) over one real tiny model with random weights, guidance 2.
absl::StatusOr<std::unique_ptr<Server>> StartRealModel(const std::string& name,
                                                       const model::ModelConfig& config) {
  model::Dart dart = testing::MakeTinyModel(config);
  model::ModelInfo info = model::DescribeModel(dart);
  info.default_guidance = 2.0f;
  std::vector<ModelSpec> models;
  models.push_back(FakeSpec(name, std::make_unique<model::DartEngine>(dart, info)));
  return Server::Start({.address = "127.0.0.1:0", .metrics_address = ""}, std::move(models));
}

// One meaning of "steps": for token-level DART-AR, Accepted, Progress and ListModels agree on
// the number of Progress messages (T x K), while `steps` still names the denoising steps T.
TEST(ServiceTest, DartArCountsProgressStepsEverywhere) {
  const model::ModelConfig config = testing::TinyArConfig();
  const int progress_steps = config.generation_steps();
  ASSERT_NE(progress_steps, config.num_steps);
  auto server = StartRealModel("ar", config);
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = v1::ImageGenerator::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", (*server)->port()), grpc::InsecureChannelCredentials()));

  BoundedContext list_ctx;
  v1::ListModelsResponse models;
  ASSERT_TRUE(stub->ListModels(&list_ctx, v1::ListModelsRequest(), &models).ok());
  ASSERT_EQ(models.models_size(), 1);
  EXPECT_EQ(models.models(0).steps(), static_cast<uint32_t>(config.num_steps));
  EXPECT_EQ(models.models(0).progress_steps(), static_cast<uint32_t>(progress_steps));

  v1::GenerateImageRequest request = ClassRequest(2, 5);
  request.set_steps(static_cast<uint32_t>(config.num_steps));
  // A cadence beyond the last step means the final preview only.
  request.mutable_preview()->set_every_n_steps(static_cast<uint32_t>(progress_steps + 100));
  const CallResult call = Generate(*stub, request);
  ASSERT_TRUE(call.status.ok()) << call.status.error_message();
  EXPECT_EQ(call.messages.front().accepted().total_steps(), static_cast<uint32_t>(progress_steps));
  // One Progress per model call, 1 .. T x K in order, beyond T.
  uint32_t last_step = 0;
  for (const v1::GenerateImageResponse& m : call.messages) {
    if (!m.has_progress()) continue;
    EXPECT_EQ(m.progress().step(), last_step + 1);
    last_step = m.progress().step();
    EXPECT_EQ(m.progress().total_steps(), static_cast<uint32_t>(progress_steps));
  }
  EXPECT_EQ(last_step, static_cast<uint32_t>(progress_steps));

  request.set_steps(static_cast<uint32_t>(progress_steps));  // tokens are not denoising steps
  EXPECT_EQ(Generate(*stub, request).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

// The server exports each compute lane's busy time: the lane the model runs on counts the work
// of a generation, an idle one stays at zero.
TEST(ServiceTest, ExportsTheBusyTimeOfEachComputeLane) {
  const model::ModelConfig config = model::ModelConfig::Tiny();
  model::Dart dart = testing::MakeTinyModel(config);
  const std::vector<std::shared_ptr<model::ComputeLane>> lanes = {
      std::make_shared<model::ComputeLane>(), std::make_shared<model::ComputeLane>()};
  std::vector<ModelSpec> models;
  models.push_back(FakeSpec(
      "tiny", model::OnLane(std::make_unique<model::DartEngine>(dart, model::DescribeModel(dart)),
                            lanes[0])));
  auto server = Server::Start({.address = "127.0.0.1:0", .metrics_address = "", .lanes = lanes},
                              std::move(models));
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = v1::ImageGenerator::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", (*server)->port()), grpc::InsecureChannelCredentials()));
  ASSERT_TRUE(Generate(*stub, ClassRequest(1, 7)).status.ok());

  const std::string exposition = (*server)->metrics().Serialize();
  const double busy =
      MetricValue(exposition, "dartserve_compute_lane_busy_seconds_total{lane=\"0\"}");
  EXPECT_GT(busy, 0);
  EXPECT_LE(busy, lanes[0]->busy_seconds() + 1e-6);
  EXPECT_TRUE(
      absl::StrContains(exposition, "dartserve_compute_lane_busy_seconds_total{lane=\"1\"} 0\n"))
      << exposition;
}

// The real tiny DART model behind the service: stream order, preview count, PNG size, seeds.
TEST(ServiceTest, StreamsAcceptedProgressAndDecodableResults) {
  model::ModelConfig config = model::ModelConfig::Tiny();
  auto server = StartRealModel("tiny", config);
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_TRUE((*server)->WarmUp().ok());
  auto stub = v1::ImageGenerator::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", (*server)->port()), grpc::InsecureChannelCredentials()));

  v1::GenerateImageRequest request = ClassRequest(3, 42, 2);
  request.set_request_id("order-1");
  request.mutable_preview()->set_every_n_steps(1);
  const CallResult call = Generate(*stub, request);
  ASSERT_TRUE(call.status.ok()) << call.status.error_message();
  ASSERT_FALSE(call.messages.empty());
  ASSERT_TRUE(call.messages.front().has_accepted());
  const v1::Accepted& accepted = call.messages.front().accepted();
  EXPECT_EQ(accepted.request_id(), "order-1");
  EXPECT_EQ(accepted.seed(), 42u);
  EXPECT_EQ(accepted.num_images(), 2u);
  EXPECT_EQ(accepted.total_steps(), static_cast<uint32_t>(config.num_steps));

  int previews = 0;
  std::vector<int> last_step(2, 0);
  std::vector<bool> done(2, false);
  for (size_t i = 1; i < call.messages.size(); ++i) {
    const v1::GenerateImageResponse& m = call.messages[i];
    ASSERT_FALSE(m.has_accepted()) << "Accepted must come first and once";
    if (m.has_progress()) {
      const int index = static_cast<int>(m.progress().image_index());
      ASSERT_LT(index, 2);
      EXPECT_FALSE(done[index]) << "progress after the result";
      EXPECT_GT(static_cast<int>(m.progress().step()), last_step[index]);
      last_step[index] = static_cast<int>(m.progress().step());
      if (!m.progress().preview_png().empty()) {
        ++previews;
        absl::StatusOr<Pixels> px = DecodePng(m.progress().preview_png());
        ASSERT_TRUE(px.ok());
        EXPECT_EQ(px->width, config.image_size);
      }
    } else {
      ASSERT_TRUE(m.has_result());
      const v1::Result& r = m.result();
      ASSERT_LT(r.image_index(), 2u);
      EXPECT_FALSE(done[r.image_index()]);
      done[r.image_index()] = true;
      EXPECT_EQ(r.seed(), 42u + r.image_index());
      absl::StatusOr<Pixels> px = DecodePng(r.png());
      ASSERT_TRUE(px.ok()) << px.status();
      EXPECT_EQ(px->width, config.image_size);
      EXPECT_EQ(px->height, config.image_size);
      EXPECT_EQ(px->channels, config.channels);
      EXPECT_EQ(r.width(), static_cast<uint32_t>(config.image_size));
      EXPECT_GE(r.timings().compute_seconds(), 0);
    }
  }
  EXPECT_TRUE(done[0] && done[1]);
  // Every intermediate step of both images made a preview; each one either reached the client
  // or was replaced by a newer one (counted).
  const double dropped =
      MetricValue((*server)->metrics().Serialize(),
                  "dartserve_previews_dropped_total{model=\"tiny\",reason=\"backpressure\"}");
  EXPECT_EQ(previews + dropped, 2 * (config.num_steps - 1));

  // The same seed gives the same image.
  v1::GenerateImageRequest again = ClassRequest(3, 42, 1);
  again.mutable_preview()->set_every_n_steps(0);
  const CallResult second = Generate(*stub, again);
  ASSERT_TRUE(second.status.ok());
  std::string first_png;
  for (const auto& m : call.messages) {
    if (m.has_result() && m.result().image_index() == 0) first_png = m.result().png();
  }
  EXPECT_EQ(second.messages.back().result().png(), first_png);
}

// A real tiny text model behind the service: a prompt generates (the same prompt and seed give the
// same PNG, another prompt another one), a prompt over the model's text context is refused naming
// `prompt`, and class ids are refused.
TEST(ServiceTest, TextModelTakesPrompts) {
  auto server = StartRealModel("tiny-text", testing::TinyTextConfig());
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_TRUE((*server)->WarmUp().ok());  // the warm-up request is the empty prompt
  auto stub = v1::ImageGenerator::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", (*server)->port()), grpc::InsecureChannelCredentials()));

  const auto png_for = [&](const std::string& prompt) {
    v1::GenerateImageRequest r;
    r.set_prompt(prompt);
    r.set_seed(7);
    const CallResult call = Generate(*stub, r);
    EXPECT_TRUE(call.status.ok()) << call.status.error_message();
    return call.messages.empty() ? std::string() : call.messages.back().result().png();
  };
  const std::string blue = png_for("blue square");
  EXPECT_FALSE(blue.empty());
  EXPECT_EQ(png_for("blue square"), blue);
  EXPECT_NE(png_for("red ring"), blue);

  v1::GenerateImageRequest too_long;
  too_long.set_prompt("a small red circle at the top left on a white background");
  const CallResult refused = Generate(*stub, too_long);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StartsWith(refused.status.error_message(), "prompt:"))
      << refused.status.error_message();
  EXPECT_TRUE(absl::StrContains(refused.status.error_message(), "too long"));

  const CallResult class_id = Generate(*stub, ClassRequest(1, 1));
  EXPECT_EQ(class_id.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StartsWith(class_id.status.error_message(), "class_id:"));
}

}  // namespace
}  // namespace dartserve::server

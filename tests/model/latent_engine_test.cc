// Serving a latent DART model (docs/model.md, "Latent DART"): the engine describes the decoded
// image, renders final images with the decoder and previews with the linear map or the decoder,
// all requests of a Render call in one batch.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <memory>
#include <vector>

#include "model/autoencoder.h"
#include "model/dart_engine.h"
#include "model/image.h"
#include "model/sampler.h"
#include "tests/testing/tiny_model.h"

namespace dartserve::model {
namespace {

// A tiny latent model: DART on the 4x4x4 latents of a calibrated tiny autoencoder (16x16 RGB,
// f = 4), random weights. The calibration is measured on smooth random images, so the preview
// map is a real least-squares fit, not zero.
Dart MakeTinyLatentModel() {
  torch::manual_seed(3);
  Autoencoder ae(AutoencoderConfig::Tiny());
  ae->eval();
  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(5);
  const torch::Tensor images =
      torch::upsample_bilinear2d(torch::rand({16, 3, 4, 4}, gen) * 2 - 1, {16, 16}, false);
  const std::vector<torch::Tensor> batches = {images};
  EXPECT_TRUE(MeasureLatentStats(ae, batches).ok());
  EXPECT_TRUE(FitModelPreviewMap(ae, batches).ok());
  ModelConfig c = ModelConfig::Tiny();
  c.image_size = 4;
  c.channels = 4;
  c.patch_size = 1;
  c.autoencoder = "autoencoder";
  c.autoencoder_downsample = 4;
  Dart model = dartserve::testing::MakeTinyModel(c);
  model->set_autoencoder(ae);
  return model;
}

class LatentEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::set_num_threads(1);
    model_ = MakeTinyLatentModel();
    engine_ = std::make_unique<DartEngine>(model_);
  }

  // Starts requests with seeds 0..n-1 and steps them together to the end.
  std::vector<std::unique_ptr<EngineRequest>> RunToEnd(int n) {
    std::vector<std::unique_ptr<EngineRequest>> requests;
    std::vector<EngineRequest*> batch;
    for (int i = 0; i < n; ++i) {
      absl::StatusOr<std::unique_ptr<EngineRequest>> r =
          engine_->Start({.class_id = i % 10, .seed = static_cast<uint64_t>(i)});
      EXPECT_TRUE(r.ok()) << r.status();
      batch.push_back(r->get());
      requests.push_back(*std::move(r));
    }
    while (!batch.front()->finished()) EXPECT_TRUE(engine_->Step(batch).ok());
    return requests;
  }

  static std::vector<RenderJob> Jobs(const std::vector<std::unique_ptr<EngineRequest>>& requests,
                                     int max_side = 0) {
    std::vector<RenderJob> jobs;
    for (const auto& r : requests) jobs.push_back({.request = r.get(), .max_side = max_side});
    return jobs;
  }

  Dart model_{nullptr};
  std::unique_ptr<DartEngine> engine_;
};

TEST_F(LatentEngineTest, DescribesTheDecodedImage) {
  const ModelInfo& info = engine_->info();
  EXPECT_TRUE(info.latent);
  EXPECT_EQ(info.image_size, 16);
  EXPECT_EQ(info.channels, 3);
  EXPECT_FALSE(DescribeModel(dartserve::testing::MakeTinyModel()).latent);
}

TEST_F(LatentEngineTest, FinalImagesAreTheDecodedLatents) {
  const auto requests = RunToEnd(3);
  absl::StatusOr<std::vector<Pixels>> images = engine_->Render(Jobs(requests), RenderKind::kDecoded);
  ASSERT_TRUE(images.ok()) << images.status();
  ASSERT_EQ(images->size(), 3u);
  // The same requests through a Sampler, decoded by hand: the decoder's image of the
  // denormalized x_0, clamped and quantised.
  Sampler sampler(model_);
  Autoencoder ae = model_->autoencoder();
  const ModelConfig& c = model_->config();
  for (size_t i = 0; i < requests.size(); ++i) {
    absl::StatusOr<std::unique_ptr<GenerationState>> state =
        sampler.Start({.class_id = static_cast<int>(i) % 10, .seed = i});
    ASSERT_TRUE(state.ok());
    GenerationState* s = state->get();
    while (!s->finished()) ASSERT_TRUE(sampler.Step({&s, 1}).ok());
    torch::NoGradGuard no_grad;
    const torch::Tensor latent =
        Unpatchify(s->x0().unsqueeze(0), c.patch_size, c.channels, c.image_size);
    const Pixels want = TensorToPixels(ae->Decode(ae->Denormalize(latent))[0]);
    const Pixels& got = (*images)[i];
    EXPECT_EQ(got.width, 16);
    EXPECT_EQ(got.height, 16);
    ASSERT_EQ(got.channels, 3);
    ASSERT_EQ(got.data.size(), want.data.size());
    for (size_t k = 0; k < want.data.size(); ++k) {
      ASSERT_NEAR(got.data[k], want.data[k], 1) << "request " << i << " byte " << k;
    }
  }
  // Rendering one request alone gives the same pixels as in the batch (batch independence of
  // the decoder, up to one level of rounding).
  for (size_t i = 0; i < requests.size(); ++i) {
    const RenderJob one{.request = requests[i].get()};
    absl::StatusOr<std::vector<Pixels>> alone = engine_->Render({&one, 1}, RenderKind::kDecoded);
    ASSERT_TRUE(alone.ok()) << alone.status();
    ASSERT_EQ((*alone)[0].data.size(), (*images)[i].data.size());
    for (size_t k = 0; k < (*alone)[0].data.size(); ++k) {
      ASSERT_NEAR((*alone)[0].data[k], (*images)[i].data[k], 1) << "request " << i << " byte " << k;
    }
  }
}

TEST_F(LatentEngineTest, LinearPreviewsAreTheFittedMapAndDifferFromDecoded) {
  const auto requests = RunToEnd(2);
  absl::StatusOr<std::vector<Pixels>> linear = engine_->Render(Jobs(requests), RenderKind::kLinear);
  absl::StatusOr<std::vector<Pixels>> decoded =
      engine_->Render(Jobs(requests), RenderKind::kDecoded);
  ASSERT_TRUE(linear.ok()) << linear.status();
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ((*linear)[0].width, 16);
  EXPECT_NE((*linear)[0].data, (*decoded)[0].data);
  // A linear preview is constant over each f x f block (nearest upsampling of the latent grid).
  const Pixels& p = (*linear)[1];
  for (int y = 0; y < 16; ++y) {
    for (int x = 0; x < 16; ++x) {
      for (int c = 0; c < 3; ++c) {
        const int block = ((y / 4 * 4) * 16 + x / 4 * 4) * 3 + c;
        ASSERT_EQ(p.data[(y * 16 + x) * 3 + c], p.data[block]) << y << "," << x;
      }
    }
  }
}

TEST_F(LatentEngineTest, PreviewsAreDownscaledAndNeedAStep) {
  absl::StatusOr<std::unique_ptr<EngineRequest>> fresh = engine_->Start({.class_id = 1});
  ASSERT_TRUE(fresh.ok());
  const RenderJob job{.request = fresh->get(), .max_side = 8};
  EXPECT_EQ(engine_->Render({&job, 1}, RenderKind::kLinear).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EngineRequest* r = fresh->get();
  ASSERT_TRUE(engine_->Step({&r, 1}).ok());
  for (RenderKind kind : {RenderKind::kLinear, RenderKind::kDecoded}) {
    absl::StatusOr<std::vector<Pixels>> preview = engine_->Render({&job, 1}, kind);
    ASSERT_TRUE(preview.ok()) << preview.status();
    EXPECT_EQ((*preview)[0].width, 8);
    EXPECT_EQ((*preview)[0].height, 8);
  }
}

}  // namespace
}  // namespace dartserve::model

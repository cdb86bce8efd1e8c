#include "eval/autoencoder_eval.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "data/scenes64.h"

namespace dartserve::eval {
namespace {

// 32 smooth 16x16 RGB images (AutoencoderConfig::Tiny()'s size) as uint8.
torch::Tensor SmoothImages() {
  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(3);
  const torch::Tensor coarse = torch::rand({32, 3, 4, 4}, gen);
  return (torch::upsample_bilinear2d(coarse, {16, 16}, false) * 255).round().to(torch::kUInt8);
}

model::Autoencoder TinyAutoencoder() {
  torch::manual_seed(5);
  return model::Autoencoder(model::AutoencoderConfig::Tiny());
}

TEST(AutoencoderEvalTest, ReportIsConsistent) {
  torch::set_num_threads(1);
  model::Autoencoder ae = TinyAutoencoder();
  absl::StatusOr<AutoencoderReport> r = EvaluateAutoencoder(ae, SmoothImages(), /*batch=*/10);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->images, 32);
  EXPECT_TRUE(std::isfinite(r->mean_psnr_db));
  EXPECT_LE(r->min_psnr_db, r->mean_psnr_db);
  // Jensen: the mean of per-image PSNRs is at least the PSNR of the pooled error.
  EXPECT_GE(r->mean_psnr_db + 1e-9, r->pooled_psnr_db);
  EXPECT_GT(r->mean_abs_error, 0);
  EXPECT_GE(r->decode_ms_per_image, 0);
}

TEST(AutoencoderEvalTest, TrainingRaisesPsnr) {
  torch::set_num_threads(1);
  model::Autoencoder ae = TinyAutoencoder();
  const torch::Tensor images = SmoothImages();
  const double before = EvaluateAutoencoder(ae, images)->mean_psnr_db;
  torch::optim::Adam adam(ae->parameters(), torch::optim::AdamOptions(2e-3));
  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  const torch::Tensor x = images.to(torch::kFloat) / 127.5 - 1;
  ae->train();
  for (int step = 0; step < 150; ++step) {
    adam.zero_grad();
    model::ComputeAutoencoderLoss(ae, x.slice(0, (step % 4) * 8, (step % 4) * 8 + 8), gen)
        .loss.backward();
    adam.step();
  }
  const double after = EvaluateAutoencoder(ae, images)->mean_psnr_db;
  EXPECT_GT(after, before + 6) << before << " -> " << after;
}

TEST(AutoencoderEvalTest, RefusesImagesOfAnotherShapeOrType) {
  model::Autoencoder ae = TinyAutoencoder();
  EXPECT_EQ(EvaluateAutoencoder(ae, torch::zeros({2, 3, 8, 8}, torch::kUInt8)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(EvaluateAutoencoder(ae, torch::zeros({2, 3, 16, 16})).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(AutoencoderEvalTest, ReadsScenesAgainstTheirSpecs) {
  torch::set_num_threads(1);
  torch::manual_seed(5);
  model::AutoencoderConfig config = model::AutoencoderConfig::Tiny();
  config.image_size = data::kScene64Size;
  model::Autoencoder ae(config);
  const data::Scenes64Dataset scenes = data::MakeScenes64Dataset(6, kHeldOutScenesSeed);
  std::vector<data::CaptionSpec> specs;
  for (const data::CaptionedScene64& item : scenes.items) specs.push_back(item.spec);
  absl::StatusOr<AutoencoderReport> r =
      EvaluateAutoencoder(ae, scenes.data.images, /*batch=*/4, specs);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->read_scenes, 6);
  EXPECT_EQ(r->originals_all_correct, 1.0);  // clean renders read as their captions
  // An untrained decoder draws no scene: its reconstructions read as something else.
  EXPECT_EQ(r->same_reading, 0.0);
  EXPECT_EQ(r->differing_scenes, (std::vector<int64_t>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(r->reconstructions_all_correct, 0.0);

  // Without specs nothing is read.
  r = EvaluateAutoencoder(ae, scenes.data.images, /*batch=*/4);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->read_scenes, 0);
  EXPECT_TRUE(r->differing_scenes.empty());

  // One spec per image, and only 64x64 scenes.
  specs.pop_back();
  EXPECT_EQ(EvaluateAutoencoder(ae, scenes.data.images, 4, specs).status().code(),
            absl::StatusCode::kInvalidArgument);
  model::Autoencoder small = TinyAutoencoder();
  EXPECT_EQ(EvaluateAutoencoder(small, SmoothImages().slice(0, 0, 5), 4, specs).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace dartserve::eval

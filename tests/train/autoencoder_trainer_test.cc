#include "train/autoencoder_trainer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <iostream>

#include "model/autoencoder.h"
#include "train/train_config.h"

namespace dartserve::train {
namespace {

using ::dartserve::data::InMemoryDataset;
namespace fs = std::filesystem;

// 48 16x16 RGB images of smooth blobs: structure an autoencoder can learn in a few steps.
InMemoryDataset SyntheticImages() {
  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(7);
  const torch::Tensor coarse = torch::rand({48, 3, 4, 4}, gen);
  const torch::Tensor images = torch::upsample_bilinear2d(coarse, {16, 16}, false);
  InMemoryDataset ds;
  ds.images = (images * 255).round().to(torch::kUInt8);
  ds.labels = torch::zeros({48}, torch::kLong);
  ds.num_classes = 1;
  return ds;
}

TrainConfig TinyAutoencoderTrainConfig() {
  TrainConfig c;
  c.autoencoder = model::AutoencoderConfig::Tiny();
  c.dataset = "image_folder";
  c.batch_size = 8;
  c.total_steps = 1000;
  c.lr = 2e-3;
  c.warmup_steps = 5;
  c.log_every = 1000;
  c.checkpoint_every = 1000;
  c.sample_every = 0;
  return c;
}

fs::path TestDir() {
  const fs::path dir = fs::path(::testing::TempDir()) / "autoencoder_trainer" /
                       ::testing::UnitTest::GetInstance()->current_test_info()->name();
  fs::remove_all(dir);
  return dir;
}

std::unique_ptr<AutoencoderTrainer> MustCreate(const TrainConfig& c, const fs::path& dir) {
  auto t = AutoencoderTrainer::Create(c, SyntheticImages(), dir.string());
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *std::move(t) : nullptr;
}

TEST(AutoencoderTrainerTest, ConfigJsonRoundTripsAsAnAutoencoder) {
  const TrainConfig c = TinyAutoencoderTrainConfig();
  absl::StatusOr<TrainConfig> back = TrainConfigFromJson(TrainConfigToJson(c));
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_TRUE(back->autoencoder.has_value());
  EXPECT_EQ(model::AutoencoderConfigToJson(*back->autoencoder),
            model::AutoencoderConfigToJson(*c.autoencoder));
  EXPECT_EQ(TrainConfigToJson(*back), TrainConfigToJson(c));
}

TEST(AutoencoderTrainerTest, LossFalls) {
  torch::set_num_threads(1);
  auto trainer = MustCreate(TinyAutoencoderTrainConfig(), TestDir());
  ASSERT_NE(trainer, nullptr);
  double first = 0, last = 0;
  for (int i = 0; i < 150; ++i) {
    const double loss = trainer->TrainStep();
    ASSERT_TRUE(std::isfinite(loss));
    if (i < 5) first += loss / 5;
    if (i >= 145) last += loss / 5;
  }
  std::cout << "loss " << first << " -> " << last << "\n";
  EXPECT_LT(last, 0.5 * first);
}

TEST(AutoencoderTrainerTest, ResumesExactlyAndExportsACalibratedAutoencoder) {
  torch::set_num_threads(1);
  const fs::path dir = TestDir();
  const fs::path copy = dir.string() + "-copy";
  fs::remove_all(copy);
  auto a = MustCreate(TinyAutoencoderTrainConfig(), dir);
  ASSERT_NE(a, nullptr);
  std::atomic<bool> stop{false};
  ASSERT_TRUE(RunTraining(*a, TinyAutoencoderTrainConfig(), stop, /*max_steps=*/6).ok());
  ASSERT_EQ(a->step(), 6);
  fs::copy(dir, copy, fs::copy_options::recursive);
  const double loss_a = a->TrainStep();

  auto b = MustCreate(TinyAutoencoderTrainConfig(), copy);
  ASSERT_NE(b, nullptr);
  ASSERT_EQ(b->step(), 6);
  EXPECT_EQ(b->TrainStep(), loss_a);
  const auto pa = a->model()->parameters(), pb = b->model()->parameters();
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(torch::equal(pa[i], pb[i])) << i;

  // ema/ is a calibrated autoencoder: measured shift and scale, a fitted preview map.
  absl::StatusOr<model::Autoencoder> exported = model::LoadAutoencoder((dir / "ema").string());
  ASSERT_TRUE(exported.ok()) << exported.status();
  const model::AutoencoderConfig& c = (*exported)->config();
  ASSERT_EQ(c.latent_scale.size(), static_cast<size_t>(c.latent_channels));
  ASSERT_EQ(c.preview_weight.size(), static_cast<size_t>(c.latent_channels * 3));
  EXPECT_NE(c.latent_scale, std::vector<double>(c.latent_channels, 1.0));
  EXPECT_NE(c.preview_weight, std::vector<double>(c.latent_channels * 3, 0.0));

  ASSERT_TRUE(a->WriteSampleGrid().ok());
  EXPECT_TRUE(fs::exists(dir / "samples" / "step_0000007.png"));
}

TEST(AutoencoderTrainerTest, ResumeRefusesADifferentAutoencoder) {
  const fs::path dir = TestDir();
  auto a = MustCreate(TinyAutoencoderTrainConfig(), dir);
  ASSERT_NE(a, nullptr);
  ASSERT_TRUE(a->SaveCheckpoint().ok());
  TrainConfig other = TinyAutoencoderTrainConfig();
  other.autoencoder->latent_channels = 8;
  auto b = AutoencoderTrainer::Create(other, SyntheticImages(), dir.string());
  EXPECT_EQ(b.status().code(), absl::StatusCode::kFailedPrecondition);
}

// init_from fine-tunes: the run starts from the folder's weights, encoder and decoder alike.
TEST(AutoencoderTrainerTest, InitFromStartsFromAnAutoencodersWeights) {
  const fs::path dir = TestDir();
  auto a = MustCreate(TinyAutoencoderTrainConfig(), dir);
  ASSERT_NE(a, nullptr);
  for (int i = 0; i < 3; ++i) a->TrainStep();
  ASSERT_TRUE(a->SaveCheckpoint().ok());
  TrainConfig c = TinyAutoencoderTrainConfig();
  c.seed = 5;
  c.init_from = (dir / "ema").string();
  auto b = MustCreate(c, dir.string() + "-init");
  ASSERT_NE(b, nullptr);
  absl::StatusOr<model::Autoencoder> source = model::LoadAutoencoder(c.init_from);
  ASSERT_TRUE(source.ok());
  const auto ps = (*source)->named_parameters();
  for (const auto& p : b->model()->named_parameters()) {
    EXPECT_TRUE(torch::equal(p.value(), ps[p.key()])) << p.key();
  }
  c.autoencoder->base_width *= 2;
  auto wider = AutoencoderTrainer::Create(c, SyntheticImages(), dir.string() + "-wider");
  EXPECT_EQ(wider.status().code(), absl::StatusCode::kInvalidArgument);
}

// A decoder of half the width trained for a frozen encoder: the encoder's weights and the
// calibration stay exactly those of the source (so latents, and DART models trained on them, are
// unchanged), the decoder learns, and an autoencoder with another encoder is refused.
TEST(AutoencoderTrainerTest, TrainsANarrowerDecoderForAFrozenEncoder) {
  torch::set_num_threads(1);
  const fs::path root = TestDir();
  const fs::path source_dir = root / "source";
  {
    auto source = MustCreate(TinyAutoencoderTrainConfig(), source_dir);
    ASSERT_NE(source, nullptr);
    for (int i = 0; i < 5; ++i) source->TrainStep();
    ASSERT_TRUE(source->SaveCheckpoint().ok());
  }
  absl::StatusOr<model::Autoencoder> source = model::LoadAutoencoder((source_dir / "ema").string());
  ASSERT_TRUE(source.ok()) << source.status();

  TrainConfig c = TinyAutoencoderTrainConfig();
  c.autoencoder->decoder_base_width = 8;
  c.frozen_encoder = (source_dir / "ema").string();
  absl::StatusOr<TrainConfig> back = TrainConfigFromJson(TrainConfigToJson(c));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->frozen_encoder, c.frozen_encoder);
  const fs::path dir = root / "decoder";
  auto trainer = MustCreate(c, dir);
  ASSERT_NE(trainer, nullptr);
  std::vector<double> losses;
  for (int i = 0; i < 30; ++i) losses.push_back(trainer->TrainStep());
  EXPECT_LT(losses.back() + losses[28] + losses[27], 0.8 * (losses[0] + losses[1] + losses[2]));
  ASSERT_TRUE(trainer->SaveCheckpoint().ok());

  absl::StatusOr<model::Autoencoder> made = model::LoadAutoencoder((dir / "ema").string());
  ASSERT_TRUE(made.ok()) << made.status();
  const auto want = (*source)->encoder()->named_parameters();
  for (const auto& p : (*made)->encoder()->named_parameters()) {
    EXPECT_TRUE(torch::equal(p.value(), want[p.key()])) << p.key();
  }
  const model::AutoencoderConfig &a = (*made)->config(), &b = (*source)->config();
  EXPECT_EQ(a.latent_shift, b.latent_shift);
  EXPECT_EQ(a.latent_scale, b.latent_scale);
  EXPECT_EQ(a.preview_weight, b.preview_weight);
  EXPECT_EQ(a.decoder_base_width, 8);
  int64_t decoder = 0, source_decoder = 0;
  for (const auto& p : (*made)->decoder()->parameters()) decoder += p.numel();
  for (const auto& p : (*source)->decoder()->parameters()) source_decoder += p.numel();
  EXPECT_LT(decoder, source_decoder / 3);

  TrainConfig other = c;
  other.autoencoder->base_width = 24;
  auto refused = AutoencoderTrainer::Create(other, SyntheticImages(), (root / "x").string());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.status().message()), ::testing::HasSubstr("frozen_encoder"));
}

TEST(AutoencoderTrainerTest, RejectsImagesOfAnotherSize) {
  TrainConfig c = TinyAutoencoderTrainConfig();
  c.autoencoder->image_size = 32;
  auto t = AutoencoderTrainer::Create(c, SyntheticImages(), TestDir().string());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace dartserve::train

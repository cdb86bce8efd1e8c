// Latent DART training (docs/model.md, "Latent DART"): a tiny DART on the 4x4x4 latents of a tiny
// autoencoder (16x16 RGB, f = 4) trains on the latents, resumes exactly, and exports one servable
// folder that carries its autoencoder.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "common/file_io.h"
#include "model/autoencoder.h"
#include "model/checkpoint.h"
#include "train/trainer.h"

namespace dartserve::train {
namespace {

using ::dartserve::data::InMemoryDataset;
using ::testing::HasSubstr;
namespace fs = std::filesystem;
namespace dm = dartserve::model;

fs::path TestDir() {
  const fs::path dir = fs::path(::testing::TempDir()) / "latent_trainer" /
                       ::testing::UnitTest::GetInstance()->current_test_info()->name();
  fs::remove_all(dir);
  return dir;
}

// 24 smooth 16x16 RGB images with 10 classes.
InMemoryDataset SyntheticImages() {
  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(5);
  const torch::Tensor coarse = torch::rand({24, 3, 4, 4}, gen);
  InMemoryDataset ds;
  ds.images = (torch::upsample_bilinear2d(coarse, {16, 16}, false) * 255).round().to(torch::kUInt8);
  ds.labels = torch::arange(24, torch::kLong) % 10;
  ds.num_classes = 10;
  return ds;
}

// A calibrated tiny autoencoder (random weights from `seed`) saved to `dir`.
void SaveTinyAutoencoder(const fs::path& dir, uint64_t seed,
                         dm::AutoencoderConfig config = dm::AutoencoderConfig::Tiny()) {
  torch::manual_seed(seed);
  dm::Autoencoder ae(config);
  ae->eval();
  const InMemoryDataset data = SyntheticImages();
  const std::vector<torch::Tensor> batches = {data.images.to(torch::kFloat) / 127.5 - 1};
  ASSERT_TRUE(dm::MeasureLatentStats(ae, batches).ok());
  ASSERT_TRUE(dm::SaveAutoencoder(dir.string(), ae).ok());
}

TrainConfig TinyLatentTrainConfig(const fs::path& autoencoder) {
  TrainConfig c;
  c.model = dm::ModelConfig::Tiny();
  c.model.image_size = 4;  // the latent grid: 16x16 pixels / f
  c.model.channels = 4;    // latent channels
  c.model.patch_size = 1;  // K = 16, token dim 4
  c.model.autoencoder = autoencoder.string();
  c.model.autoencoder_downsample = 4;
  c.dataset = "image_folder";
  c.batch_size = 8;
  c.total_steps = 1000;
  c.lr = 3e-3;
  c.warmup_steps = 5;
  c.log_every = 1000;
  c.checkpoint_every = 1000;
  c.sample_every = 0;
  return c;
}

class LatentTrainerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::set_num_threads(1);
    dir_ = TestDir();
    ae_dir_ = dir_.string() + "-autoencoder";
    fs::remove_all(ae_dir_);
    SaveTinyAutoencoder(ae_dir_, /*seed=*/3);
  }
  absl::StatusOr<std::unique_ptr<Trainer>> Create(const TrainConfig& c, const fs::path& out) {
    return Trainer::Create(c, SyntheticImages(), out.string());
  }

  fs::path dir_;
  fs::path ae_dir_;
};

TEST_F(LatentTrainerTest, TrainsOnLatentsWithAFrozenAutoencoder) {
  auto trainer = Create(TinyLatentTrainConfig(ae_dir_), dir_);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  dm::Autoencoder ae = (*trainer)->model()->autoencoder();
  ASSERT_TRUE(ae);
  std::vector<torch::Tensor> before;
  for (const torch::Tensor& p : ae->parameters()) before.push_back(p.clone());

  std::vector<double> losses;
  for (int i = 0; i < 40; ++i) losses.push_back((*trainer)->TrainStep());
  for (double l : losses) ASSERT_TRUE(std::isfinite(l));
  const double first = (losses[0] + losses[1] + losses[2]) / 3;
  const double last = (losses[37] + losses[38] + losses[39]) / 3;
  std::cout << "loss " << first << " -> " << last << "\n";
  EXPECT_LT(last, 0.7 * first);

  // Frozen: no gradients, unchanged weights.
  const std::vector<torch::Tensor> after = ae->parameters();
  for (size_t i = 0; i < after.size(); ++i) {
    EXPECT_FALSE(after[i].requires_grad()) << i;
    EXPECT_TRUE(torch::equal(after[i], before[i])) << i;
  }
  // The run keeps its own copy of the autoencoder.
  EXPECT_TRUE(fs::exists(dir_ / "autoencoder" / dm::kConfigFile));
  // The sample grid decodes latents to 16x16 RGB tiles.
  ASSERT_TRUE((*trainer)->WriteSampleGrid(1).ok());
  EXPECT_TRUE(fs::exists(dir_ / "samples" / "step_0000040.png"));
}

// Resuming reproduces the next step bit for bit, even when the folder the config names has since
// been replaced by another autoencoder (the run reads its own copy), and ema/ is one servable
// folder with the autoencoder inside.
TEST_F(LatentTrainerTest, ResumesExactlyAndExportsAServableFolder) {
  const fs::path copy = dir_.string() + "-copy";
  fs::remove_all(copy);
  auto a = Create(TinyLatentTrainConfig(ae_dir_), dir_);
  ASSERT_TRUE(a.ok()) << a.status();
  std::atomic<bool> stop{false};
  ASSERT_TRUE((*a)->Run(stop, /*max_steps=*/5).ok());
  fs::copy(dir_, copy, fs::copy_options::recursive);
  // A copy without the latent cache re-encodes the dataset: the same latents, bit for bit.
  const fs::path uncached = dir_.string() + "-uncached";
  fs::remove_all(uncached);
  fs::copy(dir_, uncached, fs::copy_options::recursive);
  ASSERT_TRUE(fs::remove(uncached / kLatentCacheFile));
  const double loss_a = (*a)->TrainStep();

  fs::remove_all(ae_dir_);
  SaveTinyAutoencoder(ae_dir_, /*seed=*/4);  // another autoencoder under the same name
  auto b = Create(TinyLatentTrainConfig(ae_dir_), copy);
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_EQ((*b)->step(), 5);
  EXPECT_EQ((*b)->TrainStep(), loss_a);
  auto c = Create(TinyLatentTrainConfig(ae_dir_), uncached);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->TrainStep(), loss_a);
  EXPECT_TRUE(fs::exists(uncached / kLatentCacheFile));
  const auto pa = (*a)->model()->parameters(), pb = (*b)->model()->parameters();
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(torch::equal(pa[i], pb[i])) << i;

  const fs::path ema = dir_ / "ema";
  EXPECT_TRUE(fs::exists(ema / "autoencoder" / dm::kConfigFile));
  EXPECT_TRUE(fs::exists(ema / "autoencoder" / dm::kWeightsFile));
  absl::StatusOr<std::string> config_json = ReadFile((ema / dm::kConfigFile).string());
  ASSERT_TRUE(config_json.ok());
  EXPECT_THAT(*config_json, HasSubstr(R"("autoencoder": "autoencoder")"));
  absl::StatusOr<dm::Dart> served = dm::LoadCheckpoint(ema.string());
  ASSERT_TRUE(served.ok()) << served.status();
  ASSERT_TRUE((*served)->autoencoder());
  EXPECT_EQ((*served)->autoencoder()->config().latent_channels, 4);
  const dm::ModelInfo info = dm::DescribeModel(*served);
  EXPECT_EQ(info.image_size, 16);
  EXPECT_EQ(info.channels, 3);
}

TEST_F(LatentTrainerTest, RefusesAnAutoencoderThatDoesNotFit) {
  TrainConfig eight = TinyLatentTrainConfig(ae_dir_);
  eight.model.channels = 8;
  auto t = Create(eight, dir_);
  ASSERT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << t.status();
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("latent_channels"));
  EXPECT_THAT(std::string(t.status().message()), HasSubstr(ae_dir_.string()));
  // Nothing was copied into the run: fixing the config then works.
  EXPECT_FALSE(fs::exists(dir_ / "autoencoder"));
  EXPECT_TRUE(Create(TinyLatentTrainConfig(ae_dir_), dir_).ok());

  const fs::path big = dir_.string() + "-big";
  dm::AutoencoderConfig big_config = dm::AutoencoderConfig::Tiny();
  big_config.image_size = 32;  // 8x8 latents
  SaveTinyAutoencoder(big, /*seed=*/3, big_config);
  t = Create(TinyLatentTrainConfig(big), dir_.string() + "-big-run");
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("latent size"));
}

TEST_F(LatentTrainerTest, RefusesAnUncalibratedOrMissingAutoencoder) {
  const fs::path raw = dir_.string() + "-raw";
  dm::Autoencoder ae(dm::AutoencoderConfig::Tiny());
  ASSERT_TRUE(dm::SaveAutoencoder(raw.string(), ae).ok());
  auto t = Create(TinyLatentTrainConfig(raw), dir_);
  ASSERT_EQ(t.status().code(), absl::StatusCode::kFailedPrecondition) << t.status();
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("not calibrated"));

  t = Create(TinyLatentTrainConfig(dir_.string() + "-nowhere"), dir_);
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("model.autoencoder"));
}

TEST_F(LatentTrainerTest, RefusesImagesOfAnotherPixelSize) {
  InMemoryDataset small = SyntheticImages();
  small.images = small.images.slice(2, 0, 8).slice(3, 0, 8).contiguous();
  auto t = Trainer::Create(TinyLatentTrainConfig(ae_dir_), small, dir_.string());
  ASSERT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("pixel size 16"));
}

TEST(LatentTrainConfigTest, JsonRoundTripKeepsTheAutoencoder) {
  const TrainConfig c = TinyLatentTrainConfig("runs/some-autoencoder/ema");
  absl::StatusOr<TrainConfig> back = TrainConfigFromJson(TrainConfigToJson(c));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->model.autoencoder, "runs/some-autoencoder/ema");
  EXPECT_EQ(back->model.autoencoder_downsample, 4);
  EXPECT_EQ(TrainConfigToJson(*back), TrainConfigToJson(c));
}

}  // namespace
}  // namespace dartserve::train

#include "train/trainer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "model/checkpoint.h"
#include "model/text/tokenizer.h"
#include "tests/testing/tiny_model.h"

namespace dartserve::train {

using ::dartserve::data::InMemoryDataset;

namespace {

namespace fs = std::filesystem;

InMemoryDataset SyntheticData() {
  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(4);
  InMemoryDataset ds;
  const torch::Tensor coarse = torch::randint(0, 256, {24, 1, 4, 4}, gen, torch::kLong);
  ds.images = coarse.repeat_interleave(2, 2).repeat_interleave(2, 3).to(torch::kUInt8);
  ds.labels = torch::arange(24, torch::kLong) % 10;
  ds.num_classes = 10;
  return ds;
}

TrainConfig TinyTrainConfig() {
  TrainConfig c;
  c.model = model::ModelConfig::Tiny();
  c.batch_size = 8;
  c.total_steps = 1000;
  c.lr = 3e-3;
  c.warmup_steps = 5;
  c.log_every = 1000;
  c.checkpoint_every = 1000;
  c.sample_every = 0;
  c.weight_decay = 0.01;
  return c;
}

fs::path TestDir() {
  const fs::path dir = fs::path(::testing::TempDir()) /
                       ::testing::UnitTest::GetInstance()->current_test_info()->name();
  fs::remove_all(dir);
  return dir;
}

std::unique_ptr<Trainer> MustCreate(const TrainConfig& c, const fs::path& dir) {
  auto t = Trainer::Create(c, SyntheticData(), dir.string());
  EXPECT_TRUE(t.ok()) << t.status();
  return *std::move(t);
}

TEST(TrainerTest, SmokeLossIsFiniteAndFalls) {
  torch::set_num_threads(1);
  auto trainer = MustCreate(TinyTrainConfig(), TestDir());
  std::vector<double> losses;
  for (int i = 0; i < 60; ++i) losses.push_back(trainer->TrainStep());
  for (double l : losses) ASSERT_TRUE(std::isfinite(l));
  const double first = (losses[0] + losses[1] + losses[2]) / 3;
  const double last = (losses[57] + losses[58] + losses[59]) / 3;
  EXPECT_LT(last, 0.7 * first) << "first " << first << " last " << last;
  EXPECT_EQ(trainer->step(), 60);
}

// Stopping after a checkpoint and resuming reproduces the next step bit for bit: same batch, same
// noise, same optimiser state, same EMA.
TEST(TrainerTest, ResumeReproducesTheNextStepExactly) {
  torch::set_num_threads(1);
  const fs::path dir = TestDir();
  const fs::path copy = dir.string() + "_copy";
  fs::remove_all(copy);
  auto a = MustCreate(TinyTrainConfig(), dir);
  std::atomic<bool> stop{false};
  ASSERT_TRUE(a->Run(stop, /*max_steps=*/7).ok());  // checkpoints at the end
  ASSERT_EQ(a->step(), 7);
  fs::copy(dir, copy, fs::copy_options::recursive);
  const double loss_a = a->TrainStep();

  auto b = MustCreate(TinyTrainConfig(), copy);
  ASSERT_EQ(b->step(), 7);
  const double loss_b = b->TrainStep();
  EXPECT_EQ(loss_a, loss_b);
  const auto pa = a->model()->parameters(), pb = b->model()->parameters();
  const auto ea = a->ema()->parameters(), eb = b->ema()->parameters();
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_TRUE(torch::equal(pa[i], pb[i])) << "param " << i;
    EXPECT_TRUE(torch::equal(ea[i], eb[i])) << "ema " << i;
  }
  // The EMA export is a servable checkpoint.
  EXPECT_TRUE(fs::exists(dir / "ema" / "model.safetensors"));
  EXPECT_TRUE(fs::exists(dir / "ema" / "config.json"));
}

TEST(TrainerTest, ResumeRefusesADifferentModel) {
  const fs::path dir = TestDir();
  auto a = MustCreate(TinyTrainConfig(), dir);
  ASSERT_TRUE(a->SaveCheckpoint().ok());
  TrainConfig other = TinyTrainConfig();
  other.model.depth = 3;
  auto b = Trainer::Create(other, SyntheticData(), dir.string());
  EXPECT_EQ(b.status().code(), absl::StatusCode::kFailedPrecondition);
}

// init_from starts a fresh run from a checkpoint's weights (model and EMA alike) with a fresh
// optimiser; another architecture is refused, naming the tensor that differs.
TEST(TrainerTest, InitFromStartsFromACheckpointsWeights) {
  const fs::path dir = TestDir();
  auto a = MustCreate(TinyTrainConfig(), dir);
  for (int i = 0; i < 3; ++i) a->TrainStep();
  ASSERT_TRUE(a->SaveCheckpoint().ok());
  TrainConfig c = TinyTrainConfig();
  c.seed = 9;  // else a fresh model would start from the same weights anyway
  c.init_from = (dir / "ema").string();
  auto b = MustCreate(c, dir.string() + "-init");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->step(), 0);
  const auto pa = a->ema()->named_parameters();
  for (const auto& p : b->model()->named_parameters()) {
    EXPECT_TRUE(torch::equal(p.value(), pa[p.key()])) << p.key();
  }
  for (const auto& p : b->ema()->named_parameters()) {
    EXPECT_TRUE(torch::equal(p.value(), pa[p.key()])) << p.key();
  }
  c.model.width *= 2;
  auto wider = Trainer::Create(c, SyntheticData(), dir.string() + "-wider");
  EXPECT_EQ(wider.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(wider.status().message()), ::testing::HasSubstr("another architecture"));
}

// init_grow: a deeper model starts from a shallower checkpoint as the same function (the new blocks
// are identities) and then trains them; any other difference from the checkpoint is refused.
TEST(TrainerTest, InitGrowStartsADeeperModelAsTheCheckpointsFunction) {
  torch::set_num_threads(1);
  const fs::path dir = TestDir();
  auto a = MustCreate(TinyTrainConfig(), dir);
  for (int i = 0; i < 3; ++i) a->TrainStep();
  ASSERT_TRUE(a->SaveCheckpoint().ok());
  TrainConfig c = TinyTrainConfig();
  c.seed = 9;
  c.init_from = (dir / "ema").string();
  c.init_grow = true;
  c.model.depth = TinyTrainConfig().model.depth + 2;
  auto b = MustCreate(c, dir.string() + "-grown");
  ASSERT_NE(b, nullptr);
  const model::ModelConfig& mc = c.model;
  {
    torch::NoGradGuard no_grad;
    const torch::Tensor x = torch::randn({2, mc.sequence_length(), mc.token_dim()});
    const torch::Tensor y = torch::tensor({1, 4}, torch::kLong);
    a->ema()->eval();
    b->model()->eval();
    EXPECT_TRUE(torch::allclose(b->model()->forward(x, y), a->ema()->forward(x, y), 1e-5, 1e-6));
    b->model()->train();
  }
  for (int i = 0; i < 2; ++i) b->TrainStep();
  const auto grown = b->model()->named_parameters();
  const std::string last_block = "blocks." + std::to_string(mc.depth - 1);
  EXPECT_GT(grown[last_block + ".ada.weight"].abs().sum().item<double>(), 0);  // new blocks learn

  c.model.width *= 2;
  auto wider = Trainer::Create(c, SyntheticData(), dir.string() + "-wider");
  EXPECT_EQ(wider.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(wider.status().message()), ::testing::HasSubstr("depth only"));
  c.model = TinyTrainConfig().model;
  c.model.depth = 1;
  auto shallower = Trainer::Create(c, SyntheticData(), dir.string() + "-shallower");
  EXPECT_THAT(std::string(shallower.status().message()), ::testing::HasSubstr("deeper"));
}

// Rows that repeat an image (several captions per image) map to the first row with its bytes.
TEST(TrainerTest, DistinctImageRowsFindsRepeatedImages) {
  torch::Tensor images = torch::zeros({5, 1, 2, 2}, torch::kUInt8);
  images[1].fill_(7);
  images[2].fill_(7);
  images[4].fill_(9);
  EXPECT_TRUE(
      torch::equal(DistinctImageRows(images), torch::tensor({0, 1, 1, 0, 4}, torch::kLong)));
}

TEST(TrainerTest, RejectsMismatchedData) {
  TrainConfig c = TinyTrainConfig();
  c.model.image_size = 16;
  auto t = Trainer::Create(c, SyntheticData(), TestDir().string());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TrainerTest, LearningRateWarmsUpThenDecays) {
  auto t = MustCreate(TinyTrainConfig(), TestDir());
  EXPECT_NEAR(t->LearningRate(0), 3e-3 / 5, 1e-12);
  EXPECT_NEAR(t->LearningRate(4), 3e-3, 1e-12);
  EXPECT_NEAR(t->LearningRate(1000), TinyTrainConfig().min_lr, 1e-12);
  EXPECT_GT(t->LearningRate(100), t->LearningRate(500));
}

TEST(TrainerTest, SampleGridIsWritten) {
  const fs::path dir = TestDir();
  auto t = MustCreate(TinyTrainConfig(), dir);
  ASSERT_TRUE(t->WriteSampleGrid(2).ok());
  EXPECT_TRUE(fs::exists(dir / "samples" / "step_0000000.png"));
}

// A text model on the procedural captioned shapes: the run trains its tokenizer from the captions,
// resumes exactly (the same captions reach the same steps), and its EMA export is a servable text
// checkpoint with the tokenizer beside it.
TrainConfig TinyTextTrainConfig() {
  TrainConfig c = TinyTrainConfig();
  c.dataset = "shapes";
  c.dataset_size = 64;
  c.model = testing::WithTinyText(c.model);
  c.model.image_size = 32;
  c.model.channels = 3;
  c.model.patch_size = 8;  // K = 16
  c.model.text_vocab_size = 400;
  c.model.text_max_tokens = 40;  // two-shape captions
  c.model.text_depth = 1;
  return c;
}

TEST(TrainerTest, TextModelTrainsResumesAndExports) {
  torch::set_num_threads(1);
  const TrainConfig config = TinyTextTrainConfig();
  absl::StatusOr<InMemoryDataset> data = LoadTrainingData(config);
  ASSERT_TRUE(data.ok()) << data.status();
  ASSERT_EQ(data->captions.size(), 64u);
  const fs::path dir = TestDir();
  const fs::path copy = dir.string() + "_copy";
  fs::remove_all(copy);
  auto a = Trainer::Create(config, *data, dir.string());
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_TRUE(fs::exists(dir / model::kTokenizerFile));
  std::atomic<bool> stop{false};
  ASSERT_TRUE((*a)->Run(stop, /*max_steps=*/5).ok());
  fs::copy(dir, copy, fs::copy_options::recursive);
  const double loss_a = (*a)->TrainStep();
  EXPECT_TRUE(std::isfinite(loss_a));

  auto b = Trainer::Create(config, *data, copy.string());
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_EQ((*b)->step(), 5);
  EXPECT_EQ((*b)->TrainStep(), loss_a);

  absl::StatusOr<model::Dart> served = model::LoadCheckpoint((dir / "ema").string());
  ASSERT_TRUE(served.ok()) << served.status();
  EXPECT_NE((*served)->tokenizer(), nullptr);
  ASSERT_TRUE((*a)->WriteSampleGrid(1).ok());

  // A text model without captions, or captions for a class model, are refused.
  InMemoryDataset no_captions = *data;
  no_captions.captions.clear();
  EXPECT_EQ(Trainer::Create(config, no_captions, TestDir().string()).status().code(),
            absl::StatusCode::kInvalidArgument);
  TrainConfig class_on_shapes = config;
  class_on_shapes.model.conditioning = model::Conditioning::kClass;
  EXPECT_FALSE(class_on_shapes.Validate().ok());
}

TEST(TrainConfigTest, JsonRoundTripAndErrors) {
  const TrainConfig c = TinyTrainConfig();
  auto back = TrainConfigFromJson(TrainConfigToJson(c));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(TrainConfigToJson(*back), TrainConfigToJson(c));
  EXPECT_THAT(std::string(TrainConfigFromJson(R"({"lr": 0})").status().message()),
              ::testing::HasSubstr("lr"));
  EXPECT_THAT(std::string(TrainConfigFromJson(R"({"batch": 3})").status().message()),
              ::testing::HasSubstr("batch"));
  EXPECT_THAT(std::string(TrainConfigFromJson(R"({"model": {"depth": 0}})").status().message()),
              ::testing::HasSubstr("model.depth"));
}

}  // namespace
}  // namespace dartserve::train

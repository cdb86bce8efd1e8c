#include "eval/emoji_eval.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/file_io.h"
#include "common/pixels.h"
#include "common/png.h"
#include "data/emoji.h"
#include "eval/classifier.h"
#include "eval/emoji_classifier.h"

namespace dartserve::eval {
namespace {

constexpr int kSize = 16;
constexpr int kConcepts = 4;
// The first three of data::EmojiStyles(), so a style's position here is its style_id.
const char* const kStyles[] = {"twemoji", "noto", "noto-v1"};

// 16x16 RGB on white: concept c is the colour, style s the shape (a square, a wide bar, a tall
// bar), so both heads have something trivially separable to learn.
Pixels Synthetic(int concept_id, int style) {
  static constexpr uint8_t kColours[kConcepts][3] = {
      {220, 30, 30}, {30, 180, 40}, {30, 60, 220}, {240, 200, 20}};
  Pixels px{.width = kSize, .height = kSize, .channels = 3};
  px.data.assign(kSize * kSize * 3, 255);
  const int half_w = style == 2 ? 2 : 6, half_h = style == 1 ? 2 : 6;
  for (int y = 8 - half_h; y < 8 + half_h; ++y) {
    for (int x = 8 - half_w; x < 8 + half_w; ++x) {
      for (int ch = 0; ch < 3; ++ch) px.data[(y * kSize + x) * 3 + ch] = kColours[concept_id][ch];
    }
  }
  return px;
}

// A data folder in data/emoji_prep.h's format: every (concept, style) pair, the pairs with
// concept == style held out. Returns the folder.
std::string WriteSyntheticData(const std::string& name) {
  const std::string dir = absl::StrCat(::testing::TempDir(), "/", name);
  std::string tsv = "file\tconcept\tstyle\tcategory\tsplit\tlabel\tkeywords\n";
  for (int c = 0; c < kConcepts; ++c) {
    for (int s = 0; s < 3; ++s) {
      const std::string file = absl::StrCat("images/", kStyles[s], "/thing-", c, ".png");
      std::filesystem::create_directories(std::filesystem::path(dir + "/" + file).parent_path());
      absl::StatusOr<std::string> png = EncodePng(Synthetic(c, s));
      EXPECT_TRUE(png.ok());
      EXPECT_TRUE(WriteFileAtomically(dir + "/" + file, *png).ok());
      absl::StrAppend(&tsv, file, "\tthing-", c, "\t", kStyles[s], "\tObjects\t",
                      c == s ? "heldout" : "train", "\tthing ", c, "\tthing;", c, "\n");
    }
  }
  EXPECT_TRUE(WriteFileAtomically(dir + "/index.tsv", tsv).ok());
  return dir;
}

EmojiClassifierConfig TinyConfig() {
  return {.image_size = kSize,
          .stem_channels = 8,
          .stem_stride = 1,
          .stage_channels = {16, 16},
          .blocks_per_stage = 1,
          .groups = 4,
          .num_concepts = kConcepts,
          .num_styles = 7};
}

TEST(EmojiClassifierTest, SaveLoadRoundTripGivesIdenticalLogits) {
  const std::string data_dir = WriteSyntheticData("emoji-roundtrip-data");
  torch::manual_seed(3);
  EmojiClassifier model(TinyConfig());
  model->eval();
  const torch::Tensor x = torch::rand({5, 3, kSize, kSize}) * 2 - 1;
  const FeatureStats stats = ComputeFeatureStats(EmojiFeatures(model, x));
  const EmojiClassifierMetrics metrics{.held_out = {.images = 4, .concept_top5 = 0.75},
                                       .fid_floor = 1.5};
  auto index_tsv = ReadFile(data_dir + "/index.tsv");
  ASSERT_TRUE(index_tsv.ok());
  const std::string dir = ::testing::TempDir() + "/emoji-classifier";
  ASSERT_TRUE(SaveEmojiClassifier(dir, model, metrics, *index_tsv, stats).ok());

  auto loaded = LoadEmojiClassifier(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  torch::NoGradGuard no_grad;
  const auto [concepts, styles] = model->forward(x);
  const auto [concepts2, styles2] = loaded->model->forward(x);
  EXPECT_TRUE(torch::equal(concepts, concepts2));
  EXPECT_TRUE(torch::equal(styles, styles2));
  EXPECT_EQ(loaded->metrics.held_out.concept_top5, 0.75);
  EXPECT_EQ(loaded->metrics.fid_floor, 1.5);
  EXPECT_EQ(loaded->index.concepts.size(), static_cast<size_t>(kConcepts));
  EXPECT_TRUE(torch::allclose(loaded->real.mean, stats.mean, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(loaded->real.covariance, stats.covariance, 1e-5, 1e-6));

  // A folder whose index does not match the classifier's concepts is refused.
  ASSERT_TRUE(WriteFileAtomically(dir + "/index.tsv",
                                  index_tsv->substr(0, index_tsv->find("thing-3") - 20) + "\n")
                  .ok());
  EXPECT_FALSE(LoadEmojiClassifier(dir).ok());
}

TEST(EmojiClassifierTest, TrainsOnTrivialData) {
  const std::string dir = WriteSyntheticData("emoji-train-data");
  auto train = data::LoadEmojiDataset(dir, data::EmojiSplit::kTrain, 1);
  auto held_out = data::LoadEmojiDataset(dir, data::EmojiSplit::kHeldOut, 1);
  ASSERT_TRUE(train.ok()) << train.status();
  ASSERT_TRUE(held_out.ok()) << held_out.status();
  ASSERT_EQ(train->data.size(), 9);
  ASSERT_EQ(held_out->data.size(), 3);
  EmojiClassifierTraining options{
      .epochs = 400, .batch_size = 9, .lr = 5e-3, .warmup_steps = 20, .seed = 1};
  options.augmentation.max_shift = 1;
  EmojiClassifier model = TrainEmojiClassifier(TinyConfig(), *train, options);
  const EmojiAccuracy on_train = MeasureEmojiAccuracy(model, *train);
  EXPECT_EQ(on_train.images, 9);
  EXPECT_GE(on_train.concept_top1, 0.99);
  EXPECT_GE(on_train.style, 0.99);
  // An unseen (colour, shape) pair: the colour still names the concept. (Its shape is not checked:
  // with nine images the style head may as well key on colour, since each colour shows only two
  // of the three shapes.)
  const EmojiAccuracy on_held_out = MeasureEmojiAccuracy(model, *held_out);
  EXPECT_GE(on_held_out.concept_top1, 0.6);
}

TEST(EmojiClassifierTest, ScoreEmojiCountsTopFiveAndSkipsUnstyled) {
  const EmojiPredictions p{
      .concept_top5 = torch::tensor({0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, torch::kLong).view({2, 5}),
      .style = torch::tensor({1, 2}, torch::kLong)};
  const EmojiAccuracy a =
      ScoreEmoji(p, torch::tensor({0, 9}, torch::kLong), torch::tensor({1, -1}, torch::kLong));
  EXPECT_EQ(a.images, 2);
  EXPECT_DOUBLE_EQ(a.concept_top1, 0.5);  // 0 is first; 9 only fifth
  EXPECT_DOUBLE_EQ(a.concept_top5, 1.0);
  EXPECT_DOUBLE_EQ(a.style, 1.0);  // the second image names no style
}

TEST(EmojiAugmentTest, KeepsWhiteBackgroundAndIsSeeded) {
  const torch::Tensor x = torch::ones({4, 3, kSize, kSize});
  torch::Generator gen0 = at::make_generator<at::CPUGeneratorImpl>(4);
  torch::Generator gen1 = at::make_generator<at::CPUGeneratorImpl>(5);
  torch::Generator gen2 = at::make_generator<at::CPUGeneratorImpl>(5);
  const EmojiAugmentation options{.brightness = 0};
  // A white image stays white whatever the shift, scale and contrast.
  EXPECT_TRUE(torch::allclose(AugmentEmoji(x, options, gen0), x, 0, 1e-5));
  const torch::Tensor y = torch::rand({4, 3, kSize, kSize}) * 2 - 1;
  EXPECT_TRUE(torch::equal(AugmentEmoji(y, options, gen1), AugmentEmoji(y, options, gen2)));
  EXPECT_FALSE(torch::equal(AugmentEmoji(y, options, gen1), y));
}

TEST(EmojiPromptSetTest, DeterministicDisjointAndFromTheRightSplit) {
  auto index = data::LoadEmojiIndex(WriteSyntheticData("emoji-prompt-data"));
  ASSERT_TRUE(index.ok()) << index.status();
  const auto seen = MakeEmojiPromptSet(*index, EmojiPromptSet::kSeen, 6, 7);
  const auto held = MakeEmojiPromptSet(*index, EmojiPromptSet::kHeldOut, 100, 7);
  const auto concepts = MakeEmojiPromptSet(*index, EmojiPromptSet::kConceptOnly, 3, 7);
  ASSERT_EQ(seen.size(), 6u);
  ASSERT_EQ(held.size(), 3u);  // only three held-out pairs exist
  ASSERT_EQ(concepts.size(), 3u);
  std::set<std::pair<int, int>> seen_pairs;
  for (const EmojiPrompt& p : seen) {
    EXPECT_NE(p.concept_id, p.style_id) << p.text;  // the synthetic held-out pairs have c == s
    EXPECT_TRUE(seen_pairs.insert({p.concept_id, p.style_id}).second) << "repeated " << p.text;
    EXPECT_NE(p.text.find(" style"), std::string::npos) << p.text;
  }
  for (const EmojiPrompt& p : held) {
    EXPECT_EQ(p.concept_id, p.style_id) << p.text;
    EXPECT_FALSE(seen_pairs.count({p.concept_id, p.style_id})) << p.text;
  }
  std::set<int> concept_ids;
  for (const EmojiPrompt& p : concepts) {
    EXPECT_EQ(p.style_id, -1);
    EXPECT_EQ(p.text, absl::StrCat("thing ", p.concept_id));
    EXPECT_TRUE(concept_ids.insert(p.concept_id).second);
  }
  // Fixed by the seed; another seed gives another order.
  const auto again = MakeEmojiPromptSet(*index, EmojiPromptSet::kSeen, 6, 7);
  const auto other = MakeEmojiPromptSet(*index, EmojiPromptSet::kSeen, 6, 8);
  bool differs = false;
  for (size_t i = 0; i < seen.size(); ++i) {
    EXPECT_EQ(seen[i].text, again[i].text);
    differs = differs || seen[i].text != other[i].text;
  }
  EXPECT_TRUE(differs);
}

TEST(EmojiReconstructionTest, ScoresOriginalsAsTheClassifierAndReconstructionsInAnyBatching) {
  const std::string dir = WriteSyntheticData("emoji-reconstruction-data");
  auto data = data::LoadEmojiDataset(dir, data::EmojiSplit::kAll, 1);
  ASSERT_TRUE(data.ok()) << data.status();
  torch::manual_seed(5);
  EmojiClassifierFolder folder{.model = EmojiClassifier(TinyConfig())};
  folder.model->eval();
  model::Autoencoder autoencoder(model::AutoencoderConfig::Tiny());  // 16x16 RGB, random weights
  autoencoder->eval();

  auto whole = ScoreEmojiReconstructions(autoencoder, folder, *data, /*batch=*/12);
  ASSERT_TRUE(whole.ok()) << whole.status();
  const EmojiAccuracy direct = MeasureEmojiAccuracy(folder.model, *data);
  EXPECT_EQ(whole->originals.images, 12);
  EXPECT_EQ(whole->originals.concept_top1, direct.concept_top1);
  EXPECT_EQ(whole->originals.concept_top5, direct.concept_top5);
  EXPECT_EQ(whole->originals.style, direct.style);
  EXPECT_EQ(whole->reconstructions.images, 12);
  // Batches are independent: one image at a time reads the same.
  auto single = ScoreEmojiReconstructions(autoencoder, folder, *data, /*batch=*/1);
  ASSERT_TRUE(single.ok()) << single.status();
  EXPECT_EQ(single->reconstructions.concept_top1, whole->reconstructions.concept_top1);
  EXPECT_EQ(single->reconstructions.style, whole->reconstructions.style);

  EXPECT_EQ(ScoreEmojiReconstructions(autoencoder, folder, *data, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(EmojiScoreTest, FidAgainstOwnStatsIsZeroAndScoresFollowPrompts) {
  torch::manual_seed(4);
  EmojiClassifierFolder folder{.model = EmojiClassifier(TinyConfig())};
  folder.model->eval();
  const torch::Tensor images = torch::rand({12, 3, kSize, kSize}) * 2 - 1;
  folder.real = ComputeFeatureStats(EmojiFeatures(folder.model, images));
  EXPECT_NEAR(FrechetDistance(folder.real, folder.real), 0.0, 1e-6);
  // The stats overload agrees with the feature-set one.
  const torch::Tensor other = EmojiFeatures(folder.model, images.flip(3));
  EXPECT_NEAR(FrechetDistance(ComputeFeatureStats(other), folder.real),
              FrechetDistance(other, EmojiFeatures(folder.model, images)), 1e-6);

  // Prompts asking for exactly what the classifier predicts score 1 on every count.
  const EmojiPredictions predicted = PredictEmoji(folder.model, images);
  std::vector<EmojiPrompt> prompts;
  for (int i = 0; i < 6; ++i) {
    prompts.push_back(
        {.text = "p",
         .concept_id = static_cast<int>(predicted.concept_top5[2 * i][0].item<int64_t>()),
         .style_id = static_cast<int>(predicted.style[2 * i].item<int64_t>())});
  }
  auto report = ScoreEmojiSet(folder, prompts,
                              images.index({torch::arange(0, 12, 2)}).repeat_interleave(2, 0), 2,
                              /*fid=*/true);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_DOUBLE_EQ(report->accuracy.concept_top1, 1.0);
  EXPECT_DOUBLE_EQ(report->accuracy.style, 1.0);
  EXPECT_EQ(report->predicted_concept.size(), 12u);
  EXPECT_GE(report->fid, 0.0);
  EXPECT_FALSE(ScoreEmojiSet(folder, prompts, images.narrow(0, 0, 5), 2, true).ok());
}

}  // namespace
}  // namespace dartserve::eval

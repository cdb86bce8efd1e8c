// Quality gates on the shipped weights (docs/quality.md has the full measurement).
#include <gtest/gtest.h>

#include "data/dataset.h"
#include "data/scenes64.h"
#include "data/shapes.h"
#include "eval/attribute_classifier.h"
#include "eval/classifier.h"
#include "eval/emoji_classifier.h"
#include "eval/emoji_eval.h"
#include "eval/eval.h"
#include "eval/prompt_eval.h"
#include "eval/text64_eval.h"
#include "model/checkpoint.h"

namespace dartserve::eval {

using ::dartserve::data::FixedPromptSet;
using ::dartserve::data::FixedPromptSet64;
using ::dartserve::data::LoadFashionMnist;
using ::dartserve::data::PromptSet64;

namespace {

const std::string kWeights = DARTSERVE_SOURCE_DIR "/weights";

TEST(QualityGateTest, ShippedClassifierIsAccurateOnRealTestImages) {
  torch::set_num_threads(1);  // ctest runs tests in parallel
  double recorded = 0;
  auto clf = LoadClassifier(kWeights + "/fmnist-classifier", &recorded);
  ASSERT_TRUE(clf.ok()) << clf.status();
  auto test = LoadFashionMnist("test");
  ASSERT_TRUE(test.ok()) << test.status();
  auto [x, y] = test->Batch(torch::arange(test->size(), torch::kLong));
  const double acc = Accuracy(*clf, x, y);
  EXPECT_GE(acc, 0.88);
  // The shipped file is the one docs/quality.md measured (a few borderline images may flip on a
  // CPU with other SIMD kernels).
  EXPECT_NEAR(acc, recorded, 2e-3);
}

struct ShippedModel {
  const char* dir;
  double min_accuracy;
};

class ShippedModelTest : public ::testing::TestWithParam<ShippedModel> {};

// 200 samples (20 per class, fixed seeds) at the served default guidance 2: the classifier must
// recognise at least `min_accuracy` as the class they were generated for.
TEST_P(ShippedModelTest, ConditionalAccuracy) {
  torch::set_num_threads(1);  // ctest runs tests in parallel
  auto clf = LoadClassifier(kWeights + "/fmnist-classifier");
  ASSERT_TRUE(clf.ok()) << clf.status();
  auto model = model::LoadCheckpoint(kWeights + "/" + GetParam().dir);
  ASSERT_TRUE(model.ok()) << model.status();
  auto report = EvaluateClassModel(*model, *clf, torch::Tensor(),
                                   {.per_class = 20, .guidance_scale = 2.0f, .seed = 12345});
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->num_images, 200);
  EXPECT_GE(report->conditional_accuracy, GetParam().min_accuracy);
  std::cout << GetParam().dir << ": conditional accuracy on 200 samples "
            << report->conditional_accuracy << "\n";
}

// The bounds sit a few points under what docs/quality.md records for these samples.
INSTANTIATE_TEST_SUITE_P(Shipped, ShippedModelTest,
                         ::testing::Values(ShippedModel{"fmnist-dart-fm", 0.75},
                                           ShippedModel{"fmnist-dart", 0.80}),
                         [](const auto& info) {
                           return std::string(info.param.dir) == "fmnist-dart" ? "Dart" : "DartFm";
                         });

// The default model's FID on 500 fixed-seed samples (FID on the classifier's features against the
// test set; 500 samples read higher than the 10k figures in docs/quality.md, which records this
// measurement too). One ODE step per DART step, a mean head or broken weights all land well above
// the bound. (The FM-vs-mean comparison itself needs thousands of samples.)
TEST(QualityGateTest, DefaultModelFid) {
  torch::set_num_threads(1);
  auto clf = LoadClassifier(kWeights + "/fmnist-classifier");
  ASSERT_TRUE(clf.ok()) << clf.status();
  auto test = LoadFashionMnist("test");
  ASSERT_TRUE(test.ok()) << test.status();
  const torch::Tensor reference =
      ExtractFeatures(*clf, test->Batch(torch::arange(test->size(), torch::kLong)).first);
  auto model = model::LoadCheckpoint(kWeights + "/fmnist-dart-fm");
  ASSERT_TRUE(model.ok()) << model.status();
  auto report = EvaluateClassModel(*model, *clf, reference,
                                   {.per_class = 50, .guidance_scale = 2.0f, .seed = 777});
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_LE(report->fid, 75.0);
  std::cout << "fmnist-dart-fm: FID on 500 samples " << report->fid << "\n";
}

// The shipped text model on the 100 fixed seen prompts (FixedPromptSet(100, 1234), one sample
// each at the served default guidance 2), scored by the shipped shape classifier: the fraction of
// images with every attribute right (colour, shape, position, size, count, background); what it
// measures is in docs/quality.md. The bound is the project's target for this model, 70 %.
TEST(QualityGateTest, TextModelPromptAdherence) {
  torch::set_num_threads(1);
  auto classifier = LoadShapeClassifier(kWeights + "/shapes-classifier");
  ASSERT_TRUE(classifier.ok()) << classifier.status();
  auto model = model::LoadCheckpoint(kWeights + "/shapes-dart");
  ASSERT_TRUE(model.ok()) << model.status();
  auto report = EvaluateTextModel(*model, FixedPromptSet(100, 1234, /*held_out=*/false),
                                  LearnedShapeClassifier(*classifier),
                                  {.per_prompt = 1, .guidance_scale = 2.0f, .seed = 0});
  ASSERT_TRUE(report.ok()) << report.status();
  const CheckTally& tally = report->adherence.tally;
  EXPECT_EQ(tally.n, 100);
  EXPECT_GE(tally.Rate(tally.all), 0.70);
  std::cout << "shapes-dart: " << SummaryLine(report->adherence) << "\n";
}

// The shipped 64x64 latent text model (DART on its autoencoder's latents, decoded by the
// autoencoder in the checkpoint) on the 100 prompts of three fixed 64x64 sets
// (FixedPromptSet64(set, 100, 1234), one sample each at the served default guidance 2), checked by
// the 64x64 scene analysis: one object of a seen or a held-out colour-shape pair must come out
// all-correct, two objects in their stated relation. The bounds sit a few points under what
// docs/quality.md records for these very samples; a pixel model, an autoencoder that does not match
// or broken weights land far below them.
struct LatentGate {
  PromptSet64 set;
  const char* name;
  double min_all;       // fraction of images with every stated attribute right
  double min_relation;  // fraction whose two objects stand in the stated relation
};

class ShippedLatentModelTest : public ::testing::TestWithParam<LatentGate> {};

TEST_P(ShippedLatentModelTest, PromptAdherence) {
  torch::set_num_threads(1);
  auto model = model::LoadCheckpoint(kWeights + "/scenes64-dart");
  ASSERT_TRUE(model.ok()) << model.status();
  auto report = EvaluateTextModel64(*model, FixedPromptSet64(GetParam().set, 100, 1234),
                                    {.per_prompt = 1, .guidance_scale = 2.0f, .seed = 0});
  ASSERT_TRUE(report.ok()) << report.status();
  const Scene64Tally& tally = report->adherence.tally;
  EXPECT_EQ(tally.n, 100);
  EXPECT_GE(tally.all.rate(), GetParam().min_all);
  EXPECT_GE(tally.relation.rate(), GetParam().min_relation);
  std::cout << "scenes64-dart " << GetParam().name << ": " << SummaryLine(report->adherence)
            << "\n";
}

INSTANTIATE_TEST_SUITE_P(Shipped, ShippedLatentModelTest,
                         ::testing::Values(LatentGate{PromptSet64::kSeen, "Seen", 0.78, 0},
                                           LatentGate{PromptSet64::kHeldOut, "HeldOut", 0.87, 0},
                                           LatentGate{PromptSet64::kRelation, "Relation", 0, 0.66}),
                         [](const auto& info) { return std::string(info.param.name); });

// The emoji evaluator is trustworthy: the shipped classifier recognises real images of pairs it
// never saw (an unseen style of a seen concept) far above chance (1 in 1,672 concepts, 1 in 7
// styles), as docs/quality.md records.
TEST(QualityGateTest, ShippedEmojiClassifierRecognisesRealHeldOutPairs) {
  auto classifier = LoadEmojiClassifier(kWeights + "/emoji-classifier");
  ASSERT_TRUE(classifier.ok()) << classifier.status();
  const EmojiClassifierMetrics& m = classifier->metrics;
  EXPECT_GE(m.held_out.concept_top5, 0.60);
  EXPECT_GE(m.held_out.style, 0.70);
  EXPECT_GE(m.train.concept_top1, 0.90);
  EXPECT_EQ(classifier->index.concepts.size(), 1672u);
}

// Concept top-5 and style accuracy of weights/emoji-dart at the served guidance, 100 prompts per
// set, as dartserve-eval --task emoji measures them (docs/quality.md, "Emoji"), a few points
// under the measurement.
TEST(QualityGateTest, ShippedEmojiModelDrawsWhatItIsAskedFor) {
  torch::set_num_threads(1);
  auto model = model::LoadCheckpoint(kWeights + "/emoji-dart");
  ASSERT_TRUE(model.ok()) << model.status();
  auto classifier = LoadEmojiClassifier(kWeights + "/emoji-classifier");
  ASSERT_TRUE(classifier.ok()) << classifier.status();
  // At the guidance the model is served at (its serving.json), which the targets are about.
  auto info = model::DescribeCheckpoint(kWeights + "/emoji-dart", *model);
  ASSERT_TRUE(info.ok()) << info.status();
  std::cout << "emoji-dart served at guidance " << info->default_guidance << "\n";
  auto report =
      EvaluateEmojiModel(*model, *classifier, /*prompts_per_set=*/100, /*prompt_seed=*/1234,
                         {.per_prompt = 1, .guidance_scale = info->default_guidance, .seed = 0});
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_EQ(report->sets.size(), 3u);
  const EmojiSetReport& seen = report->sets[0];
  const EmojiSetReport& held_out = report->sets[1];
  const EmojiSetReport& concept_only = report->sets[2];
  for (const EmojiSetReport* set : {&seen, &held_out, &concept_only}) {
    EXPECT_EQ(set->accuracy.images, 100);
    std::cout << "emoji-dart " << set->name << ": "
              << EmojiSummaryLine(*set, classifier->metrics.fid_floor) << "\n";
  }
  EXPECT_GE(seen.accuracy.concept_top5, 0.64);
  EXPECT_GE(seen.accuracy.style, 0.68);
  EXPECT_GE(held_out.accuracy.concept_top5, 0.48);
  EXPECT_GE(held_out.accuracy.style, 0.55);
  EXPECT_GE(concept_only.accuracy.concept_top5, 0.67);
}

}  // namespace
}  // namespace dartserve::eval

#include "eval/prompt_eval.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "eval/attribute_classifier.h"
#include "model/image.h"
#include "nlohmann/json.hpp"

namespace dartserve::eval {

using ::dartserve::data::FixedPromptSet;
using ::dartserve::data::InMemoryDataset;
using ::dartserve::data::kNumBackgrounds;
using ::dartserve::data::kNumColors;
using ::dartserve::data::kNumPositions;
using ::dartserve::data::kShapeImageSize;
using ::dartserve::data::Prompt;
using ::dartserve::data::RenderScene;
using ::dartserve::data::Scene;
using ::dartserve::data::Shape;
using ::dartserve::data::ShapeImage;
using ::dartserve::data::ShapeSpec;
using ::dartserve::data::SizeClass;

namespace {

constexpr int kN = kShapeImageSize;
constexpr int kPlane = kN * kN;
const std::string kShippedDir = DARTSERVE_SOURCE_DIR "/weights/shapes-classifier";

void Print(const char* what, const PromptEvalReport& report) {
  std::printf("%s: %s\n", what, SummaryLine(report).c_str());
}

// Loads the shipped classifier once for the whole suite.
class PromptEvalTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    torch::set_num_threads(1);  // ctest runs tests in parallel
    absl::StatusOr<Classifier> model = LoadShapeClassifier(kShippedDir, &shipped_accuracy_);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = new Classifier(*model);
    learned_ = new ShapeClassifier(LearnedShapeClassifier(*model_));
  }
  static void TearDownTestSuite() {
    delete learned_;
    delete model_;
  }
  void SetUp() override { torch::set_num_threads(1); }

  static SceneCheck Check(const ShapeImage& image, const Scene& scene) {
    return CheckScene(AnalyzeImage(image, *learned_), scene);
  }

  static inline Classifier* model_ = nullptr;
  static inline ShapeClassifier* learned_ = nullptr;
  static inline double shipped_accuracy_ = 0;
};

TEST_F(PromptEvalTest, ShippedClassifierIsAccurateOnFreshMasks) {
  // Seed 4242 is neither the training seed (1) nor its test seed; its scenes are new.
  const InMemoryDataset clean = MakeShapeMaskDataset(3000, 4242, {.augment = false});
  const InMemoryDataset degraded = MakeShapeMaskDataset(3000, 4242);
  ASSERT_GT(clean.size(), 3500);
  ASSERT_GT(degraded.size(), 3500);
  const double clean_accuracy = ShapeAccuracy(*model_, clean);
  const double degraded_accuracy = ShapeAccuracy(*model_, degraded);
  std::printf("shipped: recorded %.4f, fresh clean %.4f, fresh degraded %.4f\n", shipped_accuracy_,
              clean_accuracy, degraded_accuracy);
  EXPECT_GE(clean_accuracy, 0.99);
  // Measured 0.965. Most misses are 5-px squares under the 3x3 box blur, whose trimmed mask is
  // exactly a 5-px circle's.
  EXPECT_GE(degraded_accuracy, 0.95);
  EXPECT_GE(shipped_accuracy_, 0.95);  // the folder records what training measured
  EXPECT_NEAR(shipped_accuracy_, degraded_accuracy, 0.02);
}

TEST_F(PromptEvalTest, ShippedFolderIsSmallAndOtherClassifiersAreRejected) {
  EXPECT_LT(std::filesystem::file_size(kShippedDir + "/classifier.safetensors"), 1u << 20);
  // The Fashion-MNIST classifier has the same folder format but another geometry.
  const absl::StatusOr<Classifier> fmnist =
      LoadShapeClassifier(DARTSERVE_SOURCE_DIR "/weights/fmnist-classifier");
  EXPECT_EQ(fmnist.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LoadShapeClassifier(::testing::TempDir() + "/no-such-classifier").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(PromptEvalTest, TrainingIsDeterministicBySeed) {
  ShapeClassifierTraining options;
  options.train_scenes = 300;
  options.test_scenes = 100;
  options.training.epochs = 1;
  const TrainedShapeClassifier a = TrainShapeClassifier(options);
  const TrainedShapeClassifier b = TrainShapeClassifier(options);
  options.training.seed = 2;
  const TrainedShapeClassifier c = TrainShapeClassifier(options);
  const auto pa = a.model->parameters(), pb = b.model->parameters(), pc = c.model->parameters();
  ASSERT_EQ(pa.size(), pb.size());
  bool all_equal_c = true;
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_TRUE(torch::equal(pa[i], pb[i])) << i;
    all_equal_c = all_equal_c && torch::equal(pa[i], pc[i]);
  }
  EXPECT_FALSE(all_equal_c);
  EXPECT_EQ(a.test_accuracy, b.test_accuracy);

  const std::string dir = ::testing::TempDir() + "/shapes-classifier";
  Classifier model = a.model;
  ASSERT_TRUE(SaveShapeClassifier(dir, model, a.test_accuracy).ok());
  double accuracy = -1;
  absl::StatusOr<Classifier> loaded = LoadShapeClassifier(dir, &accuracy);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(accuracy, a.test_accuracy);
  const InMemoryDataset masks = MakeShapeMaskDataset(50, 9);
  EXPECT_TRUE(
      torch::equal(PredictShapes(model, masks.images), PredictShapes(*loaded, masks.images)));
}

// The crop puts the object's box in the middle, so where the object was does not matter.
TEST_F(PromptEvalTest, CropIgnoresPositionAndColour) {
  const Scene corner{.background = 0, .shapes = {{Shape::kTriangle, 0, SizeClass::kLarge, 0}}};
  const Scene centre{.background = 1, .shapes = {{Shape::kTriangle, 3, SizeClass::kLarge, 4}}};
  const Analysis a = AnalyzeImage(RenderScene(corner)), b = AnalyzeImage(RenderScene(centre));
  ASSERT_EQ(a.objects.size(), 1u);
  ASSERT_EQ(b.objects.size(), 1u);
  const ShapeMaskCrop crop = CropObjectMask(a.objects[0]);
  EXPECT_EQ(crop, CropObjectMask(b.objects[0]));
  // The 11-px box spans crop columns and rows 3..13, centred on pixel 8.
  for (int i = 0; i < kShapeMaskCrop * kShapeMaskCrop; ++i) {
    const int x = i % kShapeMaskCrop, y = i / kShapeMaskCrop;
    if (crop[i] != 0) {
      EXPECT_TRUE(x >= 3 && x <= 13 && y >= 3 && y <= 13) << x << "," << y;
    }
  }
  EXPECT_NE(crop[13 * kShapeMaskCrop + 3], 0);  // base corner
  EXPECT_NE(crop[3 * kShapeMaskCrop + 8], 0);   // apex
  EXPECT_EQ(crop[3 * kShapeMaskCrop + 3], 0);   // beside the apex
}

TEST_F(PromptEvalTest, ReferenceRenderingsScorePerfectly) {
  for (const bool held_out : {false, true}) {
    const std::vector<Prompt> prompts = FixedPromptSet(100, 1234, held_out);
    absl::StatusOr<PromptEvalReport> report =
        EvaluatePrompts(prompts, ReferenceImages(prompts), *learned_);
    ASSERT_TRUE(report.ok()) << report.status();
    Print(held_out ? "reference held-out" : "reference in-distribution", *report);
    EXPECT_EQ(report->tally.n, 100);
    EXPECT_EQ(report->tally.all, 100);
    EXPECT_EQ(report->tally.background, 100);
    ASSERT_EQ(report->results.size(), 100u);
    EXPECT_EQ(report->results[7].prompt, prompts[7].text);
    EXPECT_EQ(report->results[7].objects.size(), 1u);
  }
  // Two-shape prompts too.
  const std::vector<Prompt> two = FixedPromptSet(100, 77, false, 1.0);
  absl::StatusOr<PromptEvalReport> report = EvaluatePrompts(two, ReferenceImages(two), *learned_);
  ASSERT_TRUE(report.ok()) << report.status();
  Print("reference two-shape", *report);
  EXPECT_EQ(report->tally.all, 100);
}

TEST_F(PromptEvalTest, WrongColourFailsColourOnly) {
  const Prompt prompt = FixedPromptSet(1, 1234, false)[0];
  Scene drawn = prompt.scene;
  drawn.shapes[0].color = (drawn.shapes[0].color + 1) % kNumColors;
  absl::StatusOr<PromptEvalReport> report =
      EvaluatePrompts({prompt}, {RenderScene(drawn)}, *learned_);
  ASSERT_TRUE(report.ok()) << report.status();
  const SceneCheck& c = report->results[0].check;
  EXPECT_FALSE(c.color);
  EXPECT_TRUE(c.shape && c.position && c.size && c.count && c.background);
  EXPECT_FALSE(c.all);
  EXPECT_EQ(report->results[0].objects[0].color, drawn.shapes[0].color);
}

TEST_F(PromptEvalTest, WrongCellFailsPosition) {
  const Prompt prompt = FixedPromptSet(1, 1234, false)[0];
  Scene drawn = prompt.scene;
  ShapeSpec& s = drawn.shapes[0];
  s.position = (s.position + 4) % kNumPositions;
  s.dx = s.dy = 0;
  const SceneCheck c = Check(RenderScene(drawn), prompt.scene);
  EXPECT_FALSE(c.position);
  EXPECT_TRUE(c.color && c.shape && c.size && c.count);
  EXPECT_FALSE(c.all);
}

TEST_F(PromptEvalTest, BlankImageFailsCount) {
  const Prompt prompt = FixedPromptSet(1, 1234, false)[0];
  const Scene blank{.background = prompt.scene.background};
  absl::StatusOr<PromptEvalReport> report =
      EvaluatePrompts({prompt}, {RenderScene(blank)}, *learned_);
  ASSERT_TRUE(report.ok()) << report.status();
  const SceneCheck& c = report->results[0].check;
  EXPECT_FALSE(c.count);
  EXPECT_FALSE(c.color || c.shape || c.position || c.size || c.all);
  EXPECT_TRUE(c.background);
  EXPECT_TRUE(report->results[0].objects.empty());
  EXPECT_EQ(report->tally.all, 0);
  EXPECT_EQ(report->tally.background, 1);
}

// Blurred renderings stand in for a generator's soft edges. Under the [1 2 1] blur every prompt
// still passes; under the harsher 3x3 box blur every medium and large shape is still recognised
// (the learned classifier holding up where the geometric rules do not), and every large one
// passes outright. Measured box-blur misses the classifier cannot see: 5-px shapes whose trimmed
// mask turns into another's, and 8-px triangles whose 1-px apex rows AnalyzeImage's half-maximum
// trim drops, so their size reads small.
TEST_F(PromptEvalTest, BlurredRenderingsStillPass) {
  for (const bool held_out : {false, true}) {
    const std::vector<Prompt> prompts = FixedPromptSet(100, 1234, held_out);
    for (const int centre : {2, 1}) {
      std::vector<ShapeImage> images = ReferenceImages(prompts);
      for (ShapeImage& image : images) image = Blur(image, centre);
      absl::StatusOr<PromptEvalReport> learned = EvaluatePrompts(prompts, images, *learned_);
      absl::StatusOr<PromptEvalReport> geometric = EvaluatePrompts(prompts, images);
      ASSERT_TRUE(learned.ok() && geometric.ok());
      const std::string what = absl::StrCat(held_out ? "held-out" : "in-distribution",
                                            centre == 2 ? ", [1 2 1] blur" : ", box blur");
      Print((what + ", learned").c_str(), *learned);
      Print((what + ", geometric").c_str(), *geometric);
      EXPECT_EQ(learned->tally.color, 100) << what;
      EXPECT_EQ(learned->tally.position, 100) << what;
      EXPECT_EQ(learned->tally.count, 100) << what;
      if (centre == 2) {
        EXPECT_EQ(learned->tally.all, 100) << what;
        continue;
      }
      // Measured 0.93 / 0.94 learned against 0.70 / 0.74 geometric.
      EXPECT_GE(learned->tally.shape, 90) << what;
      EXPECT_GE(learned->tally.shape, geometric->tally.shape + 10) << what;
      for (size_t i = 0; i < prompts.size(); ++i) {
        const SizeClass size = prompts[i].scene.shapes[0].size;
        const SceneCheck& c = learned->results[i].check;
        if (size != SizeClass::kSmall) {
          EXPECT_TRUE(c.shape) << what << ": " << prompts[i].text;
        }
        if (size == SizeClass::kLarge) {
          EXPECT_TRUE(c.all) << what << ": " << prompts[i].text;
        }
      }
    }
  }
}

TEST_F(PromptEvalTest, ReportJsonRoundTrips) {
  // A mixed report: right, wrong colour, blank, and a two-shape scene.
  std::vector<Prompt> prompts = FixedPromptSet(3, 1234, false);
  prompts.push_back(FixedPromptSet(1, 5, false, 1.0)[0]);
  std::vector<ShapeImage> images = ReferenceImages(prompts);
  Scene recoloured = prompts[1].scene;
  recoloured.shapes[0].color = (recoloured.shapes[0].color + 3) % kNumColors;
  images[1] = RenderScene(recoloured);
  images[2] = RenderScene(Scene{.background = (prompts[2].scene.background + 1) % kNumBackgrounds});
  absl::StatusOr<PromptEvalReport> report = EvaluatePrompts(prompts, images, *learned_);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->tally.all, 2);

  const std::string text = ReportToJson(*report);
  const nlohmann::json j = nlohmann::json::parse(text);
  EXPECT_EQ(j["n"], 4);
  EXPECT_EQ(j["correct"]["all"], 2);
  EXPECT_DOUBLE_EQ(j["accuracy"]["color"].get<double>(), 0.5);  // wrong colour and blank fail
  EXPECT_EQ(j["results"][3]["objects"].size(), 2u);

  absl::StatusOr<PromptEvalReport> back = ReportFromJson(text);
  ASSERT_TRUE(back.ok()) << back.status();
  const CheckTally &a = report->tally, &b = back->tally;
  EXPECT_EQ(
      std::vector<int>({a.n, a.color, a.shape, a.position, a.size, a.count, a.background, a.all}),
      std::vector<int>({b.n, b.color, b.shape, b.position, b.size, b.count, b.background, b.all}));
  ASSERT_EQ(back->results.size(), report->results.size());
  for (size_t i = 0; i < report->results.size(); ++i) {
    const PromptResult &x = report->results[i], &y = back->results[i];
    EXPECT_EQ(x.prompt, y.prompt);
    EXPECT_EQ(x.background_color, y.background_color);
    const SceneCheck &cx = x.check, &cy = y.check;
    EXPECT_EQ(std::vector<bool>(
                  {cx.color, cx.shape, cx.position, cx.size, cx.count, cx.background, cx.all}),
              std::vector<bool>(
                  {cy.color, cy.shape, cy.position, cy.size, cy.count, cy.background, cy.all}));
    ASSERT_EQ(x.objects.size(), y.objects.size());
    for (size_t k = 0; k < x.objects.size(); ++k) {
      EXPECT_EQ(x.objects[k].shape, y.objects[k].shape);
      EXPECT_EQ(x.objects[k].color, y.objects[k].color);
      EXPECT_EQ(x.objects[k].size, y.objects[k].size);
      EXPECT_EQ(x.objects[k].position, y.objects[k].position);
      EXPECT_EQ(x.objects[k].area, y.objects[k].area);
    }
  }
  EXPECT_EQ(ReportToJson(*back), text);

  EXPECT_FALSE(ReportFromJson("{").ok());
  nlohmann::json bad = j;
  bad["results"][0]["objects"] = nlohmann::json::array({{{"shape", "hexagon"}}});
  EXPECT_EQ(ReportFromJson(bad.dump()).status().code(), absl::StatusCode::kInvalidArgument);
  bad = j;
  bad["correct"].erase("size");
  EXPECT_FALSE(ReportFromJson(bad.dump()).ok());
  bad = j;
  bad["n"] = 5;  // disagrees with the results
  EXPECT_FALSE(ReportFromJson(bad.dump()).ok());
}

TEST_F(PromptEvalTest, MismatchedInputsAreRejected) {
  const std::vector<Prompt> prompts = FixedPromptSet(2, 1234, false);
  EXPECT_EQ(EvaluatePrompts(prompts, {RenderScene(prompts[0].scene)}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ShapeImagesFromTensorTest, QuantisesLikeTensorToPixels) {
  torch::set_num_threads(1);
  const std::vector<Prompt> prompts = FixedPromptSet(2, 1234, false);
  const std::vector<ShapeImage> reference = ReferenceImages(prompts);
  // Bytes -> [-1, 1] floats -> bytes is exact.
  torch::Tensor bytes = torch::empty({2, 3, kN, kN}, torch::kUInt8);
  for (int i = 0; i < 2; ++i) {
    std::memcpy(bytes[i].data_ptr<uint8_t>(), reference[i].data(), reference[i].size());
  }
  const torch::Tensor floats = bytes.to(torch::kFloat) / 127.5 - 1;
  for (const torch::Tensor& input : {bytes, floats}) {
    absl::StatusOr<std::vector<ShapeImage>> images = ShapeImagesFromTensor(input);
    ASSERT_TRUE(images.ok()) << images.status();
    ASSERT_EQ(images->size(), 2u);
    EXPECT_EQ((*images)[0], reference[0]);
    EXPECT_EQ((*images)[1], reference[1]);
  }
  // Arbitrary floats, out of range included, agree with TensorToPixels byte for byte.
  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(3);
  const torch::Tensor noisy = torch::randn({1, 3, kN, kN}, gen, torch::kFloat) * 0.8;
  absl::StatusOr<std::vector<ShapeImage>> images = ShapeImagesFromTensor(noisy);
  ASSERT_TRUE(images.ok()) << images.status();
  const Pixels pixels = model::TensorToPixels(noisy[0]);
  for (int c = 0; c < 3; ++c) {
    for (int p = 0; p < kPlane; ++p) {
      ASSERT_EQ((*images)[0][c * kPlane + p], pixels.data[p * 3 + c]) << c << " " << p;
    }
  }
  EXPECT_FALSE(ShapeImagesFromTensor(torch::zeros({2, 1, kN, kN})).ok());
  EXPECT_FALSE(ShapeImagesFromTensor(torch::zeros({3, kN, kN})).ok());
  EXPECT_FALSE(ShapeImagesFromTensor(torch::zeros({1, 3, kN, kN}, torch::kLong)).ok());
}

}  // namespace
}  // namespace dartserve::eval

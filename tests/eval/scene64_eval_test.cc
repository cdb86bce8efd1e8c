#include "eval/scene64_eval.h"

#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "data/scenes64.h"
#include "data/shapes.h"
#include "eval/prompt_eval.h"
#include "eval/shape_analysis.h"
#include "eval/text64_eval.h"
#include "model/autoencoder.h"
#include "model/image.h"
#include "nlohmann/json.hpp"
#include "tests/testing/tiny_model.h"

namespace dartserve::eval {

using ::dartserve::data::CaptionedScene64;
using ::dartserve::data::CaptionKind;
using ::dartserve::data::CaptionSpec;
using ::dartserve::data::FixedPromptSet64;
using ::dartserve::data::kMaxJitterQuarters64;
using ::dartserve::data::kNumBackgrounds;
using ::dartserve::data::kNumColors;
using ::dartserve::data::kNumPositions;
using ::dartserve::data::kNumShapes;
using ::dartserve::data::kNumSizes;
using ::dartserve::data::kScene64Size;
using ::dartserve::data::kShapeNames;
using ::dartserve::data::MakeScenes64Dataset;
using ::dartserve::data::Object64;
using ::dartserve::data::PromptSet64;
using ::dartserve::data::Relation;
using ::dartserve::data::RenderScene;
using ::dartserve::data::RenderScene64;
using ::dartserve::data::Scene;
using ::dartserve::data::Scene64;
using ::dartserve::data::SceneImage64;
using ::dartserve::data::Shape;
using ::dartserve::data::ShapeImage;
using ::dartserve::data::SizeClass;

namespace {

constexpr std::array<std::pair<PromptSet64, const char*>, 4> kSets = {{
    {PromptSet64::kSeen, "seen"},
    {PromptSet64::kHeldOut, "held_out"},
    {PromptSet64::kRelation, "relation"},
    {PromptSet64::kCount, "count"},
}};

std::vector<SceneImage64> References(const std::vector<CaptionedScene64>& prompts) {
  std::vector<SceneImage64> images;
  for (const CaptionedScene64& p : prompts) images.push_back(RenderScene64(p.scene));
  return images;
}

Scene64Check Check(const Scene64& scene, const CaptionSpec& spec) {
  return CheckScene64(AnalyzeImage(RenderScene64(scene)), spec);
}

// What went wrong, for failure messages: the items and what the analysis saw.
std::string Explain(const Scene64& scene, const CaptionSpec& spec) {
  const Analysis a = AnalyzeImage(RenderScene64(scene));
  const Scene64Report report{.results = {{.check = CheckScene64(a, spec),
                                          .background_color = a.background_color,
                                          .objects = SeenObjects(a)}}};
  std::string out = nlohmann::json::parse(ReportToJson(report))["results"][0].dump();
  for (const DetectedObject& o : a.objects) {
    const ShapeFeatures& f = o.features;
    out += " [fill " + std::to_string(f.fill) + " asymmetry " +
           std::to_string(f.vertical_asymmetry) + " hole " + std::to_string(f.hole_area) + " box " +
           std::to_string(f.x0) + "," + std::to_string(f.y0) + ".." + std::to_string(f.x1) + "," +
           std::to_string(f.y1) + "]";
  }
  return out;
}

// Every shape at every size and every jitter (quarter pixels put edges anywhere between pixels),
// the cell, colour and background rotating: the analysis reads each one back exactly, shape
// included.
TEST(Scene64AnalysisTest, EverySingleObjectIsReadBack) {
  int n = 0;
  std::array<int, kNumShapes> wrong_shape{};
  for (int shape = 0; shape < kNumShapes; ++shape) {
    for (int size = 0; size < kNumSizes; ++size) {
      const int j = kMaxJitterQuarters64[size];
      for (int dx = -j; dx <= j; ++dx) {
        for (int dy = -j; dy <= j; ++dy) {
          const Object64 object{.shape = static_cast<Shape>(shape),
                                .color = n % kNumColors,
                                .size = static_cast<SizeClass>(size),
                                .position = n % kNumPositions,
                                .dx = dx,
                                .dy = dy};
          const Scene64 scene{.background = n % kNumBackgrounds, .objects = {object}};
          ++n;
          const Analysis a = AnalyzeImage(RenderScene64(scene));
          ASSERT_EQ(a.objects.size(), 1u);
          const DetectedObject& seen = a.objects[0];
          ASSERT_EQ(a.background_color, scene.background);
          ASSERT_EQ(seen.color, object.color);
          ASSERT_EQ(seen.size, object.size) << shape << " jitter " << dx << "," << dy;
          ASSERT_EQ(seen.position, object.position) << shape << " jitter " << dx << "," << dy;
          if (seen.shape != object.shape) {
            ++wrong_shape[shape];
            const ShapeFeatures& f = seen.features;
            ADD_FAILURE() << kShapeNames[shape] << " size " << size << " jitter " << dx << "," << dy
                          << " read as " << kShapeNames[static_cast<int>(seen.shape)] << ": fill "
                          << f.fill << " roundness " << f.roundness << " asymmetry "
                          << f.vertical_asymmetry << " hole " << f.hole_area << " box " << f.width()
                          << "x" << f.height();
          }
        }
      }
    }
  }
  std::printf("%d single objects; misread shapes:", n);
  for (int s = 0; s < kNumShapes; ++s) std::printf(" %s %d", kShapeNames[s].data(), wrong_shape[s]);
  std::printf("\n");
  EXPECT_EQ(n, kNumShapes * (33 * 33 + 17 * 17 + 1));
}

// What a perfect model would draw is all-correct on every prompt of every fixed set.
TEST(Scene64EvalTest, ReferenceRenderingsOfEveryFixedSetAreAllCorrect) {
  for (const auto& [set, name] : kSets) {
    const std::vector<CaptionedScene64> prompts = FixedPromptSet64(set, 100, 1234);
    absl::StatusOr<Scene64Report> report = EvaluateScenes64(prompts, References(prompts));
    ASSERT_TRUE(report.ok()) << report.status();
    std::printf("%s: %s\n", name, SummaryLine(*report).c_str());
    EXPECT_EQ(report->tally.all.correct, 100) << name;
    for (size_t i = 0; i < prompts.size(); ++i) {
      EXPECT_TRUE(report->results[i].check.all) << name << " " << i << ": " << prompts[i].text;
    }
  }
}

// The same for the captioned scenes the models learn from (1..3 objects, every caption kind).
TEST(Scene64EvalTest, DatasetScenesReadAsTheirCaptions) {
  const data::Scenes64Dataset data = MakeScenes64Dataset(600, 99);
  Scene64Tally tally;
  for (const CaptionedScene64& item : data.items) {
    const Scene64Check check = Check(item.scene, item.spec);
    tally.Add(check);
    EXPECT_TRUE(check.all) << item.text << "\n" << Explain(item.scene, item.spec);
  }
  EXPECT_EQ(tally.all.correct, 600);
  EXPECT_GT(tally.relation.asked, 0);
  EXPECT_GT(tally.position.asked, 0);
  EXPECT_LT(tally.size.asked, 600);  // count captions state no sizes
}

Scene64 TwoObjects() {
  // A small red circle on the left of a large blue square, on white.
  return Scene64{
      .background = 0,
      .objects = {{.shape = Shape::kCircle, .color = 0, .size = SizeClass::kSmall, .position = 3},
                  {.shape = Shape::kSquare, .color = 2, .size = SizeClass::kLarge, .position = 5}}};
}

CaptionSpec RelationSpec(Relation relation) {
  return CaptionSpec{.kind = CaptionKind::kRelation,
                     .background = 0,
                     .objects = {{.shape = Shape::kCircle, .color = 0, .size = SizeClass::kSmall},
                                 {.shape = Shape::kSquare, .color = 2, .size = SizeClass::kLarge}},
                     .relation = data::StatedRelation{0, relation, 1},
                     .count = 2};
}

TEST(Scene64EvalTest, WrongRelationFailsOnlyTheRelation) {
  const Scene64 scene = TwoObjects();
  Scene64Check c = Check(scene, RelationSpec(Relation::kLeftOf));
  EXPECT_TRUE(c.all);
  ASSERT_TRUE(c.relation.has_value());
  EXPECT_FALSE(c.position.has_value());  // relation captions state no positions
  for (const Relation wrong : {Relation::kRightOf, Relation::kAbove, Relation::kBelow}) {
    c = Check(scene, RelationSpec(wrong));
    EXPECT_FALSE(*c.relation);
    EXPECT_FALSE(c.all);
    EXPECT_TRUE(c.background && c.count && c.color && c.shape && *c.size);
  }
  // The objects swapped in the image: the subject is now on the right.
  Scene64 swapped = scene;
  std::swap(swapped.objects[0].position, swapped.objects[1].position);
  c = Check(swapped, RelationSpec(Relation::kLeftOf));
  EXPECT_FALSE(*c.relation);
  EXPECT_FALSE(c.all);
  EXPECT_TRUE(Check(swapped, RelationSpec(Relation::kRightOf)).all);
}

TEST(Scene64EvalTest, WrongAttributesFail) {
  const Scene64 scene = TwoObjects();
  CaptionSpec spec = RelationSpec(Relation::kLeftOf);
  spec.kind = CaptionKind::kAttributes;
  spec.relation.reset();
  spec.objects[0].position = 3;
  spec.objects[1].position = 5;
  ASSERT_TRUE(Check(scene, spec).all);

  CaptionSpec wrong = spec;
  wrong.objects[1].color = 1;  // green, not blue
  Scene64Check c = Check(scene, wrong);
  EXPECT_FALSE(c.color);
  EXPECT_TRUE(c.shape && *c.size && *c.position && c.count && c.background);
  EXPECT_FALSE(c.all);

  wrong = spec;
  wrong.objects[0].shape = Shape::kTriangle;
  c = Check(scene, wrong);
  EXPECT_FALSE(c.shape);
  EXPECT_FALSE(c.all);

  wrong = spec;
  wrong.objects[1].size = SizeClass::kMedium;
  EXPECT_FALSE(*Check(scene, wrong).size);

  wrong = spec;
  wrong.objects[0].position = 0;
  EXPECT_FALSE(*Check(scene, wrong).position);

  wrong = spec;
  wrong.background = 3;
  c = Check(scene, wrong);
  EXPECT_FALSE(c.background);
  EXPECT_FALSE(c.all);  // the caption states the background
  EXPECT_TRUE(c.color && c.shape && *c.size && *c.position);

  // The caption's order of mention does not matter.
  std::swap(spec.objects[0], spec.objects[1]);
  EXPECT_TRUE(Check(scene, spec).all);
}

TEST(Scene64EvalTest, MissingOrExtraObjectsFailTheCount) {
  const std::vector<CaptionedScene64> prompts = FixedPromptSet64(PromptSet64::kCount, 20, 1234);
  for (const CaptionedScene64& p : prompts) {
    ASSERT_EQ(p.spec.count, 3);
    ASSERT_TRUE(Check(p.scene, p.spec).all);
    Scene64 missing = p.scene;
    missing.objects.pop_back();
    const Scene64Check c = Check(missing, p.spec);
    EXPECT_FALSE(c.count) << p.text;
    EXPECT_FALSE(c.all);
    EXPECT_FALSE(c.color || c.shape);  // too few objects: none of them is judged right
    EXPECT_FALSE(c.size.has_value() || c.position.has_value() || c.relation.has_value());
  }
  // An extra object: the two asked for are found, but the count is wrong.
  const Scene64 scene = TwoObjects();
  Scene64 extra = scene;
  extra.objects.push_back(
      {.shape = Shape::kRing, .color = 3, .size = SizeClass::kSmall, .position = 0});
  const Scene64Check c = Check(extra, RelationSpec(Relation::kLeftOf));
  EXPECT_FALSE(c.count);
  EXPECT_FALSE(c.all);
  EXPECT_TRUE(c.color && c.shape && *c.size && *c.relation);
  // A blank image.
  const Scene64Check blank = Check(Scene64{.background = 0}, RelationSpec(Relation::kLeftOf));
  EXPECT_FALSE(blank.count || blank.color || blank.all || *blank.relation);
}

TEST(Scene64EvalTest, SameReadingIgnoresOrderButNotAttributes) {
  const Scene64 scene = TwoObjects();
  const Analysis a = AnalyzeImage(RenderScene64(scene));
  EXPECT_TRUE(SameReading(a, a));
  Analysis reordered = a;
  std::swap(reordered.objects[0], reordered.objects[1]);
  EXPECT_TRUE(SameReading(a, reordered));
  Scene64 moved = scene;
  moved.objects[0].position = 0;
  EXPECT_FALSE(SameReading(a, AnalyzeImage(RenderScene64(moved))));
  Scene64 recoloured = scene;
  recoloured.objects[1].color = 4;
  EXPECT_FALSE(SameReading(a, AnalyzeImage(RenderScene64(recoloured))));
  Scene64 fewer = scene;
  fewer.objects.pop_back();
  EXPECT_FALSE(SameReading(a, AnalyzeImage(RenderScene64(fewer))));
  Scene64 background = scene;
  background.background = 2;
  EXPECT_FALSE(SameReading(a, AnalyzeImage(RenderScene64(background))));
}

TEST(Scene64EvalTest, ReportJsonStatesOnlyAskedItems) {
  const std::vector<CaptionedScene64> prompts = FixedPromptSet64(PromptSet64::kRelation, 5, 1234);
  std::vector<SceneImage64> images = References(prompts);
  images[4] = RenderScene64(Scene64{.background = prompts[4].scene.background});  // blank
  absl::StatusOr<Scene64Report> report = EvaluateScenes64(prompts, images);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(SummaryLine(*report),
            "n=5 background 1.000 count 0.800 colour 0.800 shape 0.800 size 0.800 relation 0.800 "
            "all 0.800");
  const nlohmann::json j = nlohmann::json::parse(ReportToJson(*report));
  EXPECT_EQ(j["n"], 5);
  EXPECT_EQ(j["correct"]["relation"], 4);
  EXPECT_EQ(j["asked"]["relation"], 5);
  EXPECT_FALSE(j["correct"].contains("position"));
  EXPECT_DOUBLE_EQ(j["accuracy"]["all"].get<double>(), 0.8);
  ASSERT_EQ(j["results"].size(), 5u);
  EXPECT_EQ(j["results"][0]["prompt"], prompts[0].text);
  EXPECT_TRUE(j["results"][0]["check"]["relation"].get<bool>());
  EXPECT_FALSE(j["results"][0]["check"].contains("position"));
  EXPECT_EQ(j["results"][0]["objects"].size(), 2u);
  EXPECT_EQ(j["results"][4]["objects"].size(), 0u);

  EXPECT_EQ(EvaluateScenes64(prompts, {}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Scene64EvalTest, ImagesFromTensorQuantiseLikeTensorToPixels) {
  const std::vector<CaptionedScene64> prompts = FixedPromptSet64(PromptSet64::kSeen, 3, 1234);
  const std::vector<SceneImage64> images = References(prompts);
  torch::Tensor bytes = torch::empty({3, 3, kScene64Size, kScene64Size}, torch::kUInt8);
  for (int i = 0; i < 3; ++i) {
    std::memcpy(bytes[i].data_ptr<uint8_t>(), images[i].data(), images[i].size());
  }
  // Levels as floats in [-1, 1], off the exact level by less than half a step: the same bytes.
  const torch::Tensor floats = (bytes.to(torch::kFloat) + 0.3) / 127.5 - 1;
  for (const torch::Tensor& input : {bytes, floats}) {
    absl::StatusOr<std::vector<SceneImage64>> back = SceneImages64FromTensor(input);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, images);
  }
  EXPECT_FALSE(SceneImages64FromTensor(torch::zeros({1, 3, 32, 32})).ok());
}

// The 32-px entry point and the generic one are the same analysis.
TEST(Scene64AnalysisTest, ThirtyTwoPixelImagesAnalyseAsBefore) {
  const Scene scene{.background = 4,
                    .shapes = {{Shape::kRing, 1, SizeClass::kLarge, 4},
                               {Shape::kCross, 6, SizeClass::kSmall, 0, 1, -1}}};
  const ShapeImage image = RenderScene(scene);
  const Analysis a = AnalyzeImage(image);
  const Analysis b = AnalyzeImage(PlanarImage(image));
  EXPECT_EQ(SeenObjects(a), SeenObjects(b));
  EXPECT_TRUE(CheckScene(a, scene).all);
}

// Noise specks below the minimum area (16 px at 64) are not objects.
TEST(Scene64AnalysisTest, SpecksAreIgnored) {
  SceneImage64 image = RenderScene64(TwoObjects());
  for (int y = 40; y < 43; ++y) {
    for (int x = 2; x < 7; ++x) {
      for (int c = 0; c < 3; ++c) image[c * kScene64Size * kScene64Size + y * kScene64Size + x] = 0;
    }
  }
  EXPECT_EQ(AnalyzeImage(image).objects.size(), 2u);                                    // 15 px
  EXPECT_EQ(AnalyzeImage(image, GeometricShape, {.min_area = 10}).objects.size(), 3u);  // kept
}

// A tiny latent text model of 64x64 images: 16x16x4 latents of a tiny autoencoder (f = 4).
model::Dart TinyLatentTextModel() {
  model::ModelConfig config = testing::WithTinyText(model::ModelConfig::Tiny());
  config.image_size = 16;
  config.channels = 4;
  config.patch_size = 4;
  config.text_max_tokens = 64;  // scene captions are long in the tiny tokenizer's pieces
  config.autoencoder = model::kCheckpointAutoencoder;
  config.autoencoder_downsample = 4;
  model::Dart model = testing::MakeTinyModel(config);
  model::AutoencoderConfig ae_config = model::AutoencoderConfig::Tiny();
  ae_config.image_size = kScene64Size;
  torch::manual_seed(3);
  model::Autoencoder ae(ae_config);
  ae->eval();
  model->set_autoencoder(ae);
  return model;
}

TEST(Text64EvalTest, GeneratesDecodesAndScoresEveryPrompt) {
  torch::set_num_threads(1);
  const std::vector<CaptionedScene64> prompts = FixedPromptSet64(PromptSet64::kRelation, 3, 1234);
  absl::StatusOr<Text64EvalReport> report = EvaluateTextModel64(
      TinyLatentTextModel(), prompts, {.per_prompt = 2, .guidance_scale = 2.0f, .batch = 4});
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->images.sizes(), (std::vector<int64_t>{6, 3, 64, 64}));
  EXPECT_LE(report->images.abs().max().item<float>(), 1.0f);
  EXPECT_EQ(report->adherence.tally.n, 6);
  EXPECT_EQ(report->adherence.results[1].prompt, prompts[0].text);
  EXPECT_EQ(report->adherence.results[2].prompt, prompts[1].text);
  EXPECT_GT(report->images_per_second, 0);
  // A model of 32-px images is refused.
  EXPECT_EQ(EvaluateTextModel64(testing::MakeTinyModel(testing::TinyTextConfig()), prompts, {})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace dartserve::eval

#include "data/shapes.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace dartserve::data {
namespace {

using ::testing::HasSubstr;

TEST(ShapesDatasetTest, DeterministicBySeed) {
  const ShapesDataset a = MakeShapesDataset(300, 7);
  const ShapesDataset b = MakeShapesDataset(300, 7);
  const ShapesDataset c = MakeShapesDataset(300, 8);
  EXPECT_TRUE(torch::equal(a.data.images, b.data.images));
  EXPECT_TRUE(torch::equal(a.data.labels, b.data.labels));
  EXPECT_EQ(a.captions, b.captions);
  EXPECT_FALSE(torch::equal(a.data.images, c.data.images));
  EXPECT_NE(a.captions, c.captions);
  // Enough variety that the model cannot memorise a handful of images.
  EXPECT_GT(std::set<std::string>(a.captions.begin(), a.captions.end()).size(), 280u);
}

TEST(ShapesDatasetTest, TensorsMatchScenes) {
  const ShapesDataset ds = MakeShapesDataset(64, 3);
  ASSERT_EQ(ds.data.images.sizes(), (std::vector<int64_t>{64, 3, 32, 32}));
  EXPECT_EQ(ds.data.images.dtype(), torch::kUInt8);
  EXPECT_EQ(ds.data.num_classes, kNumShapes);
  ASSERT_EQ(ds.captions.size(), 64u);
  ASSERT_EQ(ds.scenes.size(), 64u);
  for (int i = 0; i < 64; ++i) {
    const ShapeImage image = RenderScene(ds.scenes[i]);
    const torch::Tensor row = ds.data.images[i].contiguous();
    EXPECT_EQ(std::memcmp(row.data_ptr<uint8_t>(), image.data(), image.size()), 0) << i;
    EXPECT_EQ(ds.data.labels[i].item<int64_t>(),
              static_cast<int64_t>(ds.scenes[i].shapes[0].shape));
  }
  auto [x, y] = ds.data.Batch(torch::arange(4));
  EXPECT_GE(x.min().item<float>(), -1.0f);
  EXPECT_LE(x.max().item<float>(), 1.0f);
}

// Every (shape, colour, size, position) with the extreme jitters: it renders inside the image
// with a background border, in the box it claims, and the analyzer recovers it.
TEST(CaptionTest, ExampleWording) {
  const Scene scene{.background = 0, .shapes = {{Shape::kCircle, 0, SizeClass::kSmall, 0}}};
  EXPECT_EQ(CaptionWithTemplate(scene, 0),
            "a small red circle at the top left on a white background");
  const Scene blue{.background = 1, .shapes = {{Shape::kSquare, 2, SizeClass::kMedium, 8}}};
  EXPECT_EQ(CaptionWithTemplate(blue, 1), "blue square, bottom right, medium, black background");
  const Scene two{.background = 2,
                  .shapes = {{Shape::kRing, 1, SizeClass::kLarge, 4},
                             {Shape::kCross, 6, SizeClass::kSmall, 1}}};
  EXPECT_EQ(CaptionWithTemplate(two, 0),
            "a large green ring in the center and a small cyan cross at the top on a gray "
            "background");
}

// Every caption, in every template, names every attribute of its scene: parsing it with the
// vocabulary gives the scene back.
TEST(CaptionTest, CaptionsMentionEveryAttribute) {
  const ShapesDataset ds = MakeShapesDataset(2000, 11, HoldOut::kInclude, 0.5);
  std::set<int> templates_used;
  for (size_t i = 0; i < ds.scenes.size(); ++i) {
    auto parsed = ParseCaption(ds.captions[i]);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_TRUE(parsed->SameAttributes(ds.scenes[i])) << ds.captions[i];
    for (int t = 0; t < kNumCaptionTemplates; ++t) {
      const std::string caption = CaptionWithTemplate(ds.scenes[i], t);
      auto p = ParseCaption(caption);
      ASSERT_TRUE(p.ok()) << p.status();
      EXPECT_TRUE(p->SameAttributes(ds.scenes[i])) << caption;
    }
    for (int t = 0; t < kNumCaptionTemplates; ++t) {
      if (CaptionWithTemplate(ds.scenes[i], t) == ds.captions[i]) templates_used.insert(t);
    }
  }
  EXPECT_EQ(templates_used.size(), static_cast<size_t>(kNumCaptionTemplates));
}

TEST(CaptionTest, ParseRejectsIncompletePrompts) {
  auto missing = ParseCaption("a red circle on a white background");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("size position"));
  EXPECT_FALSE(ParseCaption("a small red circle at the top left").ok());  // no background
  auto ok = ParseCaption("A LARGE Blue Triangle, bottom left; black background");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->shapes[0].position, 6);
  EXPECT_EQ(ok->shapes[0].shape, Shape::kTriangle);
}

TEST(HoldOutTest, HeldOutCombinationsOnlyInTheHeldOutPromptSet) {
  EXPECT_EQ(kHeldOut.size(), 4u);  // 10% of the 40 (shape, colour) combinations
  const ShapesDataset train = MakeShapesDataset(5000, 5, HoldOut::kExclude);
  std::set<std::pair<int, int>> seen;
  for (const Scene& scene : train.scenes) {
    for (const ShapeSpec& s : scene.shapes) {
      EXPECT_FALSE(IsHeldOut(s.shape, s.color));
      seen.insert({static_cast<int>(s.shape), s.color});
    }
  }
  EXPECT_EQ(seen.size(), static_cast<size_t>(kNumShapes * kNumColors) - kHeldOut.size());

  const std::vector<Prompt> held_out = FixedPromptSet(100, 1234, true);
  const std::vector<Prompt> in_dist = FixedPromptSet(100, 1234, false);
  ASSERT_EQ(held_out.size(), 100u);
  ASSERT_EQ(in_dist.size(), 100u);
  std::set<std::pair<int, int>> held_seen;
  for (const Prompt& p : held_out) {
    ASSERT_EQ(p.scene.shapes.size(), 1u);
    EXPECT_TRUE(IsHeldOut(p.scene.shapes[0].shape, p.scene.shapes[0].color)) << p.text;
    held_seen.insert({static_cast<int>(p.scene.shapes[0].shape), p.scene.shapes[0].color});
    EXPECT_TRUE(ParseCaption(p.text)->SameAttributes(p.scene));
  }
  EXPECT_EQ(held_seen.size(), kHeldOut.size());
  for (const Prompt& p : in_dist) {
    EXPECT_FALSE(IsHeldOut(p.scene.shapes[0].shape, p.scene.shapes[0].color)) << p.text;
  }
  // Fixed: the same arguments give the same prompts.
  const std::vector<Prompt> again = FixedPromptSet(100, 1234, true);
  for (size_t i = 0; i < again.size(); ++i) EXPECT_EQ(again[i].text, held_out[i].text);
}

}  // namespace
}  // namespace dartserve::data

#include "eval/shape_analysis.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "data/shapes.h"
#include "eval/attribute_classifier.h"

namespace dartserve::eval {

using ::dartserve::data::Box;
using ::dartserve::data::HoldOut;
using ::dartserve::data::kBackgroundColors;
using ::dartserve::data::kNumBackgrounds;
using ::dartserve::data::kNumColors;
using ::dartserve::data::kNumPositions;
using ::dartserve::data::kNumShapes;
using ::dartserve::data::kNumSizes;
using ::dartserve::data::kShapeImageSize;
using ::dartserve::data::kShapeNames;
using ::dartserve::data::MaxJitter;
using ::dartserve::data::NamedColor;
using ::dartserve::data::RenderScene;
using ::dartserve::data::SampleScene;
using ::dartserve::data::Scene;
using ::dartserve::data::Shape;
using ::dartserve::data::ShapeBox;
using ::dartserve::data::ShapeImage;
using ::dartserve::data::SizeClass;

namespace {

using ::testing::HasSubstr;

constexpr int kPlane = kShapeImageSize * kShapeImageSize;

std::vector<bool> Foreground(const ShapeImage& image, int background) {
  const NamedColor& bg = kBackgroundColors[background];
  std::vector<bool> fg(kPlane);
  for (int i = 0; i < kPlane; ++i) {
    fg[i] = image[i] != bg.r || image[kPlane + i] != bg.g || image[2 * kPlane + i] != bg.b;
  }
  return fg;
}

void Print(const char* what, const CheckTally& t) {
  std::printf("%s (n=%d): colour %.4f shape %.4f position %.4f size %.4f count %.4f all %.4f\n",
              what, t.n, t.Rate(t.color), t.Rate(t.shape), t.Rate(t.position), t.Rate(t.size),
              t.Rate(t.count), t.Rate(t.all));
}

TEST(ShapeAnalysisTest, EveryCombinationRendersAndIsRecovered) {
  CheckTally tally;
  int index = 0;
  for (int shape = 0; shape < kNumShapes; ++shape) {
    for (int color = 0; color < kNumColors; ++color) {
      for (int size = 0; size < kNumSizes; ++size) {
        for (int position = 0; position < kNumPositions; ++position) {
          for (const int sign : {-1, 1}) {
            const int j = sign * MaxJitter(static_cast<SizeClass>(size));
            const Scene scene{.background = index++ % kNumBackgrounds,
                              .shapes = {{static_cast<Shape>(shape), color,
                                          static_cast<SizeClass>(size), position, j, -j}}};
            const ShapeImage image = RenderScene(scene);
            const std::vector<bool> fg = Foreground(image, scene.background);
            const Box box = ShapeBox(scene.shapes[0]);
            int area = 0;
            for (int y = 0; y < kShapeImageSize; ++y) {
              for (int x = 0; x < kShapeImageSize; ++x) {
                if (!fg[y * kShapeImageSize + x]) continue;
                ++area;
                EXPECT_TRUE(x >= 1 && y >= 1 && x <= 30 && y <= 30) << "touches the border";
                EXPECT_TRUE(x >= box.x0 && x < box.x0 + box.side && y >= box.y0 &&
                            y < box.y0 + box.side);
              }
            }
            ASSERT_GE(area, 5);
            tally.Add(CheckScene(AnalyzeImage(image), scene));
          }
        }
      }
    }
  }
  Print("all combinations", tally);
  EXPECT_EQ(tally.n, kNumShapes * kNumColors * kNumSizes * kNumPositions * 2);
  EXPECT_EQ(tally.color, tally.n);
  EXPECT_EQ(tally.position, tally.n);
  EXPECT_EQ(tally.size, tally.n);
  EXPECT_EQ(tally.count, tally.n);
  EXPECT_EQ(tally.background, tally.n);
  EXPECT_GE(tally.Rate(tally.shape), 0.90);
}

TEST(ShapeAnalysisTest, AccuracyOnRandomSingleShapeScenes) {
  std::mt19937_64 rng(2024);
  CheckTally tally;
  std::array<CheckTally, kNumShapes> by_shape;
  for (int i = 0; i < 500; ++i) {
    const Scene scene =
        SampleScene(rng, {.two_shape_probability = 0.0, .hold_out = HoldOut::kInclude});
    const SceneCheck check = CheckScene(AnalyzeImage(RenderScene(scene)), scene);
    tally.Add(check);
    by_shape[static_cast<int>(scene.shapes[0].shape)].Add(check);
  }
  Print("500 random single-shape scenes", tally);
  for (int s = 0; s < kNumShapes; ++s) Print(std::string(kShapeNames[s]).c_str(), by_shape[s]);
  EXPECT_GE(tally.Rate(tally.color), 0.99);
  EXPECT_GE(tally.Rate(tally.position), 0.99);
  EXPECT_GE(tally.Rate(tally.size), 0.99);
  EXPECT_GE(tally.Rate(tally.shape), 0.90);
}

TEST(ShapeAnalysisTest, TwoShapeScenesDoNotOverlapAndAreBothFound) {
  std::mt19937_64 rng(99);
  CheckTally tally;
  for (int i = 0; i < 1000; ++i) {
    const Scene scene =
        SampleScene(rng, {.two_shape_probability = 1.0, .hold_out = HoldOut::kInclude});
    ASSERT_EQ(scene.shapes.size(), 2u);
    EXPECT_NE(scene.shapes[0].position, scene.shapes[1].position);
    // Render each shape alone: no pixel of one is equal or 8-adjacent to a pixel of the other.
    std::array<std::vector<bool>, 2> masks;
    for (int k = 0; k < 2; ++k) {
      const Scene alone{.background = scene.background, .shapes = {scene.shapes[k]}};
      masks[k] = Foreground(RenderScene(alone), scene.background);
    }
    for (int p = 0; p < kPlane; ++p) {
      if (!masks[0][p]) continue;
      const int x = p % kShapeImageSize, y = p / kShapeImageSize;
      for (int dy = -1; dy <= 1; ++dy) {
        for (int dx = -1; dx <= 1; ++dx) {
          const int nx = x + dx, ny = y + dy;
          if (nx < 0 || ny < 0 || nx >= kShapeImageSize || ny >= kShapeImageSize) continue;
          ASSERT_FALSE(masks[1][ny * kShapeImageSize + nx]) << "shapes touch in scene " << i;
        }
      }
    }
    tally.Add(CheckScene(AnalyzeImage(RenderScene(scene)), scene));
  }
  Print("1000 two-shape scenes", tally);
  EXPECT_EQ(tally.count, tally.n);
  EXPECT_GE(tally.Rate(tally.color), 0.99);
  EXPECT_GE(tally.Rate(tally.position), 0.99);
  EXPECT_GE(tally.Rate(tally.size), 0.99);
  EXPECT_GE(tally.Rate(tally.shape), 0.80);
}

// A generated image is never a clean render. A [1 2 1]^2 / 16 blur (soft edges, colours mixed
// with the background) plus uniform noise of +-12 per channel stands in for one.
ShapeImage BlurAndNoise(const ShapeImage& image, std::mt19937_64& rng) {
  ShapeImage out = Blur(image, /*centre=*/2);  // [1 2 1] per axis
  for (uint8_t& v : out)
    v = static_cast<uint8_t>(std::clamp(v + static_cast<int>(rng() % 25) - 12, 0, 255));
  return out;
}

TEST(ShapeAnalysisTest, RobustToBlurAndNoise) {
  std::mt19937_64 rng(7);
  CheckTally single, two;
  for (int i = 0; i < 500; ++i) {
    const Scene scene = SampleScene(
        rng, {.two_shape_probability = i < 400 ? 0.0 : 1.0, .hold_out = HoldOut::kInclude});
    const SceneCheck check = CheckScene(AnalyzeImage(BlurAndNoise(RenderScene(scene), rng)), scene);
    (i < 400 ? single : two).Add(check);
  }
  Print("400 blurred+noisy single-shape scenes", single);
  Print("100 blurred+noisy two-shape scenes", two);
  // Measured: colour, position, count 1.0, size 0.9975, shape 0.93 (single); the two-shape
  // scenes: count, colour, position 1.0, size 0.99, shape 0.85.
  EXPECT_GE(single.Rate(single.color), 0.98);
  EXPECT_GE(single.Rate(single.position), 0.98);
  EXPECT_GE(single.Rate(single.size), 0.97);
  EXPECT_GE(single.Rate(single.count), 0.98);
  EXPECT_GE(single.Rate(single.shape), 0.85);
  EXPECT_GE(two.Rate(two.count), 0.95);
  EXPECT_GE(two.Rate(two.color), 0.95);
  EXPECT_GE(two.Rate(two.position), 0.95);
}

TEST(ShapeAnalysisTest, CheckSceneFlagsEachWrongAttribute) {
  const Scene scene{.background = 0, .shapes = {{Shape::kSquare, 2, SizeClass::kLarge, 0}}};
  const Analysis analysis = AnalyzeImage(RenderScene(scene));
  ASSERT_EQ(analysis.objects.size(), 1u);
  EXPECT_TRUE(CheckScene(analysis, scene).all);

  Scene wrong = scene;
  wrong.shapes[0].color = 0;
  SceneCheck c = CheckScene(analysis, wrong);
  EXPECT_FALSE(c.color);
  EXPECT_TRUE(c.shape && c.position && c.size && c.count);
  EXPECT_FALSE(c.all);

  wrong = scene;
  wrong.shapes[0].position = 8;
  c = CheckScene(analysis, wrong);
  EXPECT_FALSE(c.position);
  EXPECT_FALSE(c.all);
  wrong = scene;
  wrong.shapes[0].size = SizeClass::kSmall;
  EXPECT_FALSE(CheckScene(analysis, wrong).size);
  wrong = scene;
  wrong.shapes[0].shape = Shape::kCircle;
  EXPECT_FALSE(CheckScene(analysis, wrong).shape);
  wrong = scene;
  wrong.background = 1;
  c = CheckScene(analysis, wrong);
  EXPECT_FALSE(c.background);
  EXPECT_TRUE(c.all);  // background is reported apart

  // An empty image: nothing is correct, and asking for one shape sees zero.
  const Analysis empty = AnalyzeImage(RenderScene(Scene{.background = 3}));
  EXPECT_TRUE(empty.objects.empty());
  c = CheckScene(empty, scene);
  EXPECT_FALSE(c.color || c.shape || c.position || c.size || c.count || c.all);
  // An extra object fails `count` (and so `all`) though the asked-for shape is right.
  Scene two = scene;
  two.shapes.push_back({Shape::kCircle, 0, SizeClass::kSmall, 8});
  c = CheckScene(AnalyzeImage(RenderScene(two)), scene);
  EXPECT_TRUE(c.color && c.shape && c.position && c.size);
  EXPECT_FALSE(c.count);
  EXPECT_FALSE(c.all);
}

TEST(ShapeAnalysisTest, ShapeClassifierIsPluggable) {
  const Scene ring{.background = 2, .shapes = {{Shape::kRing, 0, SizeClass::kLarge, 4}}};
  const Scene circle{.background = 2, .shapes = {{Shape::kCircle, 0, SizeClass::kLarge, 4}}};
  int calls = 0;
  const ShapeClassifier always_ring = [&](const ShapeImage&, const DetectedObject& obj) {
    ++calls;
    EXPECT_FALSE(obj.pixels.empty());
    return Shape::kRing;
  };
  EXPECT_TRUE(CheckScene(AnalyzeImage(RenderScene(circle), always_ring), ring).shape);
  EXPECT_FALSE(CheckScene(AnalyzeImage(RenderScene(circle), always_ring), circle).shape);
  EXPECT_EQ(calls, 2);
  EXPECT_TRUE(CheckScene(AnalyzeImage(RenderScene(circle)), circle).shape);
}

}  // namespace
}  // namespace dartserve::eval

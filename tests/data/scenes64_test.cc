#include "data/scenes64.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <numbers>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "data/shapes.h"

namespace dartserve::data {
namespace {

using ::testing::HasSubstr;

constexpr int kSize = kScene64Size;
constexpr int kPlane = kSize * kSize;

// The pixels an object colours when drawn alone, as a bounding box of pixels that differ from
// the background (an independent reading of the geometry, from the image).
struct Extent {
  int x0 = kSize, y0 = kSize, x1 = -1, y1 = -1;  // inclusive
  std::vector<int> pixels;                       // y * 64 + x
};
Extent SoloExtent(const Scene64& scene, int k) {
  Scene64 solo{.background = scene.background, .objects = {scene.objects[k]}};
  const SceneImage64 image = RenderScene64(solo);
  const NamedColor& bg = kBackgroundColors[scene.background];
  Extent e;
  for (int i = 0; i < kPlane; ++i) {
    if (image[i] == bg.r && image[kPlane + i] == bg.g && image[2 * kPlane + i] == bg.b) continue;
    const int x = i % kSize, y = i / kSize;
    e.x0 = std::min(e.x0, x);
    e.x1 = std::max(e.x1, x);
    e.y0 = std::min(e.y0, y);
    e.y1 = std::max(e.y1, y);
    e.pixels.push_back(i);
  }
  return e;
}

// Background columns strictly between a (left) and b (right); negative when they overlap.
int ColumnsBetween(const Extent& a, const Extent& b) { return b.x0 - a.x1 - 1; }
int RowsBetween(const Extent& a, const Extent& b) { return b.y0 - a.y1 - 1; }

uint8_t Blend(uint8_t bg, uint8_t fg, int k) {
  return static_cast<uint8_t>((bg * (16 - k) + fg * k + 8) / 16);
}

std::vector<Scene64> SampleScenes(int n, uint64_t seed, const Scene64Options& options) {
  std::mt19937_64 rng(seed);
  std::vector<Scene64> scenes;
  for (int i = 0; i < n; ++i) scenes.push_back(SampleScene64(rng, options));
  return scenes;
}

bool SameScene(const Scene64& a, const Scene64& b) {
  if (a.background != b.background || a.objects.size() != b.objects.size()) return false;
  for (size_t i = 0; i < a.objects.size(); ++i) {
    const Object64 &p = a.objects[i], &q = b.objects[i];
    if (!p.SameAttributes(q) || p.dx != q.dx || p.dy != q.dy) return false;
  }
  return true;
}

TEST(Scenes64DatasetTest, DeterministicBySeed) {
  const Scenes64Dataset a = MakeScenes64Dataset(300, 7);
  const Scenes64Dataset b = MakeScenes64Dataset(300, 7);
  const Scenes64Dataset c = MakeScenes64Dataset(300, 8);
  EXPECT_TRUE(torch::equal(a.data.images, b.data.images));
  EXPECT_TRUE(torch::equal(a.data.labels, b.data.labels));
  EXPECT_EQ(a.data.captions, b.data.captions);
  ASSERT_EQ(a.items.size(), b.items.size());
  for (size_t i = 0; i < a.items.size(); ++i) {
    EXPECT_TRUE(SameScene(a.items[i].scene, b.items[i].scene)) << i;
    EXPECT_EQ(a.items[i].spec, b.items[i].spec) << i;
  }
  EXPECT_FALSE(torch::equal(a.data.images, c.data.images));
  EXPECT_NE(a.data.captions, c.data.captions);
  EXPECT_GT(std::set<std::string>(a.data.captions.begin(), a.data.captions.end()).size(), 290u);
}

TEST(Scenes64DatasetTest, TensorsMatchScenes) {
  const Scenes64Dataset ds = MakeScenes64Dataset(200, 3);
  ASSERT_EQ(ds.data.images.sizes(), (std::vector<int64_t>{200, 3, 64, 64}));
  EXPECT_EQ(ds.data.images.dtype(), torch::kUInt8);
  EXPECT_EQ(ds.data.num_classes, kNumShapes);
  ASSERT_EQ(ds.data.captions.size(), 200u);
  ASSERT_EQ(ds.items.size(), 200u);
  std::set<size_t> counts;
  std::set<CaptionKind> kinds;
  for (int i = 0; i < 200; ++i) {
    const CaptionedScene64& item = ds.items[i];
    const SceneImage64 image = RenderScene64(item.scene);
    const torch::Tensor row = ds.data.images[i].contiguous();
    EXPECT_EQ(std::memcmp(row.data_ptr<uint8_t>(), image.data(), image.size()), 0) << i;
    EXPECT_EQ(ds.data.labels[i].item<int64_t>(), static_cast<int64_t>(item.scene.objects[0].shape));
    EXPECT_EQ(ds.data.captions[i], item.text);
    counts.insert(item.scene.objects.size());
    kinds.insert(item.spec.kind);
  }
  EXPECT_EQ(counts, (std::set<size_t>{1, 2, 3}));
  EXPECT_EQ(kinds.size(), 3u);
  auto [x, y] = ds.data.Batch(torch::arange(16));
  EXPECT_EQ(x.sizes(), (std::vector<int64_t>{16, 3, 64, 64}));
  EXPECT_GE(x.min().item<float>(), -1.0f);
  EXPECT_LE(x.max().item<float>(), 1.0f);
}

// A large circle centred on a pixel corner: pixels wholly inside it are pure colour, pixels
// wholly outside pure background, and the edge is a band of mixtures whose total coverage is the
// disc's area.
TEST(RenderTest, CircleEdgesAreAntiAliased) {
  const Object64 circle{.shape = Shape::kCircle, .color = 0, .size = SizeClass::kLarge};
  const Scene64 scene{.background = 0, .objects = {circle}};
  const SceneImage64 image = RenderScene64(scene);
  const NamedColor &bg = kBackgroundColors[0], &fg = kShapeColors[0];
  const double radius = kSizePixels64[2] / 2.0, cx = 32, cy = 32;
  int inside = 0, outside = 0, mixed = 0;
  double area = 0;
  for (int y = 0; y < kSize; ++y) {
    for (int x = 0; x < kSize; ++x) {
      // Nearest and farthest points of the pixel square from the centre.
      const double nx = std::clamp(cx, double(x), x + 1.0) - cx,
                   ny = std::clamp(cy, double(y), y + 1.0) - cy;
      const double fx = std::max(std::abs(x - cx), std::abs(x + 1 - cx)),
                   fy = std::max(std::abs(y - cy), std::abs(y + 1 - cy));
      const int i = y * kSize + x;
      const uint8_t r = image[i], g = image[kPlane + i], b = image[2 * kPlane + i];
      if (std::hypot(fx, fy) < radius) {
        EXPECT_TRUE(r == fg.r && g == fg.g && b == fg.b) << x << "," << y;
        ++inside;
      } else if (std::hypot(nx, ny) > radius) {
        EXPECT_TRUE(r == bg.r && g == bg.g && b == bg.b) << x << "," << y;
        ++outside;
      } else if (!(r == fg.r && g == fg.g && b == fg.b) && !(r == bg.r && g == bg.g && b == bg.b)) {
        ++mixed;
      }
      // Every pixel is a coverage mixture of the two colours.
      int k = 0;
      while (k <= 16 && !(r == Blend(bg.r, fg.r, k) && g == Blend(bg.g, fg.g, k) &&
                          b == Blend(bg.b, fg.b, k))) {
        ++k;
      }
      ASSERT_LE(k, 16) << x << "," << y;
      EXPECT_EQ(k, Coverage(circle, x, y));
      area += k / 16.0;
    }
  }
  EXPECT_GT(inside, 200);
  EXPECT_GT(outside, 3500);
  EXPECT_GE(mixed, 40);  // the circumference is ~63 px
  EXPECT_NEAR(area, std::numbers::pi * radius * radius, 0.01 * std::numbers::pi * radius * radius);
}

// A 15 px square's edges fall mid-pixel: the edge columns are exactly half covered, the corners a
// quarter; a quarter-pixel shift moves the edge coverage to 1/4 and 3/4.
TEST(RenderTest, SquareEdgesBlendByCoverage) {
  const NamedColor &bg = kBackgroundColors[1], &fg = kShapeColors[2];
  auto pixel = [](const SceneImage64& image, int ch, int x, int y) {
    return image[ch * kPlane + y * kSize + x];
  };
  Object64 square{.shape = Shape::kSquare, .color = 2, .size = SizeClass::kMedium};
  SceneImage64 image = RenderScene64(Scene64{.background = 1, .objects = {square}});
  // Edges at 32 +- 7.5: columns and rows 24 and 39 are edges, 25..38 inside.
  EXPECT_EQ(pixel(image, 2, 30, 30), fg.b);
  EXPECT_EQ(pixel(image, 2, 23, 30), bg.b);
  EXPECT_EQ(pixel(image, 2, 24, 30), Blend(bg.b, fg.b, 8));
  EXPECT_EQ(pixel(image, 2, 39, 30), Blend(bg.b, fg.b, 8));
  EXPECT_EQ(pixel(image, 2, 30, 24), Blend(bg.b, fg.b, 8));
  EXPECT_EQ(pixel(image, 2, 24, 24), Blend(bg.b, fg.b, 4));
  EXPECT_EQ(pixel(image, 2, 40, 30), bg.b);
  EXPECT_GT(pixel(image, 2, 24, 30), bg.b);
  EXPECT_LT(pixel(image, 2, 24, 30), fg.b);

  square.dx = 1;  // a quarter pixel right: edges at 24.75 and 39.75
  image = RenderScene64(Scene64{.background = 1, .objects = {square}});
  EXPECT_EQ(pixel(image, 2, 24, 30), Blend(bg.b, fg.b, 4));
  EXPECT_EQ(pixel(image, 2, 39, 30), Blend(bg.b, fg.b, 12));
  EXPECT_EQ(pixel(image, 2, 25, 30), fg.b);
}

// Unjittered shapes on the centre cell are mirror images of themselves left to right (and top to
// bottom, but for the triangle, whose base is at the bottom).
TEST(RenderTest, CentredShapesAreSymmetric) {
  for (int s = 0; s < kNumShapes; ++s) {
    for (int z = 0; z < kNumSizes; ++z) {
      const Object64 o{.shape = static_cast<Shape>(s), .color = 3, .size = SizeClass(z)};
      const SceneImage64 image = RenderScene64(Scene64{.background = 2, .objects = {o}});
      int top = 0, bottom = 0;
      for (int y = 0; y < kSize; ++y) {
        for (int x = 0; x < kSize; ++x) {
          ASSERT_EQ(image[y * kSize + x], image[y * kSize + 63 - x]) << s << " " << z;
          if (o.shape != Shape::kTriangle) {
            ASSERT_EQ(image[y * kSize + x], image[(63 - y) * kSize + x]) << s << " " << z;
          }
          const int k = Coverage(o, x, y);
          (y < 32 ? top : bottom) += k;
        }
      }
      if (o.shape == Shape::kTriangle) {
        EXPECT_GT(bottom, 2 * top);
      }
    }
  }
}

// Every size in every cell at its extreme jitters: the footprint keeps >= 2 px of background to
// the image edge, covers every pixel the object colours, and the box centre stays in its third
// of the image.
TEST(GeometryTest, PlacementsStayInsideTheImageAndTheirCell) {
  for (int z = 0; z < kNumSizes; ++z) {
    const int j = kMaxJitterQuarters64[z];
    for (int position = 0; position < kNumPositions; ++position) {
      for (int dx : {-j, 0, j}) {
        for (int dy : {-j, 0, j}) {
          const Object64 o{.shape = Shape::kSquare,
                           .size = SizeClass(z),
                           .position = position,
                           .dx = dx,
                           .dy = dy};
          const PixelRect r = Footprint(o);
          EXPECT_GE(std::min(r.x0, r.y0), 2);
          EXPECT_LE(std::max(r.x1, r.y1), kSize - 2);
          const Extent e = SoloExtent(Scene64{.background = 0, .objects = {o}}, 0);
          EXPECT_EQ(e.x0, r.x0);  // a square fills its footprint
          EXPECT_EQ(e.x1, r.x1 - 1);
          EXPECT_EQ(e.y0, r.y0);
          EXPECT_EQ(e.y1, r.y1 - 1);
          // Centre in quarter pixels, times 3, against the thirds of 256 quarter pixels.
          const int cx = 3 * (4 * kCellCenters64[position % 3] + dx),
                    cy = 3 * (4 * kCellCenters64[position / 3] + dy);
          EXPECT_EQ(cx / 256, position % 3);
          EXPECT_EQ(cy / 256, position / 3);
        }
      }
    }
  }
}

TEST(GeometryTest, ObjectsNeverOverlapAndKeepAGap) {
  const Scene64Options options{.two_object_probability = 0.3, .three_object_probability = 0.7};
  int three = 0;
  for (const Scene64& scene : SampleScenes(1500, 21, options)) {
    const int n = static_cast<int>(scene.objects.size());
    three += n == 3;
    std::vector<Extent> extents;
    for (int k = 0; k < n; ++k) extents.push_back(SoloExtent(scene, k));
    for (int a = 0; a < n; ++a) {
      for (int b = a + 1; b < n; ++b) {
        EXPECT_NE(scene.objects[a].position, scene.objects[b].position);
        const Extent &p = extents[a], &q = extents[b];
        const int gap = std::max(
            {ColumnsBetween(p, q), ColumnsBetween(q, p), RowsBetween(p, q), RowsBetween(q, p)});
        EXPECT_GE(gap, kMinGapPixels64);
      }
    }
    // The scene is its objects drawn apart: no pixel is coloured twice.
    const SceneImage64 image = RenderScene64(scene);
    std::vector<int> owner(kPlane, -1);
    for (int k = 0; k < n; ++k) {
      const SceneImage64 solo =
          RenderScene64({.background = scene.background, .objects = {scene.objects[k]}});
      for (int i : extents[k].pixels) {
        ASSERT_EQ(owner[i], -1);
        owner[i] = k;
        for (int ch = 0; ch < 3; ++ch) ASSERT_EQ(image[ch * kPlane + i], solo[ch * kPlane + i]);
      }
    }
  }
  EXPECT_GT(three, 900);
}

// Every relation a caption states is true of the rendered pixels with a clear gap, its reverse is
// false, the grid cells agree, and the two objects differ in description.
TEST(RelationTest, StatedRelationsAreTrueAndUnambiguous) {
  const Scenes64Dataset ds =
      MakeScenes64Dataset(2000, 31,
                          {.two_object_probability = 1,
                           .three_object_probability = 0,
                           .repeat_probability = 0,  // repeats would make many same-described pairs
                           .relation_caption_probability = 1});
  std::set<Relation> relations;
  std::set<int> templates;
  int stated = 0;
  for (const CaptionedScene64& item : ds.items) {
    if (item.spec.kind != CaptionKind::kRelation) continue;
    ++stated;
    ASSERT_TRUE(item.spec.relation.has_value());
    const StatedRelation& r = *item.spec.relation;
    ASSERT_EQ(r.subject, 0);
    ASSERT_EQ(r.object, 1);
    relations.insert(r.relation);
    const Object64 &s = item.scene.objects[0], &o = item.scene.objects[1];
    const Extent se = SoloExtent(item.scene, 0), oe = SoloExtent(item.scene, 1);
    int gap = 0, reverse = 0, cell_order = 0;
    switch (r.relation) {
      case Relation::kLeftOf:
        gap = ColumnsBetween(se, oe), reverse = ColumnsBetween(oe, se);
        cell_order = o.position % 3 - s.position % 3;
        break;
      case Relation::kRightOf:
        gap = ColumnsBetween(oe, se), reverse = ColumnsBetween(se, oe);
        cell_order = s.position % 3 - o.position % 3;
        break;
      case Relation::kAbove:
        gap = RowsBetween(se, oe), reverse = RowsBetween(oe, se);
        cell_order = o.position / 3 - s.position / 3;
        break;
      case Relation::kBelow:
        gap = RowsBetween(oe, se), reverse = RowsBetween(se, oe);
        cell_order = s.position / 3 - o.position / 3;
        break;
    }
    EXPECT_GE(gap, kMinGapPixels64) << item.text;
    EXPECT_LT(reverse, 0) << item.text;
    EXPECT_GT(cell_order, 0) << item.text;
    EXPECT_FALSE(s.shape == o.shape && s.color == o.color && s.size == o.size) << item.text;
    EXPECT_TRUE(Satisfies(item.scene, item.spec)) << item.text;
    for (int t = 0; t < kNumRelationTemplates; ++t) {
      if (CaptionScene64(item.scene, {CaptionKind::kRelation, t, r})->text == item.text) {
        templates.insert(t);
      }
    }
  }
  EXPECT_GT(stated, 1950);  // only scenes of two same-described objects go without
  EXPECT_EQ(relations.size(), static_cast<size_t>(kNumRelations));
  EXPECT_EQ(templates.size(), static_cast<size_t>(kNumRelationTemplates));
}

// A relation outside ClearRelations is refused.
TEST(RelationTest, CaptionRefusesRelationsThatDoNotHold) {
  const Scene64 scene{.background = 0,
                      .objects = {{Shape::kCircle, 0, SizeClass::kSmall, 3},
                                  {Shape::kSquare, 2, SizeClass::kSmall, 5}}};
  EXPECT_TRUE(CaptionScene64(scene, {CaptionKind::kRelation, 0, {0, Relation::kLeftOf, 1}}).ok());
  EXPECT_TRUE(CaptionScene64(scene, {CaptionKind::kRelation, 0, {1, Relation::kRightOf, 0}}).ok());
  for (const Relation r : {Relation::kRightOf, Relation::kAbove, Relation::kBelow}) {
    EXPECT_EQ(CaptionScene64(scene, {CaptionKind::kRelation, 0, {0, r, 1}}).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  const Scene64 twins{.background = 0,
                      .objects = {{Shape::kCircle, 0, SizeClass::kSmall, 3},
                                  {Shape::kCircle, 0, SizeClass::kSmall, 5}}};
  EXPECT_TRUE(ClearRelations(twins).empty());
}

TEST(HoldOutTest, HeldOutPairsOnlyInTheHeldOutPromptSet) {
  const Scene64Options options{.three_object_probability = 0.5, .hold_out = HoldOut::kExclude};
  const Scenes64Dataset train = MakeScenes64Dataset(4000, 5, options);
  std::set<std::pair<int, int>> seen;
  for (const CaptionedScene64& item : train.items) {
    for (const Object64& o : item.scene.objects) {
      EXPECT_FALSE(IsHeldOut(o.shape, o.color)) << item.text;
      seen.insert({static_cast<int>(o.shape), o.color});
    }
  }
  EXPECT_EQ(seen.size(), static_cast<size_t>(kNumShapes * kNumColors) - kHeldOut.size());
  // The check can fail: data that may include them does.
  Scene64Options include = options;
  include.hold_out = HoldOut::kInclude;
  int held_out_included = 0;
  for (const CaptionedScene64& item : MakeScenes64Dataset(1000, 5, include).items) {
    for (const Object64& o : item.scene.objects) held_out_included += IsHeldOut(o.shape, o.color);
  }
  EXPECT_GT(held_out_included, 0);

  for (const PromptSet64 set : {PromptSet64::kSeen, PromptSet64::kRelation, PromptSet64::kCount}) {
    for (const CaptionedScene64& p : FixedPromptSet64(set, 100, 1234)) {
      for (const Object64& o : p.scene.objects) EXPECT_FALSE(IsHeldOut(o.shape, o.color)) << p.text;
    }
  }
  std::set<std::pair<int, int>> held_seen;
  for (const CaptionedScene64& p : FixedPromptSet64(PromptSet64::kHeldOut, 100, 1234)) {
    for (const Object64& o : p.scene.objects) {
      EXPECT_TRUE(IsHeldOut(o.shape, o.color)) << p.text;
      held_seen.insert({static_cast<int>(o.shape), o.color});
    }
  }
  EXPECT_EQ(held_seen.size(), kHeldOut.size());
}

// 8-connected components of non-background pixels.
int Components(const SceneImage64& image, int background) {
  const NamedColor& bg = kBackgroundColors[background];
  std::vector<bool> fg(kPlane), seen(kPlane, false);
  for (int i = 0; i < kPlane; ++i) {
    fg[i] = image[i] != bg.r || image[kPlane + i] != bg.g || image[2 * kPlane + i] != bg.b;
  }
  int n = 0;
  for (int start = 0; start < kPlane; ++start) {
    if (!fg[start] || seen[start]) continue;
    ++n;
    std::vector<int> stack = {start};
    seen[start] = true;
    while (!stack.empty()) {
      const int i = stack.back();
      stack.pop_back();
      for (int dy = -1; dy <= 1; ++dy) {
        for (int dx = -1; dx <= 1; ++dx) {
          const int x = i % kSize + dx, y = i / kSize + dy;
          if (x < 0 || y < 0 || x >= kSize || y >= kSize) continue;
          const int j = y * kSize + x;
          if (fg[j] && !seen[j]) {
            seen[j] = true;
            stack.push_back(j);
          }
        }
      }
    }
  }
  return n;
}

TEST(PromptSetTest, FixedSetsOfEachKindWithReferenceImages) {
  struct Expected {
    PromptSet64 set;
    CaptionKind kind;
    size_t objects;
  };
  for (const Expected& e : {Expected{PromptSet64::kSeen, CaptionKind::kAttributes, 1},
                            Expected{PromptSet64::kHeldOut, CaptionKind::kAttributes, 1},
                            Expected{PromptSet64::kRelation, CaptionKind::kRelation, 2},
                            Expected{PromptSet64::kCount, CaptionKind::kCount, 3}}) {
    const std::vector<CaptionedScene64> prompts = FixedPromptSet64(e.set, 100, 1234);
    const std::vector<CaptionedScene64> again = FixedPromptSet64(e.set, 100, 1234);
    const std::vector<CaptionedScene64> other = FixedPromptSet64(e.set, 100, 99);
    ASSERT_EQ(prompts.size(), 100u);
    int differ = 0;
    for (size_t i = 0; i < prompts.size(); ++i) {
      const CaptionedScene64& p = prompts[i];
      EXPECT_EQ(p.text, again[i].text);
      EXPECT_TRUE(SameScene(p.scene, again[i].scene));
      differ += p.text != other[i].text;
      EXPECT_EQ(p.spec.kind, e.kind);
      EXPECT_EQ(p.scene.objects.size(), e.objects);
      absl::StatusOr<CaptionSpec> parsed = ParseCaption64(p.text);
      ASSERT_TRUE(parsed.ok()) << parsed.status();
      EXPECT_EQ(*parsed, p.spec) << p.text;
      EXPECT_TRUE(Satisfies(p.scene, p.spec)) << p.text;
      // The reference image shows each object apart.
      EXPECT_EQ(Components(RenderScene64(p.scene), p.scene.background), static_cast<int>(e.objects))
          << p.text;
    }
    EXPECT_GT(differ, 80);
  }
}

// Every caption, in every template of every kind the scene allows, parses back to the structure
// it was written from, and the scene satisfies it.
TEST(CaptionTest, EveryTemplateParsesBackToItsStructure) {
  const Scene64Options options{.hold_out = HoldOut::kInclude};
  const Scenes64Dataset ds = MakeScenes64Dataset(1500, 11, options);
  std::map<CaptionKind, std::set<int>> used;
  auto check = [](const CaptionedScene64& c) {
    absl::StatusOr<CaptionSpec> parsed = ParseCaption64(c.text);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, c.spec) << c.text;
    EXPECT_TRUE(Satisfies(c.scene, c.spec)) << c.text;
    EXPECT_EQ(c.spec.count, static_cast<int>(c.scene.objects.size()));
  };
  for (const CaptionedScene64& item : ds.items) {
    check(item);
    const Scene64& scene = item.scene;
    std::vector<CaptionChoice> choices;
    for (int t = 0; t < kNumAttributeTemplates; ++t) {
      choices.push_back({CaptionKind::kAttributes, t});
    }
    for (const StatedRelation& r : ClearRelations(scene)) {
      for (int t = 0; t < kNumRelationTemplates; ++t) {
        choices.push_back({CaptionKind::kRelation, t, r});
      }
    }
    for (int t = 0; scene.objects.size() == 3 && t < kNumCountTemplates; ++t) {
      choices.push_back({CaptionKind::kCount, t});
    }
    for (const CaptionChoice& choice : choices) {
      absl::StatusOr<CaptionedScene64> c = CaptionScene64(scene, choice);
      ASSERT_TRUE(c.ok()) << c.status();
      check(*c);
      if (c->text == item.text) used[choice.kind].insert(choice.template_index);
    }
  }
  EXPECT_EQ(used[CaptionKind::kAttributes].size(), static_cast<size_t>(kNumAttributeTemplates));
  EXPECT_EQ(used[CaptionKind::kRelation].size(), static_cast<size_t>(kNumRelationTemplates));
  EXPECT_EQ(used[CaptionKind::kCount].size(), static_cast<size_t>(kNumCountTemplates));
}

TEST(CaptionTest, ExampleWording) {
  const Scene64 one{.background = 0, .objects = {{Shape::kCircle, 0, SizeClass::kSmall, 0}}};
  EXPECT_EQ(CaptionScene64(one, {})->text,
            "a small red circle at the top left on a white background");  // as the 32 world
  const Scene64 two{.background = 1,
                    .objects = {{Shape::kSquare, 2, SizeClass::kLarge, 4},
                                {Shape::kCircle, 0, SizeClass::kSmall, 3}}};
  EXPECT_EQ(CaptionScene64(two, {CaptionKind::kAttributes, 1})->text,
            "blue square, center, large; red circle, left, small, black background");
  EXPECT_EQ(CaptionScene64(two, {CaptionKind::kAttributes, 3})->text,
            "in the center there is a large blue square and on the left a small red circle, on "
            "black");
  const absl::StatusOr<CaptionedScene64> rel =
      CaptionScene64(two, {CaptionKind::kRelation, 0, {1, Relation::kLeftOf, 0}});
  ASSERT_TRUE(rel.ok()) << rel.status();
  EXPECT_EQ(rel->text,
            "a small red circle to the left of a large blue square on a black background");
  EXPECT_EQ(rel->scene.objects[0].shape, Shape::kCircle);  // the subject comes first
  EXPECT_EQ(CaptionScene64(two, {CaptionKind::kRelation, 2, {0, Relation::kRightOf, 1}})->text,
            "large blue square right of small red circle, black background");
  const Scene64 three{.background = 5,
                      .objects = {{Shape::kCross, 1, SizeClass::kSmall, 0},
                                  {Shape::kRing, 3, SizeClass::kLarge, 4},
                                  {Shape::kCross, 1, SizeClass::kMedium, 8}}};
  const absl::StatusOr<CaptionedScene64> count = CaptionScene64(three, {CaptionKind::kCount, 0});
  ASSERT_TRUE(count.ok()) << count.status();
  EXPECT_EQ(count->text, "three shapes on a mint background: two green crosses and a yellow ring");
  EXPECT_EQ(count->scene.objects[1].shape, Shape::kCross);  // grouped in order of mention
  EXPECT_EQ(CaptionScene64(three, {CaptionKind::kCount, 2})->text,
            "two green crosses and a yellow ring on a mint background, three shapes in all");
}

TEST(CaptionTest, ParseRejectsIncompletePrompts) {
  auto missing = ParseCaption64("a red circle on a white background");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("size position"));
  for (const char* bad : {
           "a small red circle at the top left",                                 // no background
           "a small red circle to the left of, white background",                // one object
           "a red circle to the left of a large blue square, white background",  // no size
           "a small red circle left of a large blue square above a small green ring on pink",
           "three shapes on a white background: two red circles",        // total 3, lists 2
           "two red circle on a white background",                       // number without plural
           "red circles on a white background",                          // plural without number
           "two small red circles and a blue square on beige",           // size in a count
           "two red circles and two blue squares on a gray background",  // four objects
           "a small red circle at the top and a large red square in the center and a small "
           "red ring on the left and a small green cross at the bottom on pink",
           "a small red circle in the center on a white background on a black background",
       }) {
    EXPECT_EQ(ParseCaption64(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  auto ok = ParseCaption64("A LARGE Blue Triangle, bottom left; black background");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->kind, CaptionKind::kAttributes);
  EXPECT_EQ(ok->objects[0].position, 6);
  auto count = ParseCaption64("two red circles and a blue square on a mint background");
  ASSERT_TRUE(count.ok()) << count.status();
  EXPECT_EQ(count->kind, CaptionKind::kCount);
  EXPECT_EQ(count->count, 3);
  EXPECT_EQ(count->objects[1], (ObjectClaim{.shape = Shape::kCircle, .color = 0}));
  auto placed = ParseCaption64(
      "a small red circle at the top left above a large blue square "
      "at the bottom left, white background");
  ASSERT_TRUE(placed.ok()) << placed.status();
  EXPECT_EQ(placed->relation, (StatedRelation{0, Relation::kAbove, 1}));
  EXPECT_EQ(placed->objects[1].position, 6);  // positions named with a relation are kept
}

// Three-object count captions: the total and every group's number agree with the scene.
TEST(CountTest, ThreeObjectCountsAreRight) {
  const Scenes64Dataset ds = MakeScenes64Dataset(
      1500, 41, {.three_object_probability = 1, .count_caption_probability = 1});
  std::map<int, int> group_sizes;
  for (const CaptionedScene64& item : ds.items) {
    ASSERT_EQ(item.spec.kind, CaptionKind::kCount);
    ASSERT_EQ(item.scene.objects.size(), 3u);
    EXPECT_THAT(item.text, HasSubstr("three shapes"));
    const absl::StatusOr<CaptionSpec> parsed = ParseCaption64(item.text);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(parsed->count, 3);
    // Groups of the scene, counted here, against the parsed claims and the words.
    std::map<std::pair<int, int>, int> scene_groups, parsed_groups;
    for (const Object64& o : item.scene.objects) ++scene_groups[{int(o.shape), o.color}];
    for (const ObjectClaim& c : parsed->objects) ++parsed_groups[{int(c.shape), c.color}];
    EXPECT_EQ(scene_groups, parsed_groups) << item.text;
    for (const auto& [key, n] : scene_groups) {
      ++group_sizes[n];
      const std::string color(kShapeColors[key.second].name);
      const std::string shape(kShapeNames[key.first]);
      const std::string plural = shape + (shape.back() == 's' ? "es" : "s");
      const std::string words = n == 1   ? "a " + color + " " + shape
                                : n == 2 ? "two " + color + " " + plural
                                         : "three " + color + " " + plural;
      EXPECT_THAT(item.text, HasSubstr(words));
    }
  }
  EXPECT_GT(group_sizes[2], 100);
  EXPECT_GT(group_sizes[3], 10);
}

TEST(SatisfiesTest, WrongClaimsAreNotSatisfied) {
  const CaptionedScene64 p = FixedPromptSet64(PromptSet64::kRelation, 1, 1234)[0];
  ASSERT_TRUE(Satisfies(p.scene, p.spec));
  CaptionSpec reversed = p.spec;
  const Relation r = reversed.relation->relation;
  reversed.relation->relation = r == Relation::kLeftOf    ? Relation::kRightOf
                                : r == Relation::kRightOf ? Relation::kLeftOf
                                : r == Relation::kAbove   ? Relation::kBelow
                                                          : Relation::kAbove;
  EXPECT_FALSE(Satisfies(p.scene, reversed));
  CaptionSpec recoloured = p.spec;
  recoloured.objects[0].color = (recoloured.objects[0].color + 1) % kNumColors;
  EXPECT_FALSE(Satisfies(p.scene, recoloured));
  // Objects may be found in any order.
  const CaptionedScene64 c = FixedPromptSet64(PromptSet64::kCount, 1, 1234)[0];
  Scene64 shuffled = c.scene;
  std::reverse(shuffled.objects.begin(), shuffled.objects.end());
  EXPECT_TRUE(Satisfies(shuffled, c.spec));
  shuffled.objects.pop_back();
  EXPECT_FALSE(Satisfies(shuffled, c.spec));
}

// FNV-1a, for a fingerprint of the 32x32 world's output.
uint64_t Fnv(uint64_t h, const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

// The 32x32 world the shipped model and its quality gate depend on is byte for byte what it was
// before this world was added (fingerprint taken from the unchanged data/shapes.cc).
TEST(World32Test, ShapesWorldIsUnchanged) {
  const ShapesDataset ds = MakeShapesDataset(500, 7, HoldOut::kExclude, 0.35);
  uint64_t h = 0xcbf29ce484222325ull;
  const torch::Tensor images = ds.data.images.contiguous();
  h = Fnv(h, images.data_ptr<uint8_t>(), images.numel());
  for (int64_t i = 0; i < ds.data.labels.size(0); ++i) {
    const uint8_t label = static_cast<uint8_t>(ds.data.labels[i].item<int64_t>());
    h = Fnv(h, &label, 1);
  }
  for (const std::string& c : ds.captions) h = Fnv(h, c.data(), c.size() + 1);
  for (const bool held_out : {false, true}) {
    for (const Prompt& p : FixedPromptSet(100, 1234, held_out)) {
      h = Fnv(h, p.text.data(), p.text.size() + 1);
    }
  }
  EXPECT_EQ(h, 0xe1cf7f9e307890a4ull) << std::hex << h;
}

}  // namespace
}  // namespace dartserve::data

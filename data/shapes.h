// A procedural captioned dataset for text-to-image: 32x32 RGB scenes of one or two coloured shapes
// on a plain background, each with a caption and its structured attributes, so an evaluator can
// check a generated image against the prompt that asked for it (eval/shape_analysis.h).
//
// Everything is deterministic by seed: the only randomness is std::mt19937_64, whose output
// sequence the C++ standard fixes, reduced with plain modulo (std::uniform_int_distribution is
// implementation-defined), so the same seed gives the same data on every platform.
//
// Geometry (why these numbers): a shape fills a square box of side 5 (small), 8 (medium) or
// 11 (large) pixels, centred on one cell of a 3x3 grid (cell centres 6.5, 16 and 25.5 px). Small
// and medium shapes are jittered by up to 2 and 1 px; large ones are not, so every shape keeps a
// 1-pixel background border and its box centre stays inside its cell. Two-shape scenes put the
// shapes in different cells with at least 1 px of background between their boxes.
//
// Held-out combinations: kHeldOut lists 4 (shape, colour) pairs of the 40 (10%). Training data
// made with HoldOut::kExclude never contains them, in any shape slot; FixedPromptSet(held_out =
// true) asks only for them, so compositional generalisation is measured apart.
#ifndef DARTSERVE_DATA_SHAPES_H_
#define DARTSERVE_DATA_SHAPES_H_

#include <array>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "data/dataset.h"

namespace dartserve::data {

inline constexpr int kShapeImageSize = 32;
inline constexpr int kShapeChannels = 3;
// One image: RGB planes in CHW order, uint8, like one row of InMemoryDataset::images.
using ShapeImage = std::array<uint8_t, kShapeChannels * kShapeImageSize * kShapeImageSize>;

enum class Shape { kCircle, kSquare, kTriangle, kCross, kRing };
enum class SizeClass { kSmall, kMedium, kLarge };
inline constexpr int kNumShapes = 5;
inline constexpr int kNumSizes = 3;
inline constexpr int kNumPositions = 9;  // 3x3 grid, index = row * 3 + col

inline constexpr std::array<std::string_view, kNumShapes> kShapeNames = {
    "circle", "square", "triangle", "cross", "ring"};
inline constexpr std::array<std::string_view, kNumSizes> kSizeNames = {"small", "medium", "large"};
inline constexpr std::array<int, kNumSizes> kSizePixels = {5, 8, 11};  // side of the shape's box
// Full position names, row-major. Corners are two words; edges are "top", "left", ...
inline constexpr std::array<std::string_view, kNumPositions> kPositionNames = {
    "top left", "top",         "top right", "left",        "center",
    "right",    "bottom left", "bottom",    "bottom right"};

struct NamedColor {
  std::string_view name;
  uint8_t r, g, b;
};
// Shape colours: pairwise RGB distance >= 95.
inline constexpr std::array<NamedColor, 8> kShapeColors = {{
    {"red", 210, 20, 30},
    {"green", 30, 160, 40},
    {"blue", 30, 60, 220},
    {"yellow", 240, 230, 30},
    {"purple", 140, 40, 180},
    {"orange", 255, 140, 0},
    {"cyan", 20, 200, 210},
    {"brown", 130, 75, 30},
}};
// Backgrounds: none shares a word with a shape colour (captions stay unambiguous), and each is
// >= 90 away in RGB from every shape colour, so foreground segmentation has a wide margin.
inline constexpr std::array<NamedColor, 6> kBackgroundColors = {{
    {"white", 255, 255, 255},
    {"black", 0, 0, 0},
    {"gray", 128, 128, 128},
    {"beige", 245, 235, 210},
    {"pink", 250, 210, 220},
    {"mint", 210, 245, 225},
}};
inline constexpr int kNumColors = static_cast<int>(kShapeColors.size());
inline constexpr int kNumBackgrounds = static_cast<int>(kBackgroundColors.size());

struct ShapeCombo {
  Shape shape;
  int color;  // index into kShapeColors
};
// Never in training data made with HoldOut::kExclude. Each held-out shape and colour still
// appears in training in other combinations; rings are never held out.
inline constexpr std::array<ShapeCombo, 4> kHeldOut = {{
    {Shape::kCircle, 4},    // purple circle
    {Shape::kSquare, 5},    // orange square
    {Shape::kTriangle, 6},  // cyan triangle
    {Shape::kCross, 7},     // brown cross
}};
bool IsHeldOut(Shape shape, int color);

struct ShapeSpec {
  Shape shape = Shape::kCircle;
  int color = 0;  // index into kShapeColors
  SizeClass size = SizeClass::kMedium;
  int position = 4;  // index into kPositionNames
  // Pixel offset of the box from its cell's nominal place; not part of the caption. |dx|, |dy|
  // must be <= MaxJitter(size).
  int dx = 0, dy = 0;

  // Attributes equal (jitter ignored).
  bool SameAttributes(const ShapeSpec& other) const;
};

struct Scene {
  int background = 0;             // index into kBackgroundColors
  std::vector<ShapeSpec> shapes;  // 1 or 2, in caption order

  bool SameAttributes(const Scene& other) const;
};

// The box a shape is drawn in: columns [x0, x0 + side), rows [y0, y0 + side).
struct Box {
  int x0, y0, side;
};
int MaxJitter(SizeClass size);
Box ShapeBox(const ShapeSpec& spec);
// The shape's pixels inside its box: mask[(y - y0) * side + (x - x0)].
std::vector<bool> ShapeMask(Shape shape, int side);

// Draws the scene (background, then shapes in order). Shapes have hard edges: no anti-aliasing,
// so every pixel is exactly a named colour.
ShapeImage RenderScene(const Scene& scene);

enum class HoldOut {
  kInclude,  // every (shape, colour) combination may appear
  kExclude,  // kHeldOut combinations never appear (training data)
  kOnly,     // every shape is a kHeldOut combination (held-out evaluation)
};

struct SceneOptions {
  double two_shape_probability = 0.35;
  HoldOut hold_out = HoldOut::kExclude;
};

// A random scene: uniform background, shape, colour, size, position and jitter; two shapes with
// the given probability (distinct cells, boxes separated by >= 1 px background).
Scene SampleScene(std::mt19937_64& rng, const SceneOptions& options = {});

// A caption that names every attribute of every shape (shape, colour, size, position) and the
// background, in one of several templates chosen by `rng`, e.g.
//   "a small red circle at the top left on a white background"
//   "blue square, bottom right, small, black background"
//   "a large green ring in the center and a small cyan cross at the top on a gray background"
std::string Caption(const Scene& scene, std::mt19937_64& rng);
inline constexpr int kNumCaptionTemplates = 5;
// The same with a chosen template in [0, kNumCaptionTemplates).
std::string CaptionWithTemplate(const Scene& scene, int template_index);

// Reads the attributes back from a caption written in this vocabulary: for each shape, the
// size, colour, shape and position words in order of mention, plus the background. Jitter is 0.
// INVALID_ARGUMENT when a shape lacks an attribute, an attribute is repeated within one shape,
// or the background is missing. Used to check captions and to evaluate free-form prompts that
// use the dataset's words.
absl::StatusOr<Scene> ParseCaption(std::string_view caption);

// A caption's words as the parsers read them: runs of ASCII letters, lower-cased; everything else
// separates words.
std::vector<std::string> CaptionWords(std::string_view caption);

struct ShapesDataset {
  // images [N, 3, 32, 32] uint8; labels [N] = the first shape's Shape (so a class-conditional
  // baseline or an attribute classifier can train on it directly); num_classes = kNumShapes.
  InMemoryDataset data;
  std::vector<std::string> captions;  // [N]
  std::vector<Scene> scenes;          // [N]
};

// n scenes from SampleScene(rng(seed), {two_shape_probability, hold_out}), rendered and captioned.
ShapesDataset MakeShapesDataset(int64_t n, uint64_t seed, HoldOut hold_out = HoldOut::kExclude,
                                double two_shape_probability = 0.35);

struct Prompt {
  std::string text;
  Scene scene;
};
// A fixed evaluation prompt set: n prompts, caption template 0 (the full sentence). Each scene
// keeps its sampled placement, so RenderScene(prompt.scene) is a valid reference image.
// held_out = false: no held-out combination appears; true: every shape is a held-out combination.
// The default prompt sets are FixedPromptSet(100, 1234, false) and FixedPromptSet(100, 1234,
// true); they are single-shape unless two_shape_probability > 0.
std::vector<Prompt> FixedPromptSet(int n, uint64_t seed, bool held_out,
                                   double two_shape_probability = 0.0);

}  // namespace dartserve::data

#endif  // DARTSERVE_DATA_SHAPES_H_

// Deterministic analysis of a square RGB image of either procedural shapes world: 32x32
// (data/shapes.h) or 64x64 (data/scenes64.h). The half of a GenEval-style prompt-adherence check
// that needs no learning.
//
// AnalyzeImage: background = per-channel median of the border pixels (robust to a shape that
// touches the border); foreground = pixels farther than `foreground_distance` (RGB Euclidean)
// from it, which sits well inside the >= 90 margin between every background and shape colour;
// objects = 8-connected foreground components, each trimmed to the pixels at least half as far
// from the background as its peak (so a blurred or anti-aliased edge stays where it was: a pixel
// is kept when the shape covers about half of it), of at least `min_area` pixels (smaller ones
// are treated as noise), largest first. For each object: the named colour whose mixtures with the
// background (bg + a (colour - bg), a in [0, 1]) lie closest to its core pixels (>= 80% of the
// peak distance), so a blurred shape is not mistaken for a paler colour; the grid cell (thirds
// of the image) of its bounding-box centre (the box, not the mass centroid, so a triangle's heavy
// base does not pull it down a cell); the size class from the box's longer side, with thresholds
// halfway between the world's rendered sides (5, 8, 11 px at 32: 6.5 and 9.5; 10, 15, 20 px at
// 64: 12.5 and 17.5); and a shape from a pluggable classifier. The geometric classifier's rules
// are scale-free ratios, so one set serves both sizes.
//
// CheckScene compares an analysis with the 32 world's scene the prompt asked for; the 64 world's
// check is eval/scene64_eval.h.
//
// Everything here is plain C++ over bytes and thread-compatible; no torch.
#ifndef DARTSERVE_EVAL_SHAPE_ANALYSIS_H_
#define DARTSERVE_EVAL_SHAPE_ANALYSIS_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "data/scenes64.h"
#include "data/shapes.h"

namespace dartserve::eval {

// A square image of planar RGB bytes (the R plane, then G, then B; CHW as in the datasets) of
// side 32 or 64: a view of the caller's bytes, never a copy, so like std::span it must not
// outlive them. It is made only from the two worlds' image types, so its side is always one the
// analysis knows.
class PlanarImage {
 public:
  PlanarImage(const data::ShapeImage& image)  // NOLINT: implicit, a view like std::span
      : bytes_(image), side_(data::kShapeImageSize) {}
  PlanarImage(const data::SceneImage64& image)  // NOLINT: implicit, a view like std::span
      : bytes_(image), side_(data::kScene64Size) {}

  int side() const { return side_; }
  std::span<const uint8_t> bytes() const { return bytes_; }  // 3 * side * side
  // Channel c (0 R, 1 G, 2 B) of pixel i = y * side + x.
  uint8_t at(int c, int i) const { return bytes_[c * side_ * side_ + i]; }

 private:
  std::span<const uint8_t> bytes_;
  int side_;
};

struct Rgb {
  double r = 0, g = 0, b = 0;
};

// Geometry of one connected component, the input of the geometric shape classifier.
struct ShapeFeatures {
  int area = 0;                        // pixels
  int x0 = 0, y0 = 0, x1 = 0, y1 = 0;  // bounding box, inclusive
  int width() const { return x1 - x0 + 1; }
  int height() const { return y1 - y0 + 1; }
  // area / (width * height): square 1, circle ~0.8, triangle ~0.55, cross ~0.45.
  double fill = 0;
  int hole_area = 0;  // non-object pixels the object encloses (4-connected): rings only
  // (pixels below the box's middle row - pixels above it) / area: a triangle (apex up) ~0.4,
  // symmetric shapes 0.
  double vertical_asymmetry = 0;
  // area^2 / (2 pi sum of squared distances from the centroid), each pixel counted as a unit
  // square: 1 for a disk (~0.98 for a 5-px one), 0.955 for a square, ~0.8 for a cross. Unlike
  // fill it does not depend on the bounding box, which a sliver of anti-aliased edge widens.
  double roundness = 0;
};

struct DetectedObject {
  std::vector<int> pixels;  // y * side + x, ascending
  ShapeFeatures features;
  Rgb mean_color;  // of the core pixels
  int color = 0;   // kShapeColors index (see the file comment)
  data::SizeClass size = data::SizeClass::kSmall;
  int position = 0;  // kPositionNames index of the box centre's grid cell
  data::Shape shape = data::Shape::kCircle;
};

struct Analysis {
  Rgb background;
  int background_color = 0;             // nearest kBackgroundColors entry
  std::vector<DetectedObject> objects;  // largest first
};

// What the analysis saw of one object, without its pixels: what reports keep.
struct SeenObject {
  data::Shape shape = data::Shape::kCircle;
  int color = 0;  // kShapeColors index
  data::SizeClass size = data::SizeClass::kSmall;
  int position = 0;  // kPositionNames index
  int area = 0;      // pixels

  bool operator==(const SeenObject&) const = default;
};
// One per object, in the analysis's order (largest first).
std::vector<SeenObject> SeenObjects(const Analysis& analysis);

// Decides an object's shape; it sees the whole image and the object's pixels and features. The
// default is GeometricShape. ShapeClassifier is the 32 world's form, which the learned classifier
// (eval/attribute_classifier.h, trained on 32-px masks) takes.
using PlanarShapeClassifier = std::function<data::Shape(const PlanarImage&, const DetectedObject&)>;
using ShapeClassifier = std::function<data::Shape(const data::ShapeImage&, const DetectedObject&)>;

// Rules on ShapeFeatures, in order: an enclosed hole of >= 5% of the box -> ring; fill >= 0.92
// -> square; vertical asymmetry >= 0.2 -> triangle; roundness < 0.965 (less round than halfway
// from a square, 0.955, to the least round rendered disk, 0.98) -> cross if fill < 0.68, else
// square; otherwise circle. Roundness decides what fill alone gets wrong on soft edges: a small
// 64-px circle whose box a half-covered edge pixel widens (fill down to 0.67) is still round,
// and a square whose corners a decoder or blur rounds off (fill down to 0.8) is still not. On
// clean 32-px renders the rules decide as fill alone did. All are ratios, so they hold at any
// image size.
data::Shape GeometricShape(const PlanarImage& image, const DetectedObject& object);
// The same, as a ShapeClassifier.
data::Shape GeometricShapeClassifier(const data::ShapeImage& image, const DetectedObject& object);

struct AnalysisOptions {
  double foreground_distance = 48;
  // Smallest object in pixels. Unset: 4 at side 32, and as many times more as the image has
  // pixels at other sides (16 at 64), since shapes scale with the image. The smallest rendered
  // shapes keep 9 px at 32 (a small cross) and about 40 at 64 (a small triangle).
  std::optional<int> min_area;
};

// The analysis of a 32- or 64-px image (see the file comment).
Analysis AnalyzeImage(const PlanarImage& image,
                      const PlanarShapeClassifier& classifier = GeometricShape,
                      const AnalysisOptions& options = {});
// The same for a 32-px image with a ShapeClassifier (the learned one, say).
Analysis AnalyzeImage(const data::ShapeImage& image,
                      const ShapeClassifier& classifier = GeometricShapeClassifier,
                      const AnalysisOptions& options = {});

// Per-attribute correctness of an image against the scene it should show. For two-shape scenes
// the two largest objects are matched to the two shapes in whichever order agrees on more
// attributes, and an attribute is correct only if it is correct for both shapes.
struct SceneCheck {
  bool color = false, shape = false, position = false, size = false;
  bool count = false;       // as many objects as the scene has shapes
  bool background = false;  // reported, not part of `all` (GenEval scores objects)
  bool all = false;         // color && shape && position && size && count
};
SceneCheck CheckScene(const Analysis& analysis, const data::Scene& scene);

// Running totals of SceneChecks, for accuracy reports.
struct CheckTally {
  int n = 0, color = 0, shape = 0, position = 0, size = 0, count = 0, background = 0, all = 0;
  void Add(const SceneCheck& check);
  double Rate(int correct) const { return n == 0 ? 0.0 : static_cast<double>(correct) / n; }
};

}  // namespace dartserve::eval

#endif  // DARTSERVE_EVAL_SHAPE_ANALYSIS_H_

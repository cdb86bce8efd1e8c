// Deterministic analysis of a 32x32 RGB image of the procedural shapes world (data/shapes.h):
// the half of a GenEval-style prompt-adherence check that needs no learning.
//
// AnalyzeImage: background = per-channel median of the border pixels (robust to a shape that
// touches the border); foreground = pixels farther than `foreground_distance` (RGB Euclidean)
// from it, which sits well inside the >= 100 margin between every background and shape colour;
// objects = 8-connected foreground components, each trimmed to the pixels at least half as far
// from the background as its peak (so a blurred edge stays where it was), of at least `min_area`
// pixels (smaller ones are treated as noise), largest first. For each object: the named colour
// whose mixtures with the background (bg + a (colour - bg), a in [0, 1]) lie closest to its core
// pixels (>= 80% of the peak distance), so a blurred shape is not mistaken for a paler colour;
// the grid cell of its bounding-box centre (the box, not the mass centroid, so a triangle's
// heavy base does not pull it down a cell), the size class from the box's longer side (the
// rendered sides are 5, 8 and 11 px, so the thresholds sit halfway, at 6.5 and 9.5), and a shape
// from a pluggable classifier.
//
// CheckScene compares an analysis with the scene the prompt asked for.
//
// Everything here is plain C++ over bytes and thread-compatible; no torch.
#ifndef DARTSERVE_EVAL_SHAPE_ANALYSIS_H_
#define DARTSERVE_EVAL_SHAPE_ANALYSIS_H_

#include <functional>
#include <vector>

#include "data/shapes.h"

namespace dartserve::eval {

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
};

struct DetectedObject {
  std::vector<int> pixels;  // y * 32 + x, ascending
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

// Decides an object's shape. The default is GeometricShapeClassifier; a learned classifier can
// be plugged in (it sees the whole image and the object's pixels and features).
using ShapeClassifier = std::function<data::Shape(const data::ShapeImage&, const DetectedObject&)>;

// Rules on ShapeFeatures, in order: an enclosed hole of >= 5% of the box -> ring; fill >= 0.92
// -> square; vertical asymmetry >= 0.2 -> triangle; fill < 0.68 -> cross; otherwise circle.
data::Shape GeometricShapeClassifier(const data::ShapeImage& image, const DetectedObject& object);

struct AnalysisOptions {
  double foreground_distance = 48;
  int min_area = 4;
};

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

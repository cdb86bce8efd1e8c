#include "eval/shape_analysis.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <limits>
#include <numbers>
#include <utility>

namespace dartserve::eval {

using ::dartserve::data::kBackgroundColors;
using ::dartserve::data::kNumColors;
using ::dartserve::data::kNumSizes;
using ::dartserve::data::kScene64Size;
using ::dartserve::data::kShapeColors;
using ::dartserve::data::kShapeImageSize;
using ::dartserve::data::kSizePixels;
using ::dartserve::data::kSizePixels64;
using ::dartserve::data::NamedColor;
using ::dartserve::data::Scene;
using ::dartserve::data::Shape;
using ::dartserve::data::ShapeImage;
using ::dartserve::data::ShapeSpec;
using ::dartserve::data::SizeClass;

namespace {

// What depends on the image's side: the world's rendered box sides decide the size classes.
struct Geometry {
  int side = 0;
  int plane = 0;
  std::array<double, kNumSizes - 1> size_thresholds{};  // halfway between neighbouring sides
  int min_area = 0;
};

Geometry GeometryOf(const PlanarImage& image, const AnalysisOptions& options) {
  Geometry g{.side = image.side(), .plane = image.side() * image.side()};
  const std::array<int, kNumSizes>& sides =
      g.side == kScene64Size ? kSizePixels64 : kSizePixels;  // PlanarImage: 32 or 64 only
  for (int k = 0; k + 1 < kNumSizes; ++k) g.size_thresholds[k] = (sides[k] + sides[k + 1]) / 2.0;
  g.min_area = options.min_area.value_or(4 * g.plane / (kShapeImageSize * kShapeImageSize));
  return g;
}

Rgb PixelAt(const PlanarImage& image, int i) {
  return Rgb{double(image.at(0, i)), double(image.at(1, i)), double(image.at(2, i))};
}

double Distance(const Rgb& a, const Rgb& b) {
  return std::sqrt((a.r - b.r) * (a.r - b.r) + (a.g - b.g) * (a.g - b.g) +
                   (a.b - b.b) * (a.b - b.b));
}

// Distance from `p` to the segment from `bg` to `c`: pixels on an anti-aliased or blurred edge
// are mixtures bg + a (c - bg), a in [0, 1], so they lie near the segment of their true colour.
double DistanceToMix(const Rgb& p, const Rgb& bg, const Rgb& c) {
  const Rgb dir{c.r - bg.r, c.g - bg.g, c.b - bg.b};
  const double len2 = dir.r * dir.r + dir.g * dir.g + dir.b * dir.b;
  double a =
      len2 == 0 ? 0 : ((p.r - bg.r) * dir.r + (p.g - bg.g) * dir.g + (p.b - bg.b) * dir.b) / len2;
  a = std::clamp(a, 0.0, 1.0);
  return Distance(p, Rgb{bg.r + a * dir.r, bg.g + a * dir.g, bg.b + a * dir.b});
}

template <size_t N>
int Nearest(const std::array<NamedColor, N>& colors, const Rgb& c) {
  int best = 0;
  double best_d = std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < N; ++i) {
    const double d =
        Distance(c, Rgb{double(colors[i].r), double(colors[i].g), double(colors[i].b)});
    if (d < best_d) best_d = d, best = static_cast<int>(i);
  }
  return best;
}

Rgb BorderMedian(const PlanarImage& image) {
  const int side = image.side();
  std::array<std::vector<uint8_t>, 3> values;
  for (int y = 0; y < side; ++y) {
    for (int x = 0; x < side; ++x) {
      if (y != 0 && y != side - 1 && x != 0 && x != side - 1) continue;
      for (int c = 0; c < 3; ++c) values[c].push_back(image.at(c, y * side + x));
    }
  }
  std::array<double, 3> median;
  for (int c = 0; c < 3; ++c) {
    auto mid = values[c].begin() + values[c].size() / 2;
    std::nth_element(values[c].begin(), mid, values[c].end());
    median[c] = *mid;
  }
  return Rgb{median[0], median[1], median[2]};
}

// Non-object pixels inside the object's box that cannot reach the outside through 4-connected
// non-object pixels. The box is padded by one always-outside ring so every flood starts outside.
int HoleArea(const std::vector<bool>& in_object, int side, const ShapeFeatures& f) {
  const int w = f.width() + 2, h = f.height() + 2;
  std::vector<uint8_t> state(w * h, 0);  // 0 unvisited, 1 object, 2 outside
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      const int ix = f.x0 - 1 + x, iy = f.y0 - 1 + y;
      const bool inside = ix >= 0 && iy >= 0 && ix < side && iy < side;
      if (inside && in_object[iy * side + ix]) state[y * w + x] = 1;
    }
  }
  std::vector<int> stack = {0};  // the padded corner is never object
  state[0] = 2;
  while (!stack.empty()) {
    const int i = stack.back();
    stack.pop_back();
    const int x = i % w, y = i / w;
    const std::array<std::pair<int, int>, 4> next = {
        {{x - 1, y}, {x + 1, y}, {x, y - 1}, {x, y + 1}}};
    for (const auto& [nx, ny] : next) {
      if (nx < 0 || ny < 0 || nx >= w || ny >= h || state[ny * w + nx] != 0) continue;
      state[ny * w + nx] = 2;
      stack.push_back(ny * w + nx);
    }
  }
  return static_cast<int>(std::count(state.begin(), state.end(), 0));
}

// `pixels` are the object's (already refined) pixels; `core` the subset whose colour is least mixed
// with the background, used for the colour estimate.
DetectedObject Describe(std::vector<int> pixels, const std::vector<int>& core,
                        const PlanarImage& image, const Geometry& g, const Rgb& background) {
  const int side = g.side;
  DetectedObject obj;
  ShapeFeatures& f = obj.features;
  f.area = static_cast<int>(pixels.size());
  f.x0 = f.y0 = side;
  f.x1 = f.y1 = -1;
  Rgb sum;
  for (const int i : pixels) {
    const int x = i % side, y = i / side;
    f.x0 = std::min(f.x0, x), f.x1 = std::max(f.x1, x);
    f.y0 = std::min(f.y0, y), f.y1 = std::max(f.y1, y);
  }
  for (const int i : core) {
    const Rgb p = PixelAt(image, i);
    sum.r += p.r, sum.g += p.g, sum.b += p.b;
  }
  const double n = static_cast<double>(core.size());
  obj.mean_color = Rgb{sum.r / n, sum.g / n, sum.b / n};
  f.fill = static_cast<double>(f.area) / (f.width() * f.height());
  const double mid_row = (f.y0 + f.y1) / 2.0;
  int above = 0, below = 0;
  std::vector<bool> in_object(g.plane, false);
  for (const int i : pixels) {
    in_object[i] = true;
    const int y = i / side;
    above += y < mid_row;
    below += y > mid_row;
  }
  f.vertical_asymmetry = static_cast<double>(below - above) / f.area;
  double mx = 0, my = 0;
  for (const int i : pixels) mx += i % side, my += i / side;
  mx /= f.area, my /= f.area;
  double moment = 0;  // about the centroid; a unit square's own is 1/6
  for (const int i : pixels) {
    const double dx = i % side - mx, dy = i / side - my;
    moment += dx * dx + dy * dy + 1.0 / 6;
  }
  f.roundness = static_cast<double>(f.area) * f.area / (2 * std::numbers::pi * moment);
  f.hole_area = HoleArea(in_object, side, f);

  // The named colour whose background mixtures best explain the core pixels; on a clean render
  // this is the nearest colour (every core pixel is exactly it).
  double best = std::numeric_limits<double>::infinity();
  for (int k = 0; k < kNumColors; ++k) {
    const NamedColor& named = kShapeColors[k];
    const Rgb c{double(named.r), double(named.g), double(named.b)};
    double residual = 0;
    for (const int i : core) residual += DistanceToMix(PixelAt(image, i), background, c);
    if (residual < best) best = residual, obj.color = k;
  }
  const int extent = std::max(f.width(), f.height());
  obj.size = extent < g.size_thresholds[0]   ? SizeClass::kSmall
             : extent < g.size_thresholds[1] ? SizeClass::kMedium
                                             : SizeClass::kLarge;
  const double cx = (f.x0 + f.x1 + 1) / 2.0, cy = (f.y0 + f.y1 + 1) / 2.0;
  const auto cell = [side](double c) { return std::clamp(static_cast<int>(c * 3 / side), 0, 2); };
  obj.position = cell(cy) * 3 + cell(cx);
  obj.pixels = std::move(pixels);
  return obj;
}

// 8-connected components of `mask`, each as ascending pixel indices, in order of first pixel.
std::vector<std::vector<int>> Components(const std::vector<bool>& mask, int side) {
  const int plane = side * side;
  std::vector<std::vector<int>> components;
  std::vector<bool> seen(plane, false);
  for (int start = 0; start < plane; ++start) {
    if (!mask[start] || seen[start]) continue;
    std::vector<int> pixels, stack = {start};
    seen[start] = true;
    while (!stack.empty()) {
      const int i = stack.back();
      stack.pop_back();
      pixels.push_back(i);
      const int x = i % side, y = i / side;
      for (int dy = -1; dy <= 1; ++dy) {
        for (int dx = -1; dx <= 1; ++dx) {
          const int nx = x + dx, ny = y + dy;
          if (nx < 0 || ny < 0 || nx >= side || ny >= side) continue;
          const int j = ny * side + nx;
          if (mask[j] && !seen[j]) seen[j] = true, stack.push_back(j);
        }
      }
    }
    std::sort(pixels.begin(), pixels.end());
    components.push_back(std::move(pixels));
  }
  return components;
}

}  // namespace

Shape GeometricShape(const PlanarImage&, const DetectedObject& object) {
  const ShapeFeatures& f = object.features;
  const int box = f.width() * f.height();
  if (f.hole_area > 0 && f.hole_area >= 0.05 * box) return Shape::kRing;
  if (f.fill >= 0.92) return Shape::kSquare;
  if (f.vertical_asymmetry >= 0.2) return Shape::kTriangle;
  if (f.roundness < 0.965) return f.fill < 0.68 ? Shape::kCross : Shape::kSquare;
  return Shape::kCircle;
}

Shape GeometricShapeClassifier(const ShapeImage& image, const DetectedObject& object) {
  return GeometricShape(image, object);
}

Analysis AnalyzeImage(const PlanarImage& image, const PlanarShapeClassifier& classifier,
                      const AnalysisOptions& options) {
  const Geometry g = GeometryOf(image, options);
  Analysis analysis;
  analysis.background = BorderMedian(image);
  analysis.background_color = Nearest(kBackgroundColors, analysis.background);
  std::vector<double> distance(g.plane);
  std::vector<bool> foreground(g.plane);
  for (int i = 0; i < g.plane; ++i) {
    distance[i] = Distance(PixelAt(image, i), analysis.background);
    foreground[i] = distance[i] > options.foreground_distance;
  }
  for (const std::vector<int>& component : Components(foreground, g.side)) {
    // Half-maximum refinement: keep the pixels at least half as far from the background as the
    // component's peak (90th percentile). On a clean render this keeps every pixel; on a blurred
    // one it puts the edge where it was before blurring, so the box (and the size class) does not
    // grow with the blur, and two shapes that the blur bridged come apart again. The colour comes
    // from the core (>= 80% of the peak).
    std::vector<double> d;
    for (const int i : component) d.push_back(distance[i]);
    const auto rank = d.begin() + static_cast<std::ptrdiff_t>(0.9 * (d.size() - 1));
    std::nth_element(d.begin(), rank, d.end());
    const double peak = *rank;
    std::vector<bool> kept(g.plane, false);
    for (const int i : component) kept[i] = distance[i] >= 0.5 * peak;
    for (std::vector<int>& pixels : Components(kept, g.side)) {
      if (static_cast<int>(pixels.size()) < g.min_area) continue;
      std::vector<int> core;
      for (const int i : pixels) {
        if (distance[i] >= 0.8 * peak) core.push_back(i);
      }
      if (core.empty()) core = pixels;
      analysis.objects.push_back(Describe(std::move(pixels), core, image, g, analysis.background));
    }
  }
  // Largest first; ties by first pixel, so the order is deterministic.
  std::stable_sort(analysis.objects.begin(), analysis.objects.end(),
                   [](const DetectedObject& a, const DetectedObject& b) {
                     return a.features.area > b.features.area;
                   });
  for (DetectedObject& obj : analysis.objects) obj.shape = classifier(image, obj);
  return analysis;
}

Analysis AnalyzeImage(const ShapeImage& image, const ShapeClassifier& classifier,
                      const AnalysisOptions& options) {
  return AnalyzeImage(
      PlanarImage(image),
      [&](const PlanarImage&, const DetectedObject& object) { return classifier(image, object); },
      options);
}

std::vector<SeenObject> SeenObjects(const Analysis& analysis) {
  std::vector<SeenObject> seen;
  seen.reserve(analysis.objects.size());
  for (const DetectedObject& obj : analysis.objects) {
    seen.push_back(SeenObject{.shape = obj.shape,
                              .color = obj.color,
                              .size = obj.size,
                              .position = obj.position,
                              .area = obj.features.area});
  }
  return seen;
}

SceneCheck CheckScene(const Analysis& analysis, const Scene& scene) {
  SceneCheck check;
  check.background = analysis.background_color == scene.background;
  check.count = analysis.objects.size() == scene.shapes.size();
  const size_t n = scene.shapes.size();
  if (analysis.objects.size() < n || n == 0 || n > 2) return check;

  struct Match {
    bool color = true, shape = true, position = true, size = true;
    int score() const { return color + shape + position + size; }
  };
  auto match = [&](const std::vector<int>& order) {
    Match m;
    for (size_t k = 0; k < n; ++k) {
      const DetectedObject& obj = analysis.objects[order[k]];
      const ShapeSpec& spec = scene.shapes[k];
      m.color &= obj.color == spec.color;
      m.shape &= obj.shape == spec.shape;
      m.position &= obj.position == spec.position;
      m.size &= obj.size == spec.size;
    }
    return m;
  };
  Match best = match(n == 1 ? std::vector<int>{0} : std::vector<int>{0, 1});
  if (n == 2) {
    const Match swapped = match({1, 0});
    if (swapped.score() > best.score()) best = swapped;
  }
  check.color = best.color;
  check.shape = best.shape;
  check.position = best.position;
  check.size = best.size;
  check.all = check.color && check.shape && check.position && check.size && check.count;
  return check;
}

void CheckTally::Add(const SceneCheck& check) {
  ++n;
  color += check.color;
  shape += check.shape;
  position += check.position;
  size += check.size;
  count += check.count;
  background += check.background;
  all += check.all;
}

}  // namespace dartserve::eval

#include "data/shapes.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>

#include "absl/strings/str_join.h"
#include "data/world_util.h"

namespace dartserve::data {
namespace {

constexpr int kSize = kShapeImageSize;
constexpr int kPlane = kSize * kSize;

// Box origin (x0 or y0 before jitter) by size and grid cell: side/2 to the left of the cell
// centres 6.5, 16 and 25.5, rounded half away from zero (see the header's geometry note).
constexpr int kBoxOrigin[kNumSizes][3] = {{4, 14, 23}, {3, 12, 22}, {1, 11, 20}};
constexpr int kMaxJitter[kNumSizes] = {2, 1, 0};

using internal::Cat;
using internal::Uniform;
using internal::Uniform01;

// Boxes with at least one background column or row between them.
bool Separated(const Box& a, const Box& b) {
  return a.x0 + a.side < b.x0 || b.x0 + b.side < a.x0 || a.y0 + a.side < b.y0 ||
         b.y0 + b.side < a.y0;
}

ShapeCombo SampleCombo(std::mt19937_64& rng, HoldOut hold_out) {
  if (hold_out == HoldOut::kOnly) return kHeldOut[Uniform(rng, kHeldOut.size())];
  while (true) {
    const ShapeCombo combo{static_cast<Shape>(Uniform(rng, kNumShapes)), Uniform(rng, kNumColors)};
    if (hold_out == HoldOut::kInclude || !IsHeldOut(combo.shape, combo.color)) return combo;
  }
}

// "at the top left", "on the left", "in the center", ...
std::string PositionPhrase(int position) {
  const std::string_view name = kPositionNames[position];
  if (position == 4) return "in the center";
  if (position == 3 || position == 5) return Cat("on the ", name);
  return Cat("at the ", name);
}

std::string NounPhrase(const ShapeSpec& s) {
  return Cat(kSizeNames[static_cast<int>(s.size)], " ", kShapeColors[s.color].name, " ",
             kShapeNames[static_cast<int>(s.shape)]);
}

template <size_t N>
std::optional<int> Find(const std::array<std::string_view, N>& names, std::string_view word) {
  for (size_t i = 0; i < N; ++i) {
    if (names[i] == word) return static_cast<int>(i);
  }
  return std::nullopt;
}

template <size_t N>
std::optional<int> FindColor(const std::array<NamedColor, N>& colors, std::string_view word) {
  for (size_t i = 0; i < N; ++i) {
    if (colors[i].name == word) return static_cast<int>(i);
  }
  return std::nullopt;
}

}  // namespace

bool IsHeldOut(Shape shape, int color) {
  return std::any_of(kHeldOut.begin(), kHeldOut.end(),
                     [&](const ShapeCombo& c) { return c.shape == shape && c.color == color; });
}

bool ShapeSpec::SameAttributes(const ShapeSpec& other) const {
  return shape == other.shape && color == other.color && size == other.size &&
         position == other.position;
}

bool Scene::SameAttributes(const Scene& other) const {
  if (background != other.background || shapes.size() != other.shapes.size()) return false;
  for (size_t i = 0; i < shapes.size(); ++i) {
    if (!shapes[i].SameAttributes(other.shapes[i])) return false;
  }
  return true;
}

int MaxJitter(SizeClass size) { return kMaxJitter[static_cast<int>(size)]; }

Box ShapeBox(const ShapeSpec& spec) {
  const int size = static_cast<int>(spec.size);
  return Box{kBoxOrigin[size][spec.position % 3] + spec.dx,
             kBoxOrigin[size][spec.position / 3] + spec.dy, kSizePixels[size]};
}

std::vector<bool> ShapeMask(Shape shape, int side) {
  std::vector<bool> mask(side * side);
  for (int y = 0; y < side; ++y) {
    for (int x = 0; x < side; ++x) {
      // Pixel centre relative to the box centre, in units of the box side.
      const double u = (x + 0.5) / side - 0.5, v = (y + 0.5) / side - 0.5;
      const double d2 = u * u + v * v;
      bool in = false;
      switch (shape) {
        case Shape::kCircle:
          in = d2 <= 0.25 + 1e-9;
          break;
        case Shape::kSquare:
          in = true;
          break;
        // Apex at the top centre, base along the bottom row: the width at height v is v + 0.5.
        case Shape::kTriangle:
          in = std::abs(u) <= (v + 0.5) / 2 + 1e-9;
          break;
        // Arms a third of the side thick (1, 2 and 3 px for the three sizes).
        case Shape::kCross:
          in = std::abs(u) < 1.0 / 6 || std::abs(v) < 1.0 / 6;
          break;
        // Hole of half the outer radius.
        case Shape::kRing:
          in = d2 > 0.0625 + 1e-9 && d2 <= 0.25 + 1e-9;
          break;
      }
      mask[y * side + x] = in;
    }
  }
  return mask;
}

ShapeImage RenderScene(const Scene& scene) {
  ShapeImage image;
  const NamedColor& bg = kBackgroundColors[scene.background];
  std::memset(image.data(), bg.r, kPlane);
  std::memset(image.data() + kPlane, bg.g, kPlane);
  std::memset(image.data() + 2 * kPlane, bg.b, kPlane);
  for (const ShapeSpec& spec : scene.shapes) {
    const Box box = ShapeBox(spec);
    const std::vector<bool> mask = ShapeMask(spec.shape, box.side);
    const NamedColor& c = kShapeColors[spec.color];
    for (int y = 0; y < box.side; ++y) {
      for (int x = 0; x < box.side; ++x) {
        const int px = box.x0 + x, py = box.y0 + y;
        if (!mask[y * box.side + x] || px < 0 || py < 0 || px >= kSize || py >= kSize) continue;
        const int i = py * kSize + px;
        image[i] = c.r;
        image[kPlane + i] = c.g;
        image[2 * kPlane + i] = c.b;
      }
    }
  }
  return image;
}

Scene SampleScene(std::mt19937_64& rng, const SceneOptions& options) {
  Scene scene;
  scene.background = Uniform(rng, kNumBackgrounds);
  const int count = Uniform01(rng) < options.two_shape_probability ? 2 : 1;
  for (int k = 0; k < count; ++k) {
    const ShapeCombo combo = SampleCombo(rng, options.hold_out);
    ShapeSpec spec{.shape = combo.shape, .color = combo.color};
    // Resample the placement until it is clear of the first shape. Two small shapes in any two
    // distinct cells are always separated, so this ends quickly.
    do {
      spec.size = static_cast<SizeClass>(Uniform(rng, kNumSizes));
      spec.position = Uniform(rng, kNumPositions);
      const int j = MaxJitter(spec.size);
      spec.dx = Uniform(rng, 2 * j + 1) - j;
      spec.dy = Uniform(rng, 2 * j + 1) - j;
    } while (k == 1 && (spec.position == scene.shapes[0].position ||
                        !Separated(ShapeBox(spec), ShapeBox(scene.shapes[0]))));
    scene.shapes.push_back(spec);
  }
  return scene;
}

std::string CaptionWithTemplate(const Scene& scene, int template_index) {
  const std::string_view bg = kBackgroundColors[scene.background].name;
  std::vector<std::string> parts;
  for (const ShapeSpec& s : scene.shapes) {
    const std::string_view position = kPositionNames[s.position];
    switch (template_index) {
      case 1:  // "blue square, bottom right, small"
        parts.push_back(Cat(kShapeColors[s.color].name, " ", kShapeNames[static_cast<int>(s.shape)],
                            ", ", position, ", ", kSizeNames[static_cast<int>(s.size)]));
        break;
      case 4:  // "at the top left there is a small red circle"
        parts.push_back(Cat(PositionPhrase(s.position), parts.empty() ? " there is" : "", " a ",
                            NounPhrase(s)));
        break;
      default:  // "a small red circle at the top left"
        parts.push_back(Cat("a ", NounPhrase(s), " ", PositionPhrase(s.position)));
        break;
    }
  }
  switch (template_index) {
    case 1:
      return Cat(absl::StrJoin(parts, "; "), ", ", bg, " background");
    case 2:
      return Cat(absl::StrJoin(parts, ", and "), ", ", bg, " background");
    case 3:
      return Cat(bg, " background with ", absl::StrJoin(parts, " and "));
    case 4:
      return Cat(absl::StrJoin(parts, " and "), ", on ", bg);
    default:
      return Cat(absl::StrJoin(parts, " and "), " on a ", bg, " background");
  }
}

std::string Caption(const Scene& scene, std::mt19937_64& rng) {
  return CaptionWithTemplate(scene, Uniform(rng, kNumCaptionTemplates));
}

std::vector<std::string> CaptionWords(std::string_view caption) {
  std::vector<std::string> words;
  std::string word;
  for (const char c : caption) {
    if (c >= 'a' && c <= 'z') {
      word.push_back(c);
    } else if (c >= 'A' && c <= 'Z') {
      word.push_back(static_cast<char>(c - 'A' + 'a'));
    } else if (!word.empty()) {
      words.push_back(std::move(word));
      word.clear();
    }
  }
  if (!word.empty()) words.push_back(std::move(word));
  return words;
}

absl::StatusOr<Scene> ParseCaption(std::string_view caption) {
  const std::vector<std::string> words = CaptionWords(caption);

  // A shape's attributes as they are read; a repeated attribute starts the next shape.
  struct Partial {
    std::optional<int> shape, color, size, position;
  };
  std::vector<Partial> shapes(1);
  std::optional<int> background;
  auto set = [&](std::optional<int> Partial::*field, int value) {
    if ((shapes.back().*field).has_value()) shapes.emplace_back();
    shapes.back().*field = value;
  };
  for (size_t i = 0; i < words.size(); ++i) {
    const std::string& w = words[i];
    if (auto v = Find(kShapeNames, w)) {
      set(&Partial::shape, *v);
    } else if (auto v = Find(kSizeNames, w)) {
      set(&Partial::size, *v);
    } else if (auto v = FindColor(kShapeColors, w)) {
      set(&Partial::color, *v);
    } else if (auto v = FindColor(kBackgroundColors, w)) {
      if (background.has_value()) {
        return absl::InvalidArgumentError(Cat("\"", caption, "\": two backgrounds"));
      }
      background = *v;
    } else if (i + 1 < words.size() && (w == "top" || w == "bottom") &&
               (words[i + 1] == "left" || words[i + 1] == "right")) {
      set(&Partial::position, *Find(kPositionNames, Cat(w, " ", words[i + 1])));
      ++i;
    } else if (auto v = Find(kPositionNames, w)) {
      set(&Partial::position, *v);
    }
  }
  if (!background.has_value()) {
    return absl::InvalidArgumentError(Cat("\"", caption, "\": no background colour"));
  }
  Scene scene{.background = *background};
  for (size_t k = 0; k < shapes.size(); ++k) {
    const Partial& p = shapes[k];
    if (!p.shape || !p.color || !p.size || !p.position) {
      return absl::InvalidArgumentError(Cat("\"", caption, "\": shape ", std::to_string(k + 1),
                                            " lacks its", !p.shape ? " shape" : "",
                                            !p.color ? " colour" : "", !p.size ? " size" : "",
                                            !p.position ? " position" : ""));
    }
    scene.shapes.push_back(ShapeSpec{.shape = static_cast<Shape>(*p.shape),
                                     .color = *p.color,
                                     .size = static_cast<SizeClass>(*p.size),
                                     .position = *p.position});
  }
  return scene;
}

ShapesDataset MakeShapesDataset(int64_t n, uint64_t seed, HoldOut hold_out,
                                double two_shape_probability) {
  std::mt19937_64 rng(seed);
  ShapesDataset ds;
  ds.data.num_classes = kNumShapes;
  ds.data.images = torch::empty({n, kShapeChannels, kSize, kSize}, torch::kUInt8);
  ds.data.labels = torch::empty({n}, torch::kLong);
  uint8_t* images = ds.data.images.data_ptr<uint8_t>();
  int64_t* labels = ds.data.labels.data_ptr<int64_t>();
  ds.captions.reserve(n);
  ds.scenes.reserve(n);
  const SceneOptions options{.two_shape_probability = two_shape_probability, .hold_out = hold_out};
  for (int64_t i = 0; i < n; ++i) {
    Scene scene = SampleScene(rng, options);
    const ShapeImage image = RenderScene(scene);
    std::memcpy(images + i * image.size(), image.data(), image.size());
    labels[i] = static_cast<int64_t>(scene.shapes[0].shape);
    ds.captions.push_back(Caption(scene, rng));
    ds.scenes.push_back(std::move(scene));
  }
  return ds;
}

std::vector<Prompt> FixedPromptSet(int n, uint64_t seed, bool held_out,
                                   double two_shape_probability) {
  std::mt19937_64 rng(seed);
  const SceneOptions options{.two_shape_probability = two_shape_probability,
                             .hold_out = held_out ? HoldOut::kOnly : HoldOut::kExclude};
  std::vector<Prompt> prompts;
  prompts.reserve(n);
  for (int i = 0; i < n; ++i) {
    Scene scene = SampleScene(rng, options);
    prompts.push_back(Prompt{CaptionWithTemplate(scene, 0), std::move(scene)});
  }
  return prompts;
}

}  // namespace dartserve::data

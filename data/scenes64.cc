#include "data/scenes64.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <utility>

#include "absl/strings/str_join.h"
#include "data/world_util.h"

namespace dartserve::data {
namespace {

constexpr int kSize = kScene64Size;
constexpr int kPlane = kSize * kSize;
// Rendering works on a lattice of 1/8 px: samples sit at odd multiples (1/8, 3/8, ...), box
// centres and edges at even ones (a quarter pixel is 2 units), so no sample is ever on an edge.
constexpr int kUnitsPerPixel = 8;
constexpr int kUnitsPerQuarter = 2;

using internal::Cat;
using internal::Uniform;
using internal::Uniform01;

int SizeIndex(SizeClass size) { return static_cast<int>(size); }
int ShapeIndex(Shape shape) { return static_cast<int>(shape); }

// Box centre in lattice units.
int CenterX(const Object64& o) {
  return kCellCenters64[o.position % 3] * kUnitsPerPixel + o.dx * kUnitsPerQuarter;
}
int CenterY(const Object64& o) {
  return kCellCenters64[o.position / 3] * kUnitsPerPixel + o.dy * kUnitsPerQuarter;
}
int HalfSide(const Object64& o) { return kSizePixels64[SizeIndex(o.size)] * kUnitsPerPixel / 2; }

// Whether the sample at (p, q) lattice units from the box centre is inside the shape; y grows
// downwards, h is half the box side. p and q are odd and h even, so every comparison is strict
// without ties (see the header). The shapes are those of data/shapes.h's ShapeMask.
bool Inside(Shape shape, int64_t p, int64_t q, int64_t h) {
  const int64_t ap = std::abs(p), aq = std::abs(q);
  if (ap >= h || aq >= h) return false;
  const int64_t d2 = p * p + q * q;
  switch (shape) {
    case Shape::kCircle:
      return d2 < h * h;
    case Shape::kSquare:
      return true;
    case Shape::kTriangle:  // apex at the top centre, base along the bottom edge
      return 2 * ap < q + h;
    case Shape::kCross:  // arms a third of the side thick
      return 3 * ap < h || 3 * aq < h;
    case Shape::kRing:  // hole of half the outer radius
      return 4 * d2 > h * h && d2 < h * h;
  }
  return false;
}

ShapeCombo SampleCombo(std::mt19937_64& rng, HoldOut hold_out) {
  if (hold_out == HoldOut::kOnly) return kHeldOut[Uniform(rng, kHeldOut.size())];
  while (true) {
    const ShapeCombo combo{static_cast<Shape>(Uniform(rng, kNumShapes)), Uniform(rng, kNumColors)};
    if (hold_out == HoldOut::kInclude || !IsHeldOut(combo.shape, combo.color)) return combo;
  }
}

// Size, cell and jitter, drawn until the cell is free and the footprint clear of `placed`.
void Place(std::mt19937_64& rng, const std::vector<Object64>& placed, Object64& o) {
  auto clashes = [&](const Object64& other) {
    return other.position == o.position || !Separated(Footprint(o), Footprint(other));
  };
  do {
    o.size = static_cast<SizeClass>(Uniform(rng, kNumSizes));
    o.position = Uniform(rng, kNumPositions);
    const int j = kMaxJitterQuarters64[SizeIndex(o.size)];
    o.dx = Uniform(rng, 2 * j + 1) - j;
    o.dy = Uniform(rng, 2 * j + 1) - j;
  } while (std::any_of(placed.begin(), placed.end(), clashes));
}

// Wording.

// "at the top left", "on the left", "in the center", ... as in data/shapes.h's captions.
std::string PositionPhrase(int position) {
  const std::string_view name = kPositionNames[position];
  if (position == 4) return "in the center";
  if (position == 3 || position == 5) return Cat("on the ", name);
  return Cat("at the ", name);
}

std::string_view SizeName(const Object64& o) { return kSizeNames[SizeIndex(o.size)]; }
std::string_view ColorName(const Object64& o) { return kShapeColors[o.color].name; }
std::string_view ShapeName(const Object64& o) { return kShapeNames[ShapeIndex(o.shape)]; }

// "small red circle"
std::string Noun(const Object64& o) {
  return Cat(SizeName(o), " ", ColorName(o), " ", ShapeName(o));
}

// "circles", "crosses"
std::string Plural(Shape shape) {
  const std::string_view name = kShapeNames[ShapeIndex(shape)];
  return Cat(name, name.back() == 's' ? "es" : "s");
}

constexpr std::array<std::string_view, 4> kNumberWords = {"", "one", "two", "three"};

// "x", "x and y", "x, y and z"
std::string JoinList(const std::vector<std::string>& parts) {
  if (parts.size() <= 1) return parts.empty() ? std::string() : parts[0];
  std::vector<std::string> head(parts.begin(), parts.end() - 1);
  return Cat(absl::StrJoin(head, ", "), " and ", parts.back());
}

std::string AttributesText(const Scene64& scene, int template_index) {
  const std::string_view bg = kBackgroundColors[scene.background].name;
  std::vector<std::string> parts;
  for (const Object64& o : scene.objects) {
    switch (template_index) {
      case 1:  // "blue square, bottom right, small"
        parts.push_back(Cat(ColorName(o), " ", ShapeName(o), ", ", kPositionNames[o.position], ", ",
                            SizeName(o)));
        break;
      case 3:  // "at the top left there is a small red circle"
        parts.push_back(
            Cat(PositionPhrase(o.position), parts.empty() ? " there is" : "", " a ", Noun(o)));
        break;
      default:  // "a small red circle at the top left"
        parts.push_back(Cat("a ", Noun(o), " ", PositionPhrase(o.position)));
        break;
    }
  }
  switch (template_index) {
    case 1:
      return Cat(absl::StrJoin(parts, "; "), ", ", bg, " background");
    case 2:
      return Cat(bg, " background with ", JoinList(parts));
    case 3:
      return Cat(JoinList(parts), ", on ", bg);
    case 4:
      return Cat("on a ", bg, " background, ", JoinList(parts));
    default:
      return Cat(JoinList(parts), " on a ", bg, " background");
  }
}

// Subject is objects[0], object objects[1].
std::string RelationText(const Scene64& scene, Relation relation, int template_index) {
  const std::string_view bg = kBackgroundColors[scene.background].name;
  const std::string s = Noun(scene.objects[0]), o = Noun(scene.objects[1]);
  const std::string_view phrase = kRelationPhrases[static_cast<int>(relation)];
  switch (template_index) {
    case 1:
      return Cat(bg, " background, a ", s, " ", phrase, " a ", o);
    case 2: {  // the short forms "left of", "right of"
      const std::string_view short_phrase =
          phrase.substr(phrase.starts_with("to the ") ? std::string_view("to the ").size() : 0);
      return Cat(s, " ", short_phrase, " ", o, ", ", bg, " background");
    }
    case 3:
      return Cat("on a ", bg, " background, a ", s, " is ", phrase, " a ", o);
    default:
      return Cat("a ", s, " ", phrase, " a ", o, " on a ", bg, " background");
  }
}

// Objects grouped by (colour, shape) in order of first mention: "two red circles", "a blue
// square". `scene` is already ordered so that each group is contiguous.
std::string CountText(const Scene64& scene, int template_index) {
  const std::string_view bg = kBackgroundColors[scene.background].name;
  std::vector<std::string> groups;
  const std::vector<Object64>& objects = scene.objects;
  for (size_t i = 0; i < objects.size();) {
    size_t j = i + 1;
    while (j < objects.size() && objects[j].shape == objects[i].shape &&
           objects[j].color == objects[i].color) {
      ++j;
    }
    const size_t n = j - i;
    groups.push_back(
        n == 1 ? Cat("a ", ColorName(objects[i]), " ", ShapeName(objects[i]))
               : Cat(kNumberWords[n], " ", ColorName(objects[i]), " ", Plural(objects[i].shape)));
    i = j;
  }
  const std::string_view total = kNumberWords[objects.size()];
  switch (template_index) {
    case 1:
      return Cat("a ", bg, " background with ", total, " shapes: ", JoinList(groups));
    case 2:
      return Cat(JoinList(groups), " on a ", bg, " background, ", total, " shapes in all");
    default:
      return Cat(total, " shapes on a ", bg, " background: ", JoinList(groups));
  }
}

// Stable reorder that makes objects of one (colour, shape) contiguous, in order of first
// appearance.
std::vector<Object64> Grouped(const std::vector<Object64>& objects) {
  std::vector<Object64> out;
  std::vector<bool> taken(objects.size(), false);
  for (size_t i = 0; i < objects.size(); ++i) {
    if (taken[i]) continue;
    for (size_t j = i; j < objects.size(); ++j) {
      if (!taken[j] && objects[j].shape == objects[i].shape &&
          objects[j].color == objects[i].color) {
        taken[j] = true;
        out.push_back(objects[j]);
      }
    }
  }
  return out;
}

CaptionSpec SpecOf(const Scene64& scene, CaptionKind kind, std::optional<Relation> relation) {
  CaptionSpec spec{.kind = kind,
                   .background = scene.background,
                   .count = static_cast<int>(scene.objects.size())};
  for (const Object64& o : scene.objects) {
    ObjectClaim claim{.shape = o.shape, .color = o.color};
    if (kind != CaptionKind::kCount) claim.size = o.size;
    if (kind == CaptionKind::kAttributes) claim.position = o.position;
    spec.objects.push_back(claim);
  }
  if (relation.has_value()) spec.relation = StatedRelation{0, *relation, 1};
  return spec;
}

bool Matches(const ObjectClaim& claim, const Object64& o) {
  return claim.shape == o.shape && claim.color == o.color &&
         (!claim.size.has_value() || *claim.size == o.size) &&
         (!claim.position.has_value() || *claim.position == o.position);
}

// Parsing.

template <typename T, size_t N, typename Name>
std::optional<int> Find(const std::array<T, N>& table, std::string_view word, Name name) {
  for (size_t i = 0; i < N; ++i) {
    if (name(table[i]) == word) return static_cast<int>(i);
  }
  return std::nullopt;
}
std::optional<int> FindName(const auto& table, std::string_view word) {
  return Find(table, word, [](std::string_view s) { return s; });
}
std::optional<int> FindColor(const auto& table, std::string_view word) {
  return Find(table, word, [](const NamedColor& c) { return c.name; });
}
std::optional<int> FindPlural(std::string_view word) {
  for (int i = 0; i < kNumShapes; ++i) {
    if (Plural(static_cast<Shape>(i)) == word) return i;
  }
  return std::nullopt;
}

// One object mention as it is read; `number` is set by "one", "two" or "three" before it.
struct Mention {
  std::optional<int> shape, color, size, position, number;
  bool plural = false;
  bool empty() const { return !shape && !color && !size && !position && !number; }
  int multiplicity() const { return number.value_or(1); }
};

// The words of a caption, read into mentions, a background, a relation and a stated total.
struct Reading {
  std::vector<Mention> mentions = std::vector<Mention>(1);
  std::optional<int> background, total;
  std::optional<Relation> relation;
  int relation_after = -1;  // non-empty mentions before the relation
  bool start_new = false;   // the next attribute starts a mention (after a relation)

  // The mention an attribute `field` goes to: a new one if it repeats an attribute.
  Mention& For(std::optional<int> Mention::*field) {
    Mention& m = mentions.back();
    if (((start_new || m.*field) && !m.empty())) mentions.emplace_back();
    start_new = false;
    return mentions.back();
  }
  int NonEmpty() const {
    return static_cast<int>(std::count_if(mentions.begin(), mentions.end(),
                                          [](const Mention& m) { return !m.empty(); }));
  }
};

absl::Status Invalid(std::string_view caption, std::string_view why) {
  return absl::InvalidArgumentError(Cat("\"", caption, "\": ", why));
}

absl::StatusOr<Reading> Read(std::string_view caption) {
  const std::vector<std::string> words = CaptionWords(caption);
  Reading r;
  for (size_t i = 0; i < words.size(); ++i) {
    const std::string& w = words[i];
    const std::string_view next = i + 1 < words.size() ? words[i + 1] : std::string_view();
    std::optional<int> v;
    if ((v = FindName(kShapeNames, w))) {
      r.For(&Mention::shape).shape = *v;
    } else if ((v = FindPlural(w))) {
      Mention& m = r.For(&Mention::shape);
      m.shape = *v;
      m.plural = true;
    } else if ((v = FindName(kSizeNames, w))) {
      r.For(&Mention::size).size = *v;
    } else if ((v = FindColor(kShapeColors, w))) {
      r.For(&Mention::color).color = *v;
    } else if ((v = FindColor(kBackgroundColors, w))) {
      if (r.background.has_value()) return Invalid(caption, "two backgrounds");
      r.background = *v;
    } else if ((v = FindName(kNumberWords, w)) && *v > 0) {
      if (next == "shapes") {
        if (r.total.has_value()) return Invalid(caption, "two totals");
        r.total = *v;
        ++i;
      } else {  // a number always begins its own mention: "a red circle and two blue squares"
        if (!r.mentions.back().empty()) r.mentions.emplace_back();
        r.start_new = false;
        r.mentions.back().number = *v;
      }
    } else if (w == "above" || w == "below" || ((w == "left" || w == "right") && next == "of")) {
      if (r.relation.has_value()) return Invalid(caption, "two relations");
      r.relation = w == "above"   ? Relation::kAbove
                   : w == "below" ? Relation::kBelow
                   : w == "left"  ? Relation::kLeftOf
                                  : Relation::kRightOf;
      r.relation_after = r.NonEmpty();
      r.start_new = true;
    } else if ((w == "top" || w == "bottom") && (next == "left" || next == "right")) {
      r.For(&Mention::position).position = *FindName(kPositionNames, Cat(w, " ", next));
      ++i;
    } else if ((v = FindName(kPositionNames, w))) {
      r.For(&Mention::position).position = *v;
    }
  }
  std::erase_if(r.mentions, [](const Mention& m) { return m.empty(); });
  return r;
}

// Checks a mention against its kind's requirements; k is its 0-based index.
absl::Status CheckMention(std::string_view caption, const Mention& m, int k, CaptionKind kind) {
  const bool need_size = kind != CaptionKind::kCount,
             need_position = kind == CaptionKind::kAttributes;
  if (!m.shape || !m.color || (need_size && !m.size) || (need_position && !m.position)) {
    return Invalid(caption,
                   Cat("shape ", std::to_string(k + 1), " lacks its", !m.shape ? " shape" : "",
                       !m.color ? " colour" : "", need_size && !m.size ? " size" : "",
                       need_position && !m.position ? " position" : ""));
  }
  if (kind == CaptionKind::kCount && (m.size || m.position)) {
    return Invalid(caption, "a count names only colours and shapes, no sizes or positions");
  }
  if (m.plural != (m.multiplicity() > 1)) {
    return Invalid(caption, "plural shapes need \"two\" or \"three\" and only those");
  }
  return absl::OkStatus();
}

}  // namespace

bool Object64::SameAttributes(const Object64& other) const {
  return shape == other.shape && color == other.color && size == other.size &&
         position == other.position;
}

PixelRect Footprint(const Object64& o) {
  // Box edges in lattice units are >= 0 for every valid object, so division floors.
  const int h = HalfSide(o), cx = CenterX(o), cy = CenterY(o);
  auto ceil_div = [](int a) { return (a + kUnitsPerPixel - 1) / kUnitsPerPixel; };
  return PixelRect{(cx - h) / kUnitsPerPixel, (cy - h) / kUnitsPerPixel, ceil_div(cx + h),
                   ceil_div(cy + h)};
}

bool Separated(const PixelRect& a, const PixelRect& b, int gap) {
  return a.x1 + gap <= b.x0 || b.x1 + gap <= a.x0 || a.y1 + gap <= b.y0 || b.y1 + gap <= a.y0;
}

bool RelationHolds(const PixelRect& subject, Relation relation, const PixelRect& object, int gap) {
  switch (relation) {
    case Relation::kLeftOf:
      return subject.x1 + gap <= object.x0;
    case Relation::kRightOf:
      return object.x1 + gap <= subject.x0;
    case Relation::kAbove:
      return subject.y1 + gap <= object.y0;
    case Relation::kBelow:
      return object.y1 + gap <= subject.y0;
  }
  return false;
}

int Coverage(const Object64& o, int x, int y) {
  const int h = HalfSide(o), cx = CenterX(o), cy = CenterY(o);
  int inside = 0;
  for (int j = 0; j < kSamplesPerAxis64; ++j) {
    const int q = y * kUnitsPerPixel + 2 * j + 1 - cy;
    for (int i = 0; i < kSamplesPerAxis64; ++i) {
      const int p = x * kUnitsPerPixel + 2 * i + 1 - cx;
      inside += Inside(o.shape, p, q, h) ? 1 : 0;
    }
  }
  return inside;
}

SceneImage64 RenderScene64(const Scene64& scene) {
  SceneImage64 image;
  const NamedColor& bg = kBackgroundColors[scene.background];
  std::memset(image.data(), bg.r, kPlane);
  std::memset(image.data() + kPlane, bg.g, kPlane);
  std::memset(image.data() + 2 * kPlane, bg.b, kPlane);
  for (const Object64& o : scene.objects) {
    const NamedColor& c = kShapeColors[o.color];
    const uint8_t color[3] = {c.r, c.g, c.b};
    const PixelRect r = Footprint(o);
    for (int y = std::max(r.y0, 0); y < std::min(r.y1, kSize); ++y) {
      for (int x = std::max(r.x0, 0); x < std::min(r.x1, kSize); ++x) {
        const int k = Coverage(o, x, y);
        if (k == 0) continue;
        for (int ch = 0; ch < kShapeChannels; ++ch) {
          uint8_t& v = image[ch * kPlane + y * kSize + x];
          v = static_cast<uint8_t>(
              (v * (kSamplesPerPixel64 - k) + color[ch] * k + kSamplesPerPixel64 / 2) /
              kSamplesPerPixel64);
        }
      }
    }
  }
  return image;
}

Scene64 SampleScene64(std::mt19937_64& rng, const Scene64Options& options) {
  Scene64 scene;
  scene.background = Uniform(rng, kNumBackgrounds);
  const double u = Uniform01(rng);
  const int count = u < options.three_object_probability                                    ? 3
                    : u < options.three_object_probability + options.two_object_probability ? 2
                                                                                            : 1;
  for (int k = 0; k < count; ++k) {
    ShapeCombo combo;
    if (k > 0 && Uniform01(rng) < options.repeat_probability) {
      const Object64& earlier = scene.objects[Uniform(rng, k)];
      combo = {earlier.shape, earlier.color};
    } else {
      combo = SampleCombo(rng, options.hold_out);
    }
    Object64 o{.shape = combo.shape, .color = combo.color};
    Place(rng, scene.objects, o);
    scene.objects.push_back(o);
  }
  return scene;
}

int NumTemplates(CaptionKind kind) {
  switch (kind) {
    case CaptionKind::kRelation:
      return kNumRelationTemplates;
    case CaptionKind::kCount:
      return kNumCountTemplates;
    case CaptionKind::kAttributes:
      break;
  }
  return kNumAttributeTemplates;
}

std::vector<StatedRelation> ClearRelations(const Scene64& scene) {
  std::vector<StatedRelation> out;
  if (scene.objects.size() != 2) return out;
  const Object64 &a = scene.objects[0], &b = scene.objects[1];
  // Two objects of one description could swap roles: which is the subject would be ambiguous.
  if (a.shape == b.shape && a.color == b.color && a.size == b.size) return out;
  const PixelRect rects[2] = {Footprint(a), Footprint(b)};
  for (int s = 0; s < 2; ++s) {
    for (int r = 0; r < kNumRelations; ++r) {
      if (RelationHolds(rects[s], static_cast<Relation>(r), rects[1 - s])) {
        out.push_back(StatedRelation{s, static_cast<Relation>(r), 1 - s});
      }
    }
  }
  return out;
}

CaptionChoice SampleCaptionChoice(const Scene64& scene, std::mt19937_64& rng,
                                  const Scene64Options& options) {
  CaptionChoice choice;
  if (scene.objects.size() == 2 && Uniform01(rng) < options.relation_caption_probability) {
    const std::vector<StatedRelation> relations = ClearRelations(scene);
    if (!relations.empty()) {
      choice.kind = CaptionKind::kRelation;
      choice.relation = relations[Uniform(rng, relations.size())];
    }
  } else if (scene.objects.size() == 3 && Uniform01(rng) < options.count_caption_probability) {
    choice.kind = CaptionKind::kCount;
  }
  choice.template_index = Uniform(rng, NumTemplates(choice.kind));
  return choice;
}

absl::StatusOr<CaptionedScene64> CaptionScene64(const Scene64& scene, const CaptionChoice& choice) {
  const int n = static_cast<int>(scene.objects.size());
  if (choice.template_index < 0 || choice.template_index >= NumTemplates(choice.kind)) {
    return absl::InvalidArgumentError(
        Cat("template_index: ", std::to_string(choice.template_index), " out of range"));
  }
  if (n < 1 || n > kMaxObjects64) {
    return absl::InvalidArgumentError(Cat("scene: ", std::to_string(n), " objects, not 1..3"));
  }
  CaptionedScene64 out{.scene = scene};
  switch (choice.kind) {
    case CaptionKind::kAttributes:
      out.text = AttributesText(out.scene, choice.template_index);
      out.spec = SpecOf(out.scene, choice.kind, std::nullopt);
      break;
    case CaptionKind::kRelation: {
      const std::vector<StatedRelation> clear = ClearRelations(scene);
      if (std::find(clear.begin(), clear.end(), choice.relation) == clear.end()) {
        return absl::InvalidArgumentError(
            "relation: not a clear relation between the two objects of this scene");
      }
      // The subject is mentioned first.
      if (choice.relation.subject == 1) std::swap(out.scene.objects[0], out.scene.objects[1]);
      out.text = RelationText(out.scene, choice.relation.relation, choice.template_index);
      out.spec = SpecOf(out.scene, choice.kind, choice.relation.relation);
      break;
    }
    case CaptionKind::kCount:
      if (n < 2) return absl::InvalidArgumentError("kind: a count caption needs >= 2 objects");
      out.scene.objects = Grouped(scene.objects);
      out.text = CountText(out.scene, choice.template_index);
      out.spec = SpecOf(out.scene, choice.kind, std::nullopt);
      break;
  }
  return out;
}

bool Satisfies(const Scene64& scene, const CaptionSpec& spec) {
  const size_t n = scene.objects.size();
  if (scene.background != spec.background || spec.objects.size() != n ||
      spec.count != static_cast<int>(n)) {
    return false;
  }
  // assignment[i]: the scene object that spec object i describes; at most 3! orders to try.
  std::vector<int> assignment(n);
  std::iota(assignment.begin(), assignment.end(), 0);
  do {
    bool ok = true;
    for (size_t i = 0; i < n && ok; ++i) {
      ok = Matches(spec.objects[i], scene.objects[assignment[i]]);
    }
    if (ok && spec.relation.has_value()) {
      const StatedRelation& r = *spec.relation;
      ok = r.subject >= 0 && r.object >= 0 && r.subject < static_cast<int>(n) &&
           r.object < static_cast<int>(n) &&
           RelationHolds(Footprint(scene.objects[assignment[r.subject]]), r.relation,
                         Footprint(scene.objects[assignment[r.object]]));
    }
    if (ok) return true;
  } while (std::next_permutation(assignment.begin(), assignment.end()));
  return false;
}

absl::StatusOr<CaptionSpec> ParseCaption64(std::string_view caption) {
  absl::StatusOr<Reading> read = Read(caption);
  if (!read.ok()) return read.status();
  const Reading& r = *read;
  if (!r.background.has_value()) return Invalid(caption, "no background colour");
  int count = 0;
  bool numbered = r.total.has_value();
  for (const Mention& m : r.mentions) {
    count += m.multiplicity();
    numbered = numbered || m.number.has_value();
  }
  if (count < 1 || count > kMaxObjects64) {
    return Invalid(caption, Cat(std::to_string(count), " objects, not 1..3"));
  }
  CaptionSpec spec{.kind = r.relation ? CaptionKind::kRelation
                           : numbered ? CaptionKind::kCount
                                      : CaptionKind::kAttributes,
                   .background = *r.background,
                   .count = count};
  if (spec.kind == CaptionKind::kRelation &&
      (r.mentions.size() != 2 || numbered || r.relation_after != 1)) {
    return Invalid(caption, "a relation stands between two single objects");
  }
  if (r.total.has_value() && *r.total != count) {
    return Invalid(caption, Cat("states ", std::to_string(*r.total), " shapes but names ",
                                std::to_string(count)));
  }
  for (size_t k = 0; k < r.mentions.size(); ++k) {
    const Mention& m = r.mentions[k];
    if (absl::Status s = CheckMention(caption, m, static_cast<int>(k), spec.kind); !s.ok()) {
      return s;
    }
    ObjectClaim claim{.shape = static_cast<Shape>(*m.shape), .color = *m.color};
    if (m.size) claim.size = static_cast<SizeClass>(*m.size);
    claim.position = m.position;
    spec.objects.insert(spec.objects.end(), m.multiplicity(), claim);
  }
  if (r.relation) spec.relation = StatedRelation{0, *r.relation, 1};
  return spec;
}

Scenes64Dataset MakeScenes64Dataset(int64_t n, uint64_t seed, const Scene64Options& options) {
  std::mt19937_64 rng(seed);
  Scenes64Dataset ds;
  ds.data.num_classes = kNumShapes;
  ds.data.images = torch::empty({n, kShapeChannels, kSize, kSize}, torch::kUInt8);
  ds.data.labels = torch::empty({n}, torch::kLong);
  uint8_t* images = ds.data.images.data_ptr<uint8_t>();
  int64_t* labels = ds.data.labels.data_ptr<int64_t>();
  ds.data.captions.reserve(n);
  ds.items.reserve(n);
  for (int64_t i = 0; i < n; ++i) {
    const Scene64 scene = SampleScene64(rng, options);
    const CaptionChoice choice = SampleCaptionChoice(scene, rng, options);
    // SampleCaptionChoice only makes valid choices for SampleScene64's scenes.
    CaptionedScene64 item = CaptionScene64(scene, choice).value();
    const SceneImage64 image = RenderScene64(item.scene);
    std::memcpy(images + i * image.size(), image.data(), image.size());
    labels[i] = static_cast<int64_t>(item.scene.objects[0].shape);
    ds.data.captions.push_back(item.text);
    ds.items.push_back(std::move(item));
  }
  return ds;
}

std::vector<CaptionedScene64> FixedPromptSet64(PromptSet64 set, int n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Scene64Options options{
      .two_object_probability = 0, .three_object_probability = 0, .repeat_probability = 0};
  CaptionKind kind = CaptionKind::kAttributes;
  switch (set) {
    case PromptSet64::kSeen:
      break;
    case PromptSet64::kHeldOut:
      options.hold_out = HoldOut::kOnly;
      break;
    case PromptSet64::kRelation:
      options.two_object_probability = 1;
      kind = CaptionKind::kRelation;
      break;
    case PromptSet64::kCount:
      options.three_object_probability = 1;
      options.repeat_probability = 0.5;
      kind = CaptionKind::kCount;
      break;
  }
  std::vector<CaptionedScene64> prompts;
  prompts.reserve(n);
  while (static_cast<int>(prompts.size()) < n) {
    const Scene64 scene = SampleScene64(rng, options);
    CaptionChoice choice{.kind = kind};
    if (kind == CaptionKind::kRelation) {
      const std::vector<StatedRelation> relations = ClearRelations(scene);
      if (relations.empty()) continue;  // two objects of one description: draw another scene
      choice.relation = relations[Uniform(rng, relations.size())];
    }
    prompts.push_back(CaptionScene64(scene, choice).value());
  }
  return prompts;
}

}  // namespace dartserve::data

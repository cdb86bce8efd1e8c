// The 64x64 procedural scene world for text-to-image models that work in an autoencoder's latent
// space: one to three anti-aliased coloured shapes on a plain background, captioned with
// attributes, spatial relations or counts, each caption kept with the structure it states so an
// evaluator can check an image against the prompt that asked for it. It reuses the vocabulary of
// the 32x32 world (data/shapes.h: shapes, colours, backgrounds, sizes, positions, held-out pairs)
// and leaves that world untouched.
//
// Determinism: as in data/shapes.h, the only randomness is std::mt19937_64 reduced with plain
// modulo, and rendering is integer arithmetic throughout (no floating point decides a pixel), so
// the same seed gives the same bytes on every platform and compiler. Every function is a pure
// function of its arguments (rng aside), so it is thread-safe on distinct rngs.
//
// Geometry (why these numbers): a shape fills a square box of side 10 (small), 15 (medium) or 20
// (large) pixels, centred on one cell of a 3x3 grid (cell centres 12, 32 and 52 px, 20 px apart)
// and jittered in quarter pixels by up to 4, 2 and 0 px: about the 32 world's 5/8/11 px and
// 2/1/0 px doubled, with the large side cut to the cell spacing so that three shapes and their
// gaps fit (two large shapes never sit in neighbouring cells).
// Every box keeps >= 2 px of background to the image edge and its centre stays inside its third
// of the image (what an analyser reads as the position). Quarter-pixel jitter puts edges between
// pixels, so squares are anti-aliased too, not only curves. Objects occupy distinct cells and
// their footprints (the pixels their boxes touch) are separated by >= kMinGapPixels64 columns or
// rows of pure background (the 32 world's 1 px, doubled), so every object is its own connected
// component; as a small unjittered shape fits in any free cell, placement by resampling ends.
//
// Rendering: each pixel takes 4x4 samples at 1/8, 3/8, 5/8, 7/8 of its side; coverage k of 16
// blends the shape colour over the background ((bg (16 - k) + colour k + 8) / 16). Sample
// positions and shape edges lie on different parities of a 1/8-pixel lattice, so no sample sits
// exactly on an edge and a centred shape is exactly symmetric. A pixel is pure background or pure
// colour unless an edge crosses it. Smooth edges, unlike the 32 world's hard ones, are what an
// autoencoder can reconstruct without tying shapes to the pixel grid.
//
// Captions (CaptionKind), in several templates each:
//   kAttributes: every object's size, colour, shape and position, and the background, for 1..3
//     objects: "a small red circle at the top left and a large blue square in the center on a
//     white background".
//   kRelation (two objects): sizes, colours, shapes and one relation, no absolute positions:
//     "a small red circle to the left of a large blue square on a white background". A relation
//     is stated only when it is clear: the subject's footprint lies wholly on that side of the
//     object's, with >= kMinGapPixels64 of background between (so the reverse is false and the
//     two cells are ordered the same way), and never between two objects of one description
//     (which one is the subject would be ambiguous). Two objects are always separated along some
//     axis, so every other two-object scene has a clear relation.
//   kCount (three objects): the total and groups by (colour, shape), no sizes or positions (as
//     GenEval's counting prompts; a size or place would not fit a group of two):
//     "three shapes on a white background: two red circles and a blue square". Scenes repeat an
//     earlier object's colour and shape with `repeat_probability`, so groups of two and three
//     occur and number words carry information.
// CaptionedScene64 keeps each caption's scene with its objects in the order the caption mentions
// them, and the CaptionSpec the caption states; ParseCaption64(text) gives that spec back.
//
// Held-out combinations: kHeldOut from data/shapes.h. Data made with HoldOut::kExclude never
// contains them, in any object slot; of the fixed prompt sets only PromptSet64::kHeldOut asks for
// them (every object of it is a held-out pair), so compositional generalisation is measured apart.
#ifndef DARTSERVE_DATA_SCENES64_H_
#define DARTSERVE_DATA_SCENES64_H_

#include <array>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "data/dataset.h"
#include "data/shapes.h"

namespace dartserve::data {

inline constexpr int kScene64Size = 64;
// One image: RGB planes in CHW order, uint8, like one row of InMemoryDataset::images.
using SceneImage64 = std::array<uint8_t, kShapeChannels * kScene64Size * kScene64Size>;

inline constexpr int kMaxObjects64 = 3;
inline constexpr std::array<int, 3> kCellCenters64 = {12, 32, 52};         // px, per column and row
inline constexpr std::array<int, kNumSizes> kSizePixels64 = {10, 15, 20};  // side of the box
inline constexpr std::array<int, kNumSizes> kMaxJitterQuarters64 = {16, 8, 0};  // 4, 2, 0 px
inline constexpr int kMinGapPixels64 = 2;  // background between objects, and for relations
inline constexpr int kSamplesPerAxis64 = 4;
inline constexpr int kSamplesPerPixel64 = kSamplesPerAxis64 * kSamplesPerAxis64;

struct Object64 {
  Shape shape = Shape::kCircle;
  int color = 0;  // index into kShapeColors
  SizeClass size = SizeClass::kMedium;
  int position = 4;  // index into kPositionNames (row * 3 + col)
  // Offset of the box centre from its cell centre, in quarter pixels; not part of any caption.
  // |dx|, |dy| <= kMaxJitterQuarters64[size].
  int dx = 0, dy = 0;

  bool SameAttributes(const Object64& other) const;  // jitter ignored
};

struct Scene64 {
  int background = 0;             // index into kBackgroundColors
  std::vector<Object64> objects;  // 1..kMaxObjects64
};

// Pixels [x0, x1) x [y0, y1).
struct PixelRect {
  int x0 = 0, y0 = 0, x1 = 0, y1 = 0;
};
// The pixels an object's box touches: every pixel the object colours is inside.
PixelRect Footprint(const Object64& object);
// At least `gap` whole columns or rows lie between the two rectangles.
bool Separated(const PixelRect& a, const PixelRect& b, int gap = kMinGapPixels64);

// How many of a pixel's kSamplesPerPixel64 samples lie inside the object (0 outside its box).
int Coverage(const Object64& object, int x, int y);

// Background, then each object blended over it by coverage. Deterministic; objects of a valid
// scene (as SampleScene64 makes) never share a pixel.
SceneImage64 RenderScene64(const Scene64& scene);

enum class Relation { kLeftOf, kRightOf, kAbove, kBelow };
inline constexpr int kNumRelations = 4;
inline constexpr std::array<std::string_view, kNumRelations> kRelationPhrases = {
    "to the left of", "to the right of", "above", "below"};
// The relation holds clearly: `subject` lies wholly on that side of `object` with >= `gap`
// background columns (left/right) or rows (above/below) between them. Takes rectangles so an
// evaluator can apply it to detected objects' bounding boxes as well.
bool RelationHolds(const PixelRect& subject, Relation relation, const PixelRect& object,
                   int gap = kMinGapPixels64);

struct Scene64Options {
  double two_object_probability = 0.35;
  double three_object_probability = 0.3;
  // Each object after the first repeats the colour and shape of a uniformly chosen earlier one
  // with this probability (size and place are drawn anew).
  double repeat_probability = 0.3;
  HoldOut hold_out = HoldOut::kExclude;
  // Chance of a kRelation caption for a two-object scene and of a kCount caption for a
  // three-object one; every other caption is kAttributes.
  double relation_caption_probability = 0.5;
  double count_caption_probability = 0.5;
};

// A random scene: uniform background, shape and colour (subject to hold_out), size, cell and
// jitter; placements are resampled until the object's cell is free and its footprint is
// Separated from every earlier one.
Scene64 SampleScene64(std::mt19937_64& rng, const Scene64Options& options = {});

enum class CaptionKind { kAttributes, kRelation, kCount };
inline constexpr int kNumAttributeTemplates = 5;
inline constexpr int kNumRelationTemplates = 4;
inline constexpr int kNumCountTemplates = 3;
int NumTemplates(CaptionKind kind);

// What a caption states about one object; size and position are absent where the caption kind
// does not state them (relation captions: no position; count captions: neither).
struct ObjectClaim {
  Shape shape = Shape::kCircle;
  int color = 0;
  std::optional<SizeClass> size;
  std::optional<int> position;

  bool operator==(const ObjectClaim&) const = default;
};

// A relation between two of a caption's objects, by index in order of mention.
struct StatedRelation {
  int subject = 0;
  Relation relation = Relation::kLeftOf;
  int object = 1;

  bool operator==(const StatedRelation&) const = default;
};

// Everything a caption states, what an evaluator checks an image against.
struct CaptionSpec {
  CaptionKind kind = CaptionKind::kAttributes;
  int background = 0;
  std::vector<ObjectClaim> objects;        // in order of mention; a group "two red circles" is two
  std::optional<StatedRelation> relation;  // kRelation only: always {0, relation, 1}
  int count = 0;                           // objects asked for, == objects.size()

  bool operator==(const CaptionSpec&) const = default;
};

// True when the scene shows what the spec states: the same background and number of objects, an
// assignment of spec objects to scene objects that agrees on every stated attribute, and, under
// it, the stated relation holds (RelationHolds on the footprints).
bool Satisfies(const Scene64& scene, const CaptionSpec& spec);

// How to caption a scene. relation: kRelation only, subject and object index the input scene.
struct CaptionChoice {
  CaptionKind kind = CaptionKind::kAttributes;
  int template_index = 0;
  StatedRelation relation;
};

struct CaptionedScene64 {
  Scene64 scene;  // objects in the order the caption mentions them
  std::string text;
  CaptionSpec spec;  // what text states; ParseCaption64(text) == spec
};

// Every relation that may be stated of a two-object scene (RelationHolds, descriptions differ),
// by index into scene.objects; empty for other scenes.
std::vector<StatedRelation> ClearRelations(const Scene64& scene);

// A caption kind, template and (for kRelation) relation, drawn with `options`' probabilities.
// Falls back to kAttributes when a two-object scene has no clear relation.
CaptionChoice SampleCaptionChoice(const Scene64& scene, std::mt19937_64& rng,
                                  const Scene64Options& options = {});

// Writes the caption. Examples (template 0 of each kind):
//   "a small red circle at the top left and a large blue square in the center on a white
//    background"
//   "a small red circle to the left of a large blue square on a white background"
//   "three shapes on a white background: two red circles and a blue square"
// INVALID_ARGUMENT for a template out of range, a scene of no or too many objects, kRelation on
// a scene that is not two objects or with a relation outside ClearRelations, kCount on fewer
// than two objects.
absl::StatusOr<CaptionedScene64> CaptionScene64(const Scene64& scene, const CaptionChoice& choice);

// Reads what a caption in this world's wording asks for. Words are those of data/shapes.h plus
// relations ("to the left of" or "left of", "to the right of" or "right of", "above", "below"),
// number words ("two", "three") with plural shapes, and totals ("three shapes"). A repeated
// attribute, a relation or a number word starts the next object. The kind is kRelation when a
// relation is named, else kCount when a number or total is, else kAttributes. INVALID_ARGUMENT
// unless: a background is named once; 1..3 objects, each with colour and shape; kAttributes:
// each with size and position; kRelation: two single objects with sizes, the relation between
// them (positions, if named, are kept); kCount: no sizes or positions, plurals only after "two"
// or "three", a stated total equal to the objects listed.
absl::StatusOr<CaptionSpec> ParseCaption64(std::string_view caption);

struct Scenes64Dataset {
  // images [N, 3, 64, 64] uint8 (InMemoryDataset::Batch gives floats in [-1, 1]); labels [N] =
  // the first object's Shape; num_classes = kNumShapes; captions [N].
  InMemoryDataset data;
  std::vector<CaptionedScene64> items;  // [N]: items[i].text == data.captions[i]
};

// n scenes from SampleScene64(rng(seed), options), each captioned by SampleCaptionChoice from the
// same rng and rendered.
Scenes64Dataset MakeScenes64Dataset(int64_t n, uint64_t seed, const Scene64Options& options = {});

enum class PromptSet64 {
  kSeen,      // one object, kAttributes, no held-out pair
  kHeldOut,   // one object, kAttributes, a held-out pair
  kRelation,  // two objects, kRelation, no held-out pair
  kCount,     // three objects, kCount (repeats at probability 0.5), no held-out pair
};
// A fixed evaluation prompt set: n prompts in template 0 of their kind, the same for the same
// arguments. RenderScene64(prompt.scene) is the prompt's reference image. The default sets are
// FixedPromptSet64(set, 100, 1234).
std::vector<CaptionedScene64> FixedPromptSet64(PromptSet64 set, int n, uint64_t seed);

}  // namespace dartserve::data

#endif  // DARTSERVE_DATA_SCENES64_H_

// Prompt adherence for the 64x64 scene world (data/scenes64.h): an image is analysed
// (AnalyzeImage, eval/shape_analysis.h, with the geometric shape classifier) and checked against
// the CaptionSpec its prompt states, the image-side twin of data::Satisfies.
//
// CheckScene64: the background; the count (exactly spec.count objects detected); and an
// assignment of the spec's objects to distinct detected objects that agrees on every stated
// attribute (colour and shape always; size and position where the caption states them) and
// under which the stated relation holds: data::RelationHolds on the detected objects' bounding
// boxes. A detected box lies inside the footprint of the object it shows (anti-aliased edges
// below half coverage are trimmed), so a relation that holds between footprints, as every stated
// one does, holds between the boxes of a faithful image too. Of all assignments the one right on
// the most items is reported, so each item says whether the image gets that part right when the
// rest is read as kindly as possible. `all` is everything at once under one assignment, the
// background included (the caption states it, and data::Satisfies counts it). Items a caption
// does not state (sizes and positions of count prompts, positions of relation prompts, a
// relation outside relation prompts) are absent, not counted as right.
//
// Everything here is plain C++ over bytes and thread-compatible; no torch (tensors are converted
// with SceneImages64FromTensor in eval/prompt_eval.h).
#ifndef DARTSERVE_EVAL_SCENE64_EVAL_H_
#define DARTSERVE_EVAL_SCENE64_EVAL_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/scenes64.h"
#include "eval/shape_analysis.h"

namespace dartserve::eval {

struct Scene64Check {
  bool background = false;
  bool count = false;  // exactly spec.count objects detected
  bool color = false, shape = false;
  std::optional<bool> size;      // absent when the caption states no size
  std::optional<bool> position;  // absent when it states no position
  std::optional<bool> relation;  // absent when it states no relation
  bool all = false;
};

// The check described in the file comment. At most the kMaxCandidates64 largest detected
// objects are tried in assignments (a garbled image may show dozens of specks).
inline constexpr int kMaxCandidates64 = 12;
Scene64Check CheckScene64(const Analysis& analysis, const data::CaptionSpec& spec);

// An object's bounding box as data's rectangle (x1, y1 exclusive), for RelationHolds.
data::PixelRect BoundingRect(const DetectedObject& object);

// Whether two analyses read the same scene: the same background colour and number of objects,
// and the same colour, shape, size and position per object once both are put in one order (by
// position, then the other attributes; areas ignored). Objects are listed largest first, and
// two objects of one size class swap places with a pixel of area, so the order is made
// canonical before comparing. What "the evaluator reads the same attributes" means for a
// reconstruction and its original.
bool SameReading(const Analysis& a, const Analysis& b);

// Running totals of Scene64Checks. `asked` counts the checks that state an item (every check for
// background, count, colour, shape and all); `correct` those that got it right.
struct Scene64Tally {
  struct Item {
    int correct = 0, asked = 0;
    double rate() const { return asked == 0 ? 0.0 : static_cast<double>(correct) / asked; }
  };
  int n = 0;
  Item background, count, color, shape, size, position, relation, all;
  void Add(const Scene64Check& check);
};

struct Scene64Result {
  std::string prompt;
  Scene64Check check;
  int background_color = 0;         // kBackgroundColors index
  std::vector<SeenObject> objects;  // largest first
};

struct Scene64Report {
  Scene64Tally tally;
  std::vector<Scene64Result> results;  // one per image, in input order
};

// Scores images[i] against prompts[i].spec. INVALID_ARGUMENT when the lists differ in length.
absl::StatusOr<Scene64Report> EvaluateScenes64(
    const std::vector<data::CaptionedScene64>& prompts,
    const std::vector<data::SceneImage64>& images,
    const PlanarShapeClassifier& classifier = GeometricShape);

// JSON text: {"n", "correct", "asked", "accuracy" (each {item: number}), "results": [{"prompt",
// "check": {item: bool}, "background": name, "objects": [{"shape", "color", "size", "position",
// "area"}]}]}, items in the order background, count, color, shape, size, position, relation,
// all. An item no prompt states is left out of the totals, and one a prompt does not state out
// of its "check".
std::string ReportToJson(const Scene64Report& report, int indent = 2);

// One line of the items some prompt states: "n=100 background 1.000 count 1.000 colour 1.000
// shape 0.990 size 1.000 relation 0.950 all 0.940".
std::string SummaryLine(const Scene64Report& report);

}  // namespace dartserve::eval

#endif  // DARTSERVE_EVAL_SCENE64_EVAL_H_

#include "eval/scene64_eval.h"

#include <algorithm>
#include <array>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "eval/report_json.h"
#include "nlohmann/json.hpp"

namespace dartserve::eval {

using ::dartserve::data::CaptionedScene64;
using ::dartserve::data::CaptionSpec;
using ::dartserve::data::kBackgroundColors;
using ::dartserve::data::ObjectClaim;
using ::dartserve::data::PixelRect;
using ::dartserve::data::RelationHolds;
using ::dartserve::data::SceneImage64;

namespace {

using Json = nlohmann::json;

// The items of a check and a tally, in report order, so the JSON writer, the summary and the
// tally share one list. Optional items are the ones a caption may leave unstated.
struct ReportItem {
  const char* name;   // JSON key
  const char* label;  // summary line
  bool Scene64Check::*required;
  std::optional<bool> Scene64Check::*optional;
  Scene64Tally::Item Scene64Tally::*tally;

  std::optional<bool> Of(const Scene64Check& c) const {
    return required != nullptr ? std::optional<bool>(c.*required) : c.*optional;
  }
};
constexpr std::array<ReportItem, 8> kItems = {{
    {"background", "background", &Scene64Check::background, nullptr, &Scene64Tally::background},
    {"count", "count", &Scene64Check::count, nullptr, &Scene64Tally::count},
    {"color", "colour", &Scene64Check::color, nullptr, &Scene64Tally::color},
    {"shape", "shape", &Scene64Check::shape, nullptr, &Scene64Tally::shape},
    {"size", "size", nullptr, &Scene64Check::size, &Scene64Tally::size},
    {"position", "position", nullptr, &Scene64Check::position, &Scene64Tally::position},
    {"relation", "relation", nullptr, &Scene64Check::relation, &Scene64Tally::relation},
    {"all", "all", &Scene64Check::all, nullptr, &Scene64Tally::all},
}};

// How one assignment of spec objects to detected objects fares, item by item.
struct Match {
  bool color = true, shape = true, size = true, position = true, relation = true;
  int score() const { return color + shape + size + position + relation; }
  bool all() const { return score() == 5; }
};

Match Evaluate(const Analysis& analysis, const CaptionSpec& spec, const std::vector<int>& pick) {
  Match m;
  for (size_t k = 0; k < spec.objects.size(); ++k) {
    const ObjectClaim& claim = spec.objects[k];
    const DetectedObject& obj = analysis.objects[pick[k]];
    m.color &= obj.color == claim.color;
    m.shape &= obj.shape == claim.shape;
    m.size &= !claim.size.has_value() || obj.size == *claim.size;
    m.position &= !claim.position.has_value() || obj.position == *claim.position;
  }
  if (spec.relation.has_value()) {
    const data::StatedRelation& r = *spec.relation;
    const int n = static_cast<int>(spec.objects.size());
    m.relation = r.subject >= 0 && r.object >= 0 && r.subject < n && r.object < n &&
                 RelationHolds(BoundingRect(analysis.objects[pick[r.subject]]), r.relation,
                               BoundingRect(analysis.objects[pick[r.object]]));
  }
  return m;
}

// Tries every injective assignment of the spec's objects into the first `m` detected objects
// (pick[k]: the detected object for spec object k) and keeps the best one in `best`.
void Search(const Analysis& analysis, const CaptionSpec& spec, int m, std::vector<int>& pick,
            std::vector<bool>& used, std::optional<Match>& best) {
  if (pick.size() == spec.objects.size()) {
    const Match match = Evaluate(analysis, spec, pick);
    if (!best.has_value() || match.score() > best->score()) best = match;
    return;
  }
  for (int j = 0; j < m && !(best.has_value() && best->all()); ++j) {
    if (used[j]) continue;
    used[j] = true;
    pick.push_back(j);
    Search(analysis, spec, m, pick, used, best);
    pick.pop_back();
    used[j] = false;
  }
}

// An object's attributes in the canonical order SameReading compares in.
std::tuple<int, int, int, int> Key(const DetectedObject& o) {
  return {o.position, static_cast<int>(o.size), o.color, static_cast<int>(o.shape)};
}

}  // namespace

PixelRect BoundingRect(const DetectedObject& object) {
  const ShapeFeatures& f = object.features;
  return PixelRect{.x0 = f.x0, .y0 = f.y0, .x1 = f.x1 + 1, .y1 = f.y1 + 1};
}

Scene64Check CheckScene64(const Analysis& analysis, const CaptionSpec& spec) {
  Scene64Check check;
  check.background = analysis.background_color == spec.background;
  check.count = static_cast<int>(analysis.objects.size()) == spec.count;
  const bool states_size = std::any_of(spec.objects.begin(), spec.objects.end(),
                                       [](const ObjectClaim& c) { return c.size.has_value(); });
  const bool states_position =
      std::any_of(spec.objects.begin(), spec.objects.end(),
                  [](const ObjectClaim& c) { return c.position.has_value(); });
  const int m = std::min<int>(static_cast<int>(analysis.objects.size()), kMaxCandidates64);
  std::optional<Match> best;
  if (!spec.objects.empty() && static_cast<int>(spec.objects.size()) <= m) {
    std::vector<int> pick;
    std::vector<bool> used(m, false);
    Search(analysis, spec, m, pick, used, best);
  }
  // Too few objects: nothing about the objects is right.
  const Match match = best.value_or(Match{false, false, false, false, false});
  check.color = match.color;
  check.shape = match.shape;
  if (states_size) check.size = match.size;
  if (states_position) check.position = match.position;
  if (spec.relation.has_value()) check.relation = match.relation;
  check.all = check.background && check.count && best.has_value() && match.all();
  return check;
}

bool SameReading(const Analysis& a, const Analysis& b) {
  if (a.background_color != b.background_color || a.objects.size() != b.objects.size()) {
    return false;
  }
  auto keys = [](const Analysis& analysis) {
    std::vector<std::tuple<int, int, int, int>> out;
    for (const DetectedObject& o : analysis.objects) out.push_back(Key(o));
    std::sort(out.begin(), out.end());
    return out;
  };
  return keys(a) == keys(b);
}

void Scene64Tally::Add(const Scene64Check& check) {
  ++n;
  for (const ReportItem& item : kItems) {
    const std::optional<bool> v = item.Of(check);
    if (!v.has_value()) continue;
    ++(this->*item.tally).asked;
    (this->*item.tally).correct += *v;
  }
}

absl::StatusOr<Scene64Report> EvaluateScenes64(const std::vector<CaptionedScene64>& prompts,
                                               const std::vector<SceneImage64>& images,
                                               const PlanarShapeClassifier& classifier) {
  if (prompts.size() != images.size()) {
    return absl::InvalidArgumentError(absl::StrCat("EvaluateScenes64: ", prompts.size(),
                                                   " prompts but ", images.size(), " images"));
  }
  Scene64Report report;
  report.results.reserve(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    const Analysis analysis = AnalyzeImage(images[i], classifier);
    Scene64Result result{.prompt = prompts[i].text,
                         .check = CheckScene64(analysis, prompts[i].spec),
                         .background_color = analysis.background_color,
                         .objects = SeenObjects(analysis)};
    report.tally.Add(result.check);
    report.results.push_back(std::move(result));
  }
  return report;
}

std::string ReportToJson(const Scene64Report& report, int indent) {
  const Scene64Tally& t = report.tally;
  Json correct = Json::object(), asked = Json::object(), accuracy = Json::object();
  for (const ReportItem& item : kItems) {
    const Scene64Tally::Item& counts = t.*item.tally;
    if (counts.asked == 0) continue;
    correct[item.name] = counts.correct;
    asked[item.name] = counts.asked;
    accuracy[item.name] = counts.rate();
  }
  Json results = Json::array();
  for (const Scene64Result& r : report.results) {
    Json check = Json::object();
    for (const ReportItem& item : kItems) {
      if (const std::optional<bool> v = item.Of(r.check); v.has_value()) check[item.name] = *v;
    }
    Json objects = Json::array();
    for (const SeenObject& o : r.objects) objects.push_back(internal::SeenObjectToJson(o));
    results.push_back(Json{{"prompt", r.prompt},
                           {"check", std::move(check)},
                           {"background", kBackgroundColors[r.background_color].name},
                           {"objects", std::move(objects)}});
  }
  const Json j = {{"n", t.n},
                  {"correct", std::move(correct)},
                  {"asked", std::move(asked)},
                  {"accuracy", std::move(accuracy)},
                  {"results", std::move(results)}};
  return j.dump(indent);
}

std::string SummaryLine(const Scene64Report& report) {
  const Scene64Tally& t = report.tally;
  std::string line = absl::StrCat("n=", t.n);
  for (const ReportItem& item : kItems) {
    const Scene64Tally::Item& counts = t.*item.tally;
    if (counts.asked > 0) absl::StrAppendFormat(&line, " %s %.3f", item.label, counts.rate());
  }
  return line;
}

}  // namespace dartserve::eval

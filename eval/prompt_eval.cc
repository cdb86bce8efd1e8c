#include "eval/prompt_eval.h"

#include <array>
#include <cstring>
#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "eval/report_json.h"
#include "model/image.h"
#include "nlohmann/json.hpp"

namespace dartserve::eval {

using ::dartserve::data::kBackgroundColors;
using ::dartserve::data::kPositionNames;
using ::dartserve::data::kScene64Size;
using ::dartserve::data::kShapeChannels;
using ::dartserve::data::kShapeColors;
using ::dartserve::data::kShapeImageSize;
using ::dartserve::data::kShapeNames;
using ::dartserve::data::kSizeNames;
using ::dartserve::data::NamedColor;
using ::dartserve::data::Prompt;
using ::dartserve::data::RenderScene;
using ::dartserve::data::SceneImage64;
using ::dartserve::data::ShapeImage;

namespace {

using Json = nlohmann::json;

// The SceneCheck fields and CheckTally counters, in report order, so the JSON writer and reader
// share one list.
struct Field {
  const char* name;
  bool SceneCheck::*check;
  int CheckTally::*count;
};
constexpr std::array<Field, 7> kFields = {{
    {"color", &SceneCheck::color, &CheckTally::color},
    {"shape", &SceneCheck::shape, &CheckTally::shape},
    {"position", &SceneCheck::position, &CheckTally::position},
    {"size", &SceneCheck::size, &CheckTally::size},
    {"count", &SceneCheck::count, &CheckTally::count},
    {"background", &SceneCheck::background, &CheckTally::background},
    {"all", &SceneCheck::all, &CheckTally::all},
}};

// Index of `name` in a table of names, or INVALID_ARGUMENT.
template <typename Names>
absl::Status Lookup(const Names& names, std::string_view name, const char* what, int* out) {
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] == name) {
      *out = static_cast<int>(i);
      return absl::OkStatus();
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("report JSON: unknown ", what, " \"", std::string(name), "\""));
}
template <size_t N>
absl::Status LookupColor(const std::array<NamedColor, N>& colors, std::string_view name,
                         const char* what, int* out) {
  std::array<std::string_view, N> names;
  for (size_t i = 0; i < N; ++i) names[i] = colors[i].name;
  return Lookup(names, name, what, out);
}
template <typename Enum, typename Names>
absl::Status LookupEnum(const Names& names, std::string_view name, const char* what, Enum* out) {
  int index = 0;
  if (absl::Status s = Lookup(names, name, what, &index); !s.ok()) return s;
  *out = static_cast<Enum>(index);
  return absl::OkStatus();
}

// Typed member access without exceptions: `obj[key]` of the wanted type into `out`.
absl::Status Missing(const char* key, const char* type) {
  return absl::InvalidArgumentError(
      absl::StrCat("report JSON: \"", key, "\" missing or not ", type));
}
const Json* Member(const Json& obj, const char* key, Json::value_t type) {
  if (!obj.is_object() || !obj.contains(key)) return nullptr;
  const Json& v = obj[key];
  // Non-negative integers parse as unsigned; either integer kind is an integer.
  const bool ok = v.type() == type || (type == Json::value_t::number_integer &&
                                       v.type() == Json::value_t::number_unsigned);
  return ok ? &v : nullptr;
}
absl::Status Read(const Json& obj, const char* key, int* out) {
  const Json* v = Member(obj, key, Json::value_t::number_integer);
  if (v == nullptr) return Missing(key, "an integer");
  *out = v->get<int>();
  return absl::OkStatus();
}
absl::Status Read(const Json& obj, const char* key, bool* out) {
  const Json* v = Member(obj, key, Json::value_t::boolean);
  if (v == nullptr) return Missing(key, "a boolean");
  *out = v->get<bool>();
  return absl::OkStatus();
}
absl::Status Read(const Json& obj, const char* key, std::string* out) {
  const Json* v = Member(obj, key, Json::value_t::string);
  if (v == nullptr) return Missing(key, "a string");
  *out = v->get<std::string>();
  return absl::OkStatus();
}

absl::Status ObjectFromJson(const Json& j, SeenObject* o) {
  std::string shape, color, size, position;
  for (const auto& [key, out] : {std::pair{"shape", &shape}, std::pair{"color", &color},
                                 std::pair{"size", &size}, std::pair{"position", &position}}) {
    if (absl::Status s = Read(j, key, out); !s.ok()) return s;
  }
  if (absl::Status s = LookupEnum(kShapeNames, shape, "shape", &o->shape); !s.ok()) return s;
  if (absl::Status s = LookupColor(kShapeColors, color, "colour", &o->color); !s.ok()) return s;
  if (absl::Status s = LookupEnum(kSizeNames, size, "size", &o->size); !s.ok()) return s;
  if (absl::Status s = Lookup(kPositionNames, position, "position", &o->position); !s.ok()) {
    return s;
  }
  return Read(j, "area", &o->area);
}

// [N, 3, side, side] float ([-1, 1]) or uint8 images -> planar byte images of that side.
template <typename Image>
absl::StatusOr<std::vector<Image>> PlanarImagesFromTensor(const torch::Tensor& images, int side,
                                                          const char* caller) {
  if (!images.defined() || images.dim() != 4 || images.size(1) != kShapeChannels ||
      images.size(2) != side || images.size(3) != side) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: want [N, 3, %d, %d] images", caller, side, side));
  }
  if (images.scalar_type() != torch::kUInt8 && !images.is_floating_point()) {
    return absl::InvalidArgumentError(absl::StrCat(caller, ": want float or uint8 images"));
  }
  const int plane = side * side;
  std::vector<Image> out(images.size(0));
  for (int64_t i = 0; i < images.size(0); ++i) {
    if (images.scalar_type() == torch::kUInt8) {
      const torch::Tensor row = images[i].to(torch::kCPU).contiguous();
      std::memcpy(out[i].data(), row.data_ptr<uint8_t>(), out[i].size());
      continue;
    }
    // TensorToPixels is the one place the project turns [-1, 1] into bytes; it interleaves
    // (HWC), the analysis wants planes (CHW).
    const Pixels pixels = model::TensorToPixels(images[i]);
    for (int p = 0; p < plane; ++p) {
      for (int c = 0; c < kShapeChannels; ++c) {
        out[i][c * plane + p] = pixels.data[p * kShapeChannels + c];
      }
    }
  }
  return out;
}

}  // namespace

namespace internal {

nlohmann::json SeenObjectToJson(const SeenObject& o) {
  return Json{{"shape", kShapeNames[static_cast<int>(o.shape)]},
              {"color", kShapeColors[o.color].name},
              {"size", kSizeNames[static_cast<int>(o.size)]},
              {"position", kPositionNames[o.position]},
              {"area", o.area}};
}

}  // namespace internal

absl::StatusOr<PromptEvalReport> EvaluatePrompts(const std::vector<Prompt>& prompts,
                                                 const std::vector<ShapeImage>& images,
                                                 const ShapeClassifier& classifier) {
  if (prompts.size() != images.size()) {
    return absl::InvalidArgumentError(absl::StrCat("EvaluatePrompts: ", prompts.size(),
                                                   " prompts but ", images.size(), " images"));
  }
  PromptEvalReport report;
  report.results.reserve(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    const Analysis analysis = AnalyzeImage(images[i], classifier);
    PromptResult result;
    result.prompt = prompts[i].text;
    result.check = CheckScene(analysis, prompts[i].scene);
    result.background_color = analysis.background_color;
    result.objects = SeenObjects(analysis);
    report.tally.Add(result.check);
    report.results.push_back(std::move(result));
  }
  return report;
}

std::vector<ShapeImage> ReferenceImages(const std::vector<Prompt>& prompts) {
  std::vector<ShapeImage> images;
  images.reserve(prompts.size());
  for (const Prompt& p : prompts) images.push_back(RenderScene(p.scene));
  return images;
}

absl::StatusOr<std::vector<ShapeImage>> ShapeImagesFromTensor(const torch::Tensor& images) {
  return PlanarImagesFromTensor<ShapeImage>(images, kShapeImageSize, "ShapeImagesFromTensor");
}

absl::StatusOr<std::vector<SceneImage64>> SceneImages64FromTensor(const torch::Tensor& images) {
  return PlanarImagesFromTensor<SceneImage64>(images, kScene64Size, "SceneImages64FromTensor");
}

std::string ReportToJson(const PromptEvalReport& report, int indent) {
  const CheckTally& t = report.tally;
  Json correct = Json::object(), accuracy = Json::object();
  for (const Field& f : kFields) {
    correct[f.name] = t.*f.count;
    accuracy[f.name] = t.Rate(t.*f.count);
  }
  Json results = Json::array();
  for (const PromptResult& r : report.results) {
    Json check = Json::object();
    for (const Field& f : kFields) check[f.name] = r.check.*f.check;
    Json objects = Json::array();
    for (const SeenObject& o : r.objects) objects.push_back(internal::SeenObjectToJson(o));
    results.push_back(Json{{"prompt", r.prompt},
                           {"check", std::move(check)},
                           {"background", kBackgroundColors[r.background_color].name},
                           {"objects", std::move(objects)}});
  }
  const Json j = {{"n", t.n},
                  {"correct", std::move(correct)},
                  {"accuracy", std::move(accuracy)},
                  {"results", std::move(results)}};
  return j.dump(indent);
}

absl::StatusOr<PromptEvalReport> ReportFromJson(std::string_view text) {
  const Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError("report JSON: not valid JSON");
  PromptEvalReport report;
  if (absl::Status s = Read(j, "n", &report.tally.n); !s.ok()) return s;
  const Json* correct = Member(j, "correct", Json::value_t::object);
  if (correct == nullptr) return Missing("correct", "an object");
  for (const Field& f : kFields) {
    if (absl::Status s = Read(*correct, f.name, &(report.tally.*f.count)); !s.ok()) return s;
  }
  const Json* results = Member(j, "results", Json::value_t::array);
  if (results == nullptr) return Missing("results", "an array");
  for (const Json& r : *results) {
    PromptResult result;
    if (absl::Status s = Read(r, "prompt", &result.prompt); !s.ok()) return s;
    const Json* check = Member(r, "check", Json::value_t::object);
    if (check == nullptr) return Missing("check", "an object");
    for (const Field& f : kFields) {
      if (absl::Status s = Read(*check, f.name, &(result.check.*f.check)); !s.ok()) return s;
    }
    std::string background;
    if (absl::Status s = Read(r, "background", &background); !s.ok()) return s;
    if (absl::Status s =
            LookupColor(kBackgroundColors, background, "background", &result.background_color);
        !s.ok()) {
      return s;
    }
    const Json* objects = Member(r, "objects", Json::value_t::array);
    if (objects == nullptr) return Missing("objects", "an array");
    for (const Json& o : *objects) {
      SeenObject seen;
      if (absl::Status s = ObjectFromJson(o, &seen); !s.ok()) return s;
      result.objects.push_back(seen);
    }
    report.results.push_back(std::move(result));
  }
  if (report.results.size() != static_cast<size_t>(report.tally.n)) {
    return absl::InvalidArgumentError(absl::StrCat("report JSON: n = ", report.tally.n, " but ",
                                                   report.results.size(), " results"));
  }
  return report;
}

std::string SummaryLine(const PromptEvalReport& report) {
  const CheckTally& t = report.tally;
  return absl::StrFormat(
      "n=%d colour %.3f shape %.3f position %.3f size %.3f count %.3f background %.3f all %.3f",
      t.n, t.Rate(t.color), t.Rate(t.shape), t.Rate(t.position), t.Rate(t.size), t.Rate(t.count),
      t.Rate(t.background), t.Rate(t.all));
}

}  // namespace dartserve::eval

#include "model/config.h"

#include <algorithm>
#include <array>
#include <functional>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "model/json_message.h"
#include "nlohmann/json.hpp"

namespace dartserve::model {
namespace {

using Json = nlohmann::json;

template <typename E, size_t N>
using EnumNames = std::array<std::pair<E, const char*>, N>;

constexpr EnumNames<Conditioning, 3> kConditioningNames = {{{Conditioning::kNone, "none"},
                                                            {Conditioning::kClass, "class"},
                                                            {Conditioning::kText, "text"}}};
constexpr EnumNames<OutputHead, 2> kHeadNames = {
    {{OutputHead::kMean, "mean"}, {OutputHead::kFlow, "flow"}}};
constexpr EnumNames<FlowSolver, 2> kFlowSolverNames = {
    {{FlowSolver::kEuler, "euler"}, {FlowSolver::kHeun, "heun"}}};
constexpr EnumNames<Variant, 2> kVariantNames = {
    {{Variant::kDart, "dart"}, {Variant::kDartAr, "dart_ar"}}};
constexpr EnumNames<Schedule, 1> kScheduleNames = {{{Schedule::kCosine, "cosine"}}};
constexpr EnumNames<LossWeight, 3> kLossWeightNames = {{{LossWeight::kClampedSnr, "clamped_snr"},
                                                        {LossWeight::kUniform, "uniform"},
                                                        {LossWeight::kPaperSum, "paper_sum"}}};

template <typename E, size_t N>
std::string NameOf(const EnumNames<E, N>& names, E value) {
  for (const auto& [v, name] : names) {
    if (v == value) return name;
  }
  return "?";
}

template <typename E, size_t N>
absl::Status ParseEnum(const EnumNames<E, N>& names, const Json& j, const char* field, E* out) {
  if (!j.is_string()) return absl::InvalidArgumentError(absl::StrCat(field, ": must be a string"));
  const std::string s = j.get<std::string>();
  std::vector<std::string> accepted;
  for (const auto& [v, name] : names) {
    if (name == s) {
      *out = v;
      return absl::OkStatus();
    }
    accepted.emplace_back(name);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      field, ": unknown value \"", s, "\" (accepted: ", absl::StrJoin(accepted, ", "), ")"));
}

absl::Status ParseInt(const Json& j, const char* field, int* out) {
  if (!j.is_number_integer()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": must be an integer"));
  }
  const int64_t v = j.get<int64_t>();
  if (v < -(1LL << 30) || v > (1LL << 30)) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": out of range"));
  }
  *out = static_cast<int>(v);
  return absl::OkStatus();
}

absl::Status ParseDouble(const Json& j, const char* field, double* out) {
  if (!j.is_number()) return absl::InvalidArgumentError(absl::StrCat(field, ": must be a number"));
  *out = j.get<double>();
  return absl::OkStatus();
}

absl::Status ParseBool(const Json& j, const char* field, bool* out) {
  if (!j.is_boolean())
    return absl::InvalidArgumentError(absl::StrCat(field, ": must be true or false"));
  *out = j.get<bool>();
  return absl::OkStatus();
}

absl::Status ParseString(const Json& j, const char* field, std::string* out) {
  if (!j.is_string() || j.get<std::string>().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": must be a non-empty string"));
  }
  *out = j.get<std::string>();
  return absl::OkStatus();
}

absl::Status Check(bool ok, const char* field, const char* requirement) {
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", requirement));
}

// SwiGLU hidden size: mlp_ratio * width rounded up to a multiple of 32 (GEMM-friendly).
int MlpHidden(double mlp_ratio, int width) {
  const int raw = static_cast<int>(mlp_ratio * width + 0.5);
  return (raw + 31) / 32 * 32;
}

// Longest teacher-forced sequence a config may describe: keeps every token count (the int
// accessors sequence_length(), generation_steps(), ...) and every KV byte count far from
// overflow. Far beyond any model that fits in memory (a KV cache of 2^24 tokens at width 256 and
// depth 6 is 192 GiB per row).
constexpr int64_t kMaxSequenceTokens = int64_t{1} << 24;

// num_blocks() x tokens_per_block() in 64 bits, for Validate: it runs before the fields are known
// to be in range, so it must not overflow whatever they hold. Saturates at kMaxSequenceTokens + 1.
int64_t SequenceTokens(const ModelConfig& c) {
  if (c.image_size < 1 || c.patch_size < 1 || c.num_steps < 1) return 0;
  const int64_t grid = c.image_size / c.patch_size;
  const int64_t per_block = grid * grid;  // grid < 2^31, so this fits
  const int64_t blocks = int64_t{c.num_steps} + (c.autoregressive() ? 1 : 0);
  if (per_block > kMaxSequenceTokens || blocks > kMaxSequenceTokens) return kMaxSequenceTokens + 1;
  return std::min(per_block * blocks, kMaxSequenceTokens + 1);
}

}  // namespace

int ModelConfig::mlp_hidden() const { return MlpHidden(mlp_ratio, width); }

int ModelConfig::text_mlp_hidden() const { return MlpHidden(mlp_ratio, text_width); }

int64_t ModelConfig::kv_bytes_per_row() const {
  return int64_t{2} * depth * sequence_length() * width * static_cast<int64_t>(sizeof(float)) +
         condition_bytes_per_row();
}

int64_t ModelConfig::condition_bytes_per_row() const {
  // Every block's AdaLN-Zero modulation (6 * width) and the final norm's (2 * width).
  const int64_t modulation = (int64_t{6} * depth + 2) * width;
  const int64_t text =
      conditioning == Conditioning::kText ? int64_t{2} * depth * text_max_tokens * width : 0;
  return (modulation + text) * static_cast<int64_t>(sizeof(float));
}

double FlopsPerImage(const ModelConfig& c, bool guided) {
  const double d = c.width, h = c.mlp_hidden(), k = c.tokens_per_block(), td = c.token_dim();
  double linear_per_token = c.depth * 2.0 * (4 * d * d + 3 * d * h) + 2.0 * 2 * td * d;
  if (c.conditioning == Conditioning::kText) {
    // Cross-attention per image token: the query and output projections, and attention over the
    // padded prompt (the prompt's own K/V and the encoder run once per request: negligible).
    linear_per_token += c.depth * 2.0 * (2 * d * d + 2.0 * c.text_max_tokens * d);
  }
  double total = 0;
  if (c.autoregressive()) {
    // Token i attends over the i + 1 tokens up to itself.
    const double n = c.sequence_length();
    total += n * linear_per_token + c.depth * 4.0 * d * n * (n + 1) / 2;
  } else {
    for (int b = 0; b < c.num_steps; ++b) {
      const double context = (b + 1) * k;
      total += k * (linear_per_token + c.depth * 4.0 * context * d);
    }
  }
  if (c.flow()) {
    // Once per DART step: the AdaLN modulation of every head block from the backbone output.
    // Per evaluation: the input/output projections and two linears per block.
    const double w = c.flow_width;
    const double once = 2.0 * (d * w + c.flow_depth * w * 3 * w);
    const double per_eval = 2.0 * (2 * td * w + c.flow_depth * 2 * w * w);
    const double evals = c.flow_solver == FlowSolver::kHeun ? 2.0 * c.flow_steps - 1 : c.flow_steps;
    total += c.num_steps * k * (once + evals * per_eval);
  }
  return total * (guided ? 2 : 1);
}

absl::Status ModelConfig::Validate() const {
  const bool text = conditioning == Conditioning::kText;
  // Each check names its field; the first failure wins so the message stays one line.
  for (const absl::Status& s : {
           Check(image_size >= 1 && image_size <= 4096, "image_size", "must be in [1, 4096]"),
           Check(latent() || channels == 1 || channels == 3, "channels",
                 "must be 1 (gray) or 3 (RGB)"),
           Check(!latent() || (channels >= 1 && channels <= 64), "channels",
                 "must be in [1, 64] for a latent model (the autoencoder's latent channels)"),
           Check(latent() ? autoencoder_downsample >= 1 && autoencoder_downsample <= 64 &&
                                (autoencoder_downsample & (autoencoder_downsample - 1)) == 0
                          : autoencoder_downsample == 0,
                 "autoencoder_downsample",
                 latent() ? "must be a power of two in [1, 64] (the autoencoder's f)"
                          : "must be 0 without an autoencoder"),
           Check(patch_size >= 1 && patch_size <= image_size, "patch_size",
                 "must be in [1, image_size]"),
           Check(patch_size >= 1 && image_size % patch_size == 0, "patch_size",
                 "must divide image_size"),
           Check(num_steps >= 1 && num_steps <= 1024, "num_steps", "must be in [1, 1024]"),
           Check(SequenceTokens(*this) <= kMaxSequenceTokens, "num_steps",
                 "the sequence (num_steps blocks of (image_size / patch_size)^2 tokens) must be at "
                 "most 2^24 tokens"),
           Check(snr_shift > 0 && snr_shift < 1e6, "snr_shift", "must be in (0, 1e6)"),
           Check(loss_weight_min > 0, "loss_weight_min", "must be > 0"),
           Check(loss_weight_max >= loss_weight_min, "loss_weight_max",
                 "must be >= loss_weight_min"),
           Check(width >= 4 && width <= 16384, "width", "must be in [4, 16384]"),
           Check(depth >= 1 && depth <= 256, "depth", "must be in [1, 256]"),
           Check(heads >= 1 && heads <= width && width % heads == 0, "heads",
                 "must be >= 1 and divide width"),
           Check(heads >= 1 && width % heads == 0 && (width / heads) % 4 == 0, "heads",
                 "width / heads (the head dim) must be a multiple of 4 for 2-D RoPE"),
           Check(mlp_ratio > 0 && mlp_ratio <= 16, "mlp_ratio", "must be in (0, 16]"),
           Check(rope_theta > 1, "rope_theta", "must be > 1"),
           // Text encoder fields, checked only for text models (they are unused otherwise).
           Check(!text || (text_vocab_size >= 4 && text_vocab_size <= 1 << 20), "text_vocab_size",
                 "must be in [4, 2^20] for text conditioning (the tokenizer's vocab size; ids 0-3 "
                 "are pad, unk, bos, eos)"),
           Check(!text || (text_max_tokens >= 2 && text_max_tokens <= 4096), "text_max_tokens",
                 "must be in [2, 4096] for text conditioning (BOS and EOS count)"),
           Check(!text || (text_width >= 4 && text_width <= 16384), "text_width",
                 "must be in [4, 16384] for text conditioning"),
           Check(!text || (text_depth >= 1 && text_depth <= 64), "text_depth",
                 "must be in [1, 64] for text conditioning"),
           Check(!text || (text_heads >= 1 && text_heads <= text_width &&
                           text_width % text_heads == 0 && (text_width / text_heads) % 2 == 0),
                 "text_heads",
                 "must be >= 1 and divide text_width into an even head dim (1-D RoPE rotates "
                 "pairs)"),
           Check(
               conditioning != Conditioning::kClass || (num_classes >= 1 && num_classes <= 1 << 20),
               "num_classes", "must be in [1, 2^20] for class conditioning"),
           Check(cond_dropout >= 0 && cond_dropout < 1, "cond_dropout", "must be in [0, 1)"),
           Check(flow_width >= 4 && flow_width <= 16384, "flow_width", "must be in [4, 16384]"),
           Check(flow_depth >= 1 && flow_depth <= 64, "flow_depth", "must be in [1, 64]"),
           Check(flow_steps >= 1 && flow_steps <= 1000, "flow_steps", "must be in [1, 1000]"),
           Check(flow_times >= 1 && flow_times <= 64, "flow_times", "must be in [1, 64]"),
           Check(flow_mean_weight >= 0, "flow_mean_weight", "must be >= 0"),
       }) {
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

ModelConfig ModelConfig::Tiny() {
  ModelConfig c;
  c.image_size = 8;
  c.channels = 1;
  c.patch_size = 2;
  c.num_steps = 4;
  c.width = 32;
  c.depth = 2;
  c.heads = 2;
  c.num_classes = 10;
  return c;
}

namespace {

// One row per config.json field: its name, how it is read and how it is written. A new field is
// one row here (plus its member and its Validate() check); reading and writing cannot drift.
struct Field {
  const char* name;
  std::function<absl::Status(const Json&, ModelConfig&)> read;
  std::function<Json(const ModelConfig&)> write;
  bool (*written)(const ModelConfig&) = nullptr;  // null: always written
};

// A number or boolean field: `parse` checks the JSON value's type (and range) and stores it.
template <typename T>
Field Scalar(const char* name, T ModelConfig::*member,
             absl::Status (*parse)(const Json&, const char*, T*),
             bool (*written)(const ModelConfig&)) {
  return {
      name,
      [name, member, parse](const Json& j, ModelConfig& c) { return parse(j, name, &(c.*member)); },
      [member](const ModelConfig& c) { return Json(c.*member); }, written};
}

Field Int(const char* name, int ModelConfig::*member,
          bool (*written)(const ModelConfig&) = nullptr) {
  return Scalar(name, member, ParseInt, written);
}
Field Double(const char* name, double ModelConfig::*member,
             bool (*written)(const ModelConfig&) = nullptr) {
  return Scalar(name, member, ParseDouble, written);
}
Field Bool(const char* name, bool ModelConfig::*member,
           bool (*written)(const ModelConfig&) = nullptr) {
  return Scalar(name, member, ParseBool, written);
}
Field String(const char* name, std::string ModelConfig::*member,
             bool (*written)(const ModelConfig&) = nullptr) {
  return Scalar(name, member, ParseString, written);
}

template <typename E, size_t N>
Field Enum(const char* name, const EnumNames<E, N>& names, E ModelConfig::*member,
           bool (*written)(const ModelConfig&) = nullptr) {
  return {name,
          [name, &names, member](const Json& j, ModelConfig& c) {
            return ParseEnum(names, j, name, &(c.*member));
          },
          [&names, member](const ModelConfig& c) { return Json(NameOf(names, c.*member)); },
          written};
}

// Flow fields are written only for flow models, so mean checkpoints stay as they were.
bool IsFlow(const ModelConfig& c) { return c.flow(); }
// Text fields likewise only for text models.
bool IsText(const ModelConfig& c) { return c.conditioning == Conditioning::kText; }
// Optional features only when on.
bool HasAbsolutePositions(const ModelConfig& c) { return c.absolute_positions; }
bool IsLatent(const ModelConfig& c) { return c.latent(); }

const std::vector<Field>& Fields() {
  using C = ModelConfig;
  static const auto* fields = new std::vector<Field>{
      Int("image_size", &C::image_size),
      Int("channels", &C::channels),
      Int("patch_size", &C::patch_size),
      String("autoencoder", &C::autoencoder, IsLatent),
      Int("autoencoder_downsample", &C::autoencoder_downsample, IsLatent),
      Int("num_steps", &C::num_steps),
      Enum("schedule", kScheduleNames, &C::schedule),
      Double("snr_shift", &C::snr_shift),
      Enum("loss_weight", kLossWeightNames, &C::loss_weight),
      Double("loss_weight_min", &C::loss_weight_min),
      Double("loss_weight_max", &C::loss_weight_max),
      Int("width", &C::width),
      Int("depth", &C::depth),
      Int("heads", &C::heads),
      Double("mlp_ratio", &C::mlp_ratio),
      Double("rope_theta", &C::rope_theta),
      Bool("absolute_positions", &C::absolute_positions, HasAbsolutePositions),
      Enum("conditioning", kConditioningNames, &C::conditioning),
      Int("num_classes", &C::num_classes),
      Double("cond_dropout", &C::cond_dropout),
      Int("text_vocab_size", &C::text_vocab_size, IsText),
      Int("text_max_tokens", &C::text_max_tokens, IsText),
      Int("text_width", &C::text_width, IsText),
      Int("text_depth", &C::text_depth, IsText),
      Int("text_heads", &C::text_heads, IsText),
      Enum("head", kHeadNames, &C::head),
      Enum("variant", kVariantNames, &C::variant),
      Int("flow_width", &C::flow_width, IsFlow),
      Int("flow_depth", &C::flow_depth, IsFlow),
      Int("flow_steps", &C::flow_steps, IsFlow),
      Enum("flow_solver", kFlowSolverNames, &C::flow_solver, IsFlow),
      Int("flow_times", &C::flow_times, IsFlow),
      Double("flow_mean_weight", &C::flow_mean_weight, IsFlow),
  };
  return *fields;
}

}  // namespace

absl::StatusOr<ModelConfig> ModelConfigFromJson(const std::string& text) {
  Json j = Json::parse(text, /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError("config.json: not valid JSON");
  if (!j.is_object()) return absl::InvalidArgumentError("config.json: must be a JSON object");
  // Other model kinds (the autoencoder, model/autoencoder.h) say what they are; DART's does not.
  if (j.contains("kind")) {
    return absl::InvalidArgumentError(
        absl::StrCat("kind: ", ShowJsonValue(j["kind"]), " is not a DART model's config"));
  }
  ModelConfig c;
  for (const auto& [key, value] : j.items()) {
    // An init-capture: clang before 16 cannot capture a structured binding itself.
    const auto field = std::find_if(Fields().begin(), Fields().end(),
                                    [&wanted = key](const Field& f) { return wanted == f.name; });
    if (field == Fields().end()) {
      return absl::InvalidArgumentError(absl::StrCat(key, ": unknown config field"));
    }
    if (absl::Status s = field->read(value, c); !s.ok()) return s;
  }
  if (absl::Status s = c.Validate(); !s.ok()) return s;
  return c;
}

std::string ModelConfigToJson(const ModelConfig& c) {
  Json j = Json::object();
  for (const Field& field : Fields()) {
    if (field.written == nullptr || field.written(c)) j[field.name] = field.write(c);
  }
  return j.dump(2) + "\n";
}

}  // namespace dartserve::model

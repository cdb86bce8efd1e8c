#include "server/openai_images.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"
#include "server/grpc_status.h"
#include "server/http_stream.h"
#include "server/validation.h"

namespace dartserve::server {
namespace {

using nlohmann::json;

absl::Status Invalid(absl::string_view field, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", why));
}

// The model a request names ("" or absent: the default), or nullptr (the service reports it).
const v1::ModelInfo* FindModel(const v1::ListModelsResponse& models, const std::string& name) {
  for (const v1::ModelInfo& m : models.models()) {
    if (name.empty() ? m.is_default() : m.name() == name) return &m;
  }
  return nullptr;
}

// A service error in OpenAI's terms: the service's field names become the request's ("n" for
// num_images), and `param` names the field when the message starts with one.
struct OpenAiError {
  std::string message;
  std::string param;  // empty: null
};
OpenAiError ToOpenAi(const absl::Status& status) {
  std::string message = CappedStatusMessage(status);
  static const std::pair<const char*, const char*> kRenames[] = {
      {"num_images:", "n:"}, {"class_id:", "prompt:"}, {"steps:", "num_inference_steps:"}};
  for (const auto& [from, to] : kRenames) {
    if (absl::StartsWith(message, from)) message = absl::StrCat(to, message.substr(strlen(from)));
  }
  OpenAiError error{.message = message};
  const size_t colon = message.find(':');
  const absl::string_view head = absl::string_view(message).substr(0, colon);
  const bool is_field =
      colon != std::string::npos && !head.empty() &&
      std::all_of(head.begin(), head.end(), [](char c) {
        return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.';
      });
  if (is_field) error.param = std::string(head);
  return error;
}

json ErrorObject(const absl::Status& status) {
  const OpenAiError error = ToOpenAi(status);
  const bool client = HttpStatusFor(status.code()) < 500;
  return json{{"message", error.message},
              {"type", client ? "invalid_request_error" : "server_error"},
              {"param", error.param.empty() ? json(nullptr) : json(error.param)},
              {"code", absl::AsciiStrToLower(absl::StatusCodeToString(status.code()))}};
}

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string SseEvent(absl::string_view type, const json& data) {
  return absl::StrCat("event: ", type, "\ndata: ", Dump(data), "\n\n");
}

// The OpenAI response, as events arrive (see openai_images.h for the shapes).
class OpenAiEncoder final : public EventEncoder {
 public:
  explicit OpenAiEncoder(const OpenAiImagesRequest& request)
      : stream_(request.stream),
        partial_images_(request.partial_images),
        size_(request.size),
        created_(absl::ToUnixSeconds(absl::Now())) {}

  std::string content_type() const override {
    return stream_ ? "text/event-stream" : "application/json";
  }

  std::string Encode(const v1::GenerateImageResponse& event) override {
    if (event.has_accepted()) {
      // An SSE comment: clients skip it, and the stream (its 200) starts at once.
      return stream_ ? absl::StrCat(": accepted ", event.accepted().request_id(), "\n\n") : "";
    }
    if (event.has_progress()) {
      const v1::Progress& p = event.progress();
      int& sent = partials_sent_[p.image_index()];
      // The last step's preview is the final image, which `completed` carries.
      if (!stream_ || p.preview_png().empty() || sent >= partial_images_ ||
          p.step() >= p.total_steps()) {
        return "";
      }
      json data = Image("image_generation.partial_image", p.image_index(), p.preview_png());
      data["partial_image_index"] = sent++;
      return SseEvent("image_generation.partial_image", data);
    }
    const v1::Result& r = event.result();
    if (!stream_) {
      results_[r.image_index()] = absl::Base64Escape(r.png());
      return "";
    }
    json data = Image("image_generation.completed", r.image_index(), r.png());
    data["usage"] = {{"input_tokens", 0},
                     {"output_tokens", 0},
                     {"total_tokens", 0},
                     {"input_tokens_details", {{"image_tokens", 0}, {"text_tokens", 0}}}};
    return SseEvent("image_generation.completed", data);
  }

  std::string Finish(const absl::Status& status) override {
    if (!status.ok()) {
      return SseEvent("error", json{{"type", "error"}, {"error", ErrorObject(status)}});
    }
    if (stream_) return "";
    json data = json::array();
    for (const auto& [index, b64] : results_) data.push_back({{"b64_json", b64}});
    return Dump(json{{"created", created_},
                     {"data", data},
                     {"size", size_},
                     {"output_format", "png"},
                     {"quality", "auto"},
                     {"background", "opaque"}});
  }

  std::string ErrorBody(const absl::Status& status) override {
    return Dump(json{{"error", ErrorObject(status)}});
  }

 private:
  json Image(const char* type, uint32_t index, const std::string& png) const {
    return json{{"type", type},           {"b64_json", absl::Base64Escape(png)},
                {"created_at", created_}, {"size", size_},
                {"quality", "auto"},      {"background", "opaque"},
                {"output_format", "png"}, {"image_index", index}};
  }

  const bool stream_;
  const int partial_images_;
  const std::string size_;
  const int64_t created_;
  std::map<uint32_t, int> partials_sent_;    // per image
  std::map<uint32_t, std::string> results_;  // per image, base64 (not streamed)
};

// Checks `value` is a string with one of `allowed` values (the first is what dartserve does).
absl::Status OneOf(const char* field, const json& value, std::vector<const char*> allowed) {
  if (value.is_string()) {
    for (const char* a : allowed) {
      if (value.get<std::string>() == a) return absl::OkStatus();
    }
  }
  return Invalid(field,
                 absl::StrCat("only \"", absl::StrJoin(allowed, "\" or \""), "\" is supported"));
}

}  // namespace

absl::StatusOr<OpenAiImagesRequest> ParseOpenAiImagesRequest(absl::string_view body,
                                                             const v1::ListModelsResponse& models) {
  const json j = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Invalid("body", "not valid JSON");
  if (!j.is_object()) return Invalid("body", "must be a JSON object");
  OpenAiImagesRequest out;
  v1::GenerateImageRequest& r = out.request;
  std::string size = "auto";
  for (const auto& item : j.items()) {
    // Named, not structured bindings: lambdas below capture them.
    const std::string& key = item.key();
    const json& value = item.value();
    if (value.is_null()) continue;  // as absent
    absl::Status s;
    const auto string_field = [&](auto set) {
      if (!value.is_string()) return Invalid(key, "must be a string");
      set(value.get<std::string>());
      return absl::OkStatus();
    };
    if (key == "model") {
      s = string_field([&](const std::string& v) { r.set_model(v); });
    } else if (key == "prompt") {
      s = string_field([&](const std::string& v) { r.set_prompt(v); });
    } else if (key == "size") {
      s = string_field([&](const std::string& v) { size = v; });
    } else if (key == "n" || key == "num_inference_steps") {
      if (!value.is_number_unsigned() || value.get<uint64_t>() > 1000) {
        s = Invalid(key, "must be a positive integer");
      } else if (key == "n") {
        r.set_num_images(value.get<uint32_t>());
      } else {
        r.set_steps(value.get<uint32_t>());
      }
    } else if (key == "partial_images") {
      if (!value.is_number_unsigned()) s = Invalid(key, "must be an integer from 0");
      out.partial_images = static_cast<int>(std::min<uint64_t>(value.get<uint64_t>(), 1000));
    } else if (key == "stream") {
      if (!value.is_boolean()) s = Invalid(key, "must be true or false");
      out.stream = value.is_boolean() && value.get<bool>();
    } else if (key == "seed") {
      if (!value.is_number_unsigned()) s = Invalid(key, "must be an integer from 0");
      r.set_seed(value.is_number_unsigned() ? value.get<uint64_t>() : 0);
    } else if (key == "guidance_scale") {
      if (!value.is_number()) s = Invalid(key, "must be a number");
      r.set_guidance_scale(value.is_number() ? value.get<float>() : 0);
    } else if (key == "response_format") {
      s = OneOf("response_format", value, {"b64_json"});
    } else if (key == "output_format") {
      s = OneOf("output_format", value, {"png"});
    } else if (key == "quality") {
      s = OneOf("quality", value, {"auto", "standard"});
    } else if (key == "background") {
      s = OneOf("background", value, {"auto", "opaque"});
    } else if (key == "moderation") {
      s = OneOf("moderation", value, {"auto", "low"});
    } else if (key == "user") {
      s = string_field([](const std::string&) {});
    } else {
      s = Invalid(key, "unknown parameter");
    }
    if (!s.ok()) return s;
  }
  const v1::ModelInfo* model = FindModel(models, r.model());
  if (model == nullptr) return out;  // the service names the unknown model
  const std::string made = absl::StrCat(model->image_size(), "x", model->image_size());
  if (size != "auto" && size != made) {
    return Invalid("size", absl::StrCat("model '", model->name(), "' makes ", made,
                                        " images only (or give \"auto\")"));
  }
  out.size = made;
  const int steps = static_cast<int>(model->progress_steps());
  if (out.partial_images > steps - 1) {
    return Invalid("partial_images", absl::StrCat("must be in [0, ", std::max(0, steps - 1),
                                                  "] for model '", model->name(), "'"));
  }
  // k previews spread evenly before the last step; none unless streamed.
  const int k = out.stream ? out.partial_images : 0;
  r.mutable_preview()->set_every_n_steps(k == 0 ? 0 : static_cast<uint32_t>(steps / (k + 1)));
  return out;
}

void ServeOpenAiImages(HttpExchange& exchange, ImageGeneratorService& service,
                       size_t max_body_bytes) {
  const auto fail = [&](const absl::Status& status) {
    exchange.Send(HttpStatusFor(status.code()), "application/json",
                  Dump(json{{"error", ErrorObject(status)}}));
  };
  const std::optional<absl::string_view> authorization = exchange.header("Authorization");
  if (absl::Status s = service.Authenticate(authorization); !s.ok()) return fail(s);
  absl::StatusOr<std::string> body = exchange.ReadBody(max_body_bytes);
  if (!body.ok()) return fail(body.status());
  v1::ListModelsResponse models;
  service.DescribeModels(models);
  absl::StatusOr<OpenAiImagesRequest> request = ParseOpenAiImagesRequest(*body, models);
  if (!request.ok()) return fail(request.status());
  absl::StatusOr<PreparedCall> prepared = service.PrepareGenerate(authorization, request->request);
  if (!prepared.ok()) return fail(prepared.status());
  ServeGenerateCall(exchange, *prepared, std::make_unique<OpenAiEncoder>(*request));
}

}  // namespace dartserve::server

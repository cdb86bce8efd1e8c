#include "server/validation.h"

#include <cctype>
#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace dartserve::server {
namespace {

absl::Status Invalid(const char* field, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", why));
}

// Class id for a prompt that names one of the model's classes (case-insensitive), or -1.
int ClassByName(const std::string& prompt, const ModelInfo& model) {
  const std::string wanted = absl::AsciiStrToLower(absl::StripAsciiWhitespace(prompt));
  for (size_t i = 0; i < model.class_names.size(); ++i) {
    if (absl::AsciiStrToLower(model.class_names[i]) == wanted) return static_cast<int>(i);
  }
  return -1;
}

}  // namespace

absl::Status ValidateRequestId(const std::string& id) {
  if (id.size() > kMaxRequestIdLength) {
    return Invalid("request_id", absl::StrCat("at most ", kMaxRequestIdLength, " characters"));
  }
  for (const char c : id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != ':' &&
        c != '-') {
      return Invalid("request_id", "only letters, digits and . _ : - are allowed");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ValidatedRequest> ValidateGenerateRequest(const v1::GenerateImageRequest& request,
                                                         const ModelInfo& model,
                                                         uint64_t random_seed) {
  ValidatedRequest out;
  switch (request.condition_case()) {
    case v1::GenerateImageRequest::kClassId:
      if (model.conditioning != "class") {
        return Invalid("class_id", absl::StrCat("model '", model.name, "' is ", model.conditioning,
                                                " and takes no class"));
      }
      if (request.class_id() < 0 || request.class_id() >= model.num_classes) {
        return Invalid("class_id", absl::StrCat("must be in [0, ", model.num_classes,
                                                ") for model '", model.name, "'"));
      }
      out.params.class_id = request.class_id();
      break;
    case v1::GenerateImageRequest::kPrompt: {
      if (request.prompt().size() > kMaxPromptLength) {
        return Invalid("prompt", absl::StrCat("at most ", kMaxPromptLength, " bytes"));
      }
      if (model.conditioning == "text") {
        // The engine tokenizes it and names a prompt that is too long (service.cc).
        out.params.prompt = request.prompt();
        break;
      }
      const int id = model.conditioning == "class" ? ClassByName(request.prompt(), model) : -1;
      if (id < 0) {
        if (model.class_names.empty()) {
          return Invalid("prompt", absl::StrCat("model '", model.name,
                                                "' takes no text prompt; use class_id"));
        }
        return Invalid("prompt",
                       absl::StrCat("model '", model.name,
                                    "' is class-conditional: give class_id or one of its class "
                                    "names: ",
                                    absl::StrJoin(model.class_names, ", ")));
      }
      out.params.class_id = id;
      break;
    }
    case v1::GenerateImageRequest::CONDITION_NOT_SET:
      break;  // unconditional
  }

  out.params.seed = request.has_seed() ? request.seed() : random_seed;
  if (request.steps() != 0 && static_cast<int>(request.steps()) != model.steps) {
    return Invalid("steps", absl::StrCat("model '", model.name, "' denoises in exactly ",
                                         model.steps, " steps (0 selects that)"));
  }
  out.params.guidance_scale =
      request.has_guidance_scale() ? request.guidance_scale() : model.default_guidance;
  if (!std::isfinite(out.params.guidance_scale) || out.params.guidance_scale < 0 ||
      out.params.guidance_scale > kMaxGuidance) {
    return Invalid("guidance_scale", absl::StrCat("must be in [0, ", kMaxGuidance, "]"));
  }
  if (out.params.guidance_scale != 1.0f && model.conditioning == "unconditional") {
    return Invalid("guidance_scale", "guidance needs a conditional model; use 1");
  }
  out.params.temperature = request.has_temperature() ? request.temperature() : 1.0f;
  if (!std::isfinite(out.params.temperature) || out.params.temperature <= 0 ||
      out.params.temperature > kMaxTemperature) {
    return Invalid("temperature", absl::StrCat("must be in (0, ", kMaxTemperature, "]"));
  }
  out.num_images = request.num_images() == 0 ? 1 : static_cast<int>(request.num_images());
  if (request.num_images() > kMaxImagesPerRequest) {
    return Invalid("num_images", absl::StrCat("must be in [1, ", kMaxImagesPerRequest, "]"));
  }
  if (request.has_preview()) {
    out.preview_every = static_cast<int>(
        std::min<uint32_t>(request.preview().every_n_steps(), static_cast<uint32_t>(model.steps)));
    if (request.preview().max_side() > static_cast<uint32_t>(kMaxPreviewSide)) {
      return Invalid("preview.max_side", absl::StrCat("must be at most ", kMaxPreviewSide));
    }
    out.preview_max_side = static_cast<int>(request.preview().max_side());
  }
  switch (request.priority()) {
    case v1::PRIORITY_INTERACTIVE:
      out.priority = 0;
      break;
    case v1::PRIORITY_UNSPECIFIED:
    case v1::PRIORITY_NORMAL:
      out.priority = 1;
      break;
    case v1::PRIORITY_BATCH:
      out.priority = 2;
      break;
    default:
      return Invalid("priority", absl::StrCat("unknown value ", request.priority()));
  }
  return out;
}

}  // namespace dartserve::server

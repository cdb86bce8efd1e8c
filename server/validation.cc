#include "server/validation.h"

#include <algorithm>
#include <cctype>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace dartserve::server {
namespace {

absl::Status Invalid(const char* field, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", why));
}

using model::Conditioning;

// Class id for a prompt that names one of the model's classes (case-insensitive), or -1.
int ClassByName(const std::string& prompt, const model::ModelInfo& model) {
  const std::string wanted = absl::AsciiStrToLower(absl::StripAsciiWhitespace(prompt));
  for (size_t i = 0; i < model.class_names.size(); ++i) {
    if (absl::AsciiStrToLower(model.class_names[i]) == wanted) return static_cast<int>(i);
  }
  return -1;
}

// The request's class id or prompt into `params`, with messages that tell a client what the named
// model takes instead.
absl::Status ResolveCondition(const v1::GenerateImageRequest& request,
                              const model::ModelInfo& model, absl::string_view name,
                              model::GenerateParams& params) {
  switch (request.condition_case()) {
    case v1::GenerateImageRequest::kClassId:
      if (model.conditioning != Conditioning::kClass) {
        return Invalid("class_id", absl::StrCat("model '", name, "' is ",
                                                model::ConditioningName(model.conditioning),
                                                " and takes no class"));
      }
      params.class_id = request.class_id();
      return absl::OkStatus();
    case v1::GenerateImageRequest::kPrompt:
      if (model.conditioning != Conditioning::kClass) {
        // Text models take it as it is; CheckParams and the tokenizer check it.
        params.prompt = request.prompt();
        return absl::OkStatus();
      }
      if (const int id = ClassByName(request.prompt(), model); id >= 0) {
        params.class_id = id;
        return absl::OkStatus();
      }
      if (model.class_names.empty()) {
        return Invalid("prompt",
                       absl::StrCat("model '", name, "' takes no text prompt; use class_id"));
      }
      return Invalid("prompt", absl::StrCat(QuoteClientValue(request.prompt()),
                                            " is not a class of model '", name,
                                            "', which is class-conditional: give class_id or one "
                                            "of its class names: ",
                                            absl::StrJoin(model.class_names, ", ")));
    case v1::GenerateImageRequest::CONDITION_NOT_SET:
      return absl::OkStatus();  // unconditional
  }
  return Invalid("condition", "unknown kind");
}

absl::StatusOr<int> ResolvePriority(v1::Priority priority) {
  switch (priority) {
    case v1::PRIORITY_INTERACTIVE:
      return 0;
    case v1::PRIORITY_UNSPECIFIED:
    case v1::PRIORITY_NORMAL:
      return 1;
    case v1::PRIORITY_BATCH:
      return 2;
    default:
      return Invalid("priority", absl::StrCat("unknown value ", priority));
  }
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
                                                         const model::ModelInfo& model,
                                                         absl::string_view model_name,
                                                         uint64_t random_seed) {
  ValidatedRequest out;
  if (absl::Status s = ResolveCondition(request, model, model_name, out.params); !s.ok()) return s;
  out.params.seed = request.has_seed() ? request.seed() : random_seed;
  if (request.steps() != 0 && static_cast<int>(request.steps()) != model.denoising_steps) {
    return Invalid("steps", absl::StrCat("model '", model_name, "' denoises in exactly ",
                                         model.denoising_steps, " steps (0 selects that)"));
  }
  out.params.guidance_scale =
      request.has_guidance_scale() ? request.guidance_scale() : model.default_guidance;
  out.params.temperature = request.has_temperature() ? request.temperature() : 1.0f;
  // Clamped so that a huge uint32 stays out of range once an int.
  out.params.flow_steps = static_cast<int>(std::min<uint32_t>(request.flow_steps(), 1u << 20));
  if (absl::Status s = model::CheckParams(out.params, model); !s.ok()) return s;
  out.num_images = request.num_images() == 0 ? 1 : static_cast<int>(request.num_images());
  if (request.num_images() > kMaxImagesPerRequest) {
    return Invalid("num_images", absl::StrCat("must be in [1, ", kMaxImagesPerRequest, "]"));
  }
  if (request.has_preview()) {
    // The cadence counts progress steps, as Progress does; beyond the last one it means "only at
    // the end".
    out.preview_every = static_cast<int>(std::min<uint32_t>(
        request.preview().every_n_steps(), static_cast<uint32_t>(model.progress_steps)));
    if (request.preview().max_side() > static_cast<uint32_t>(kMaxPreviewSide)) {
      return Invalid("preview.max_side", absl::StrCat("must be at most ", kMaxPreviewSide));
    }
    out.preview_max_side = static_cast<int>(request.preview().max_side());
    switch (request.preview().kind()) {
      case v1::PREVIEW_KIND_UNSPECIFIED:
      case v1::PREVIEW_KIND_LINEAR:
        out.preview_kind = model::RenderKind::kLinear;
        break;
      case v1::PREVIEW_KIND_DECODED:
        out.preview_kind = model::RenderKind::kDecoded;
        break;
      default:
        return Invalid("preview.kind", absl::StrCat("unknown value ", request.preview().kind()));
    }
  }
  absl::StatusOr<int> priority = ResolvePriority(request.priority());
  if (!priority.ok()) return priority.status();
  out.priority = *priority;
  return out;
}

}  // namespace dartserve::server

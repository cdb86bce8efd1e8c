#include "model/model_info.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace dartserve::model {
namespace {

absl::Status Invalid(absl::string_view field, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", why));
}

absl::Status CheckCondition(const GenerateParams& params, const ModelInfo& model) {
  const bool class_model = model.conditioning == Conditioning::kClass;
  const bool text_model = model.conditioning == Conditioning::kText;
  if (!text_model && !params.prompt.empty()) {
    return Invalid("prompt", class_model ? "this model is class-conditional; give a class"
                                         : "this model is unconditional");
  }
  if (static_cast<int64_t>(params.prompt.size()) > model.limits.max_prompt_bytes) {
    return Invalid("prompt", absl::StrCat("at most ", model.limits.max_prompt_bytes, " bytes"));
  }
  if (params.class_id.has_value()) {
    if (!class_model) {
      return Invalid("class_id", text_model ? "this model is text-conditioned; give a prompt"
                                            : "this model is unconditional");
    }
    if (*params.class_id < 0 || *params.class_id >= model.num_classes) {
      return Invalid("class_id", absl::StrCat("must be in [0, ", model.num_classes, ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::string_view ConditioningName(Conditioning conditioning) {
  switch (conditioning) {
    case Conditioning::kClass:
      return "class";
    case Conditioning::kText:
      return "text";
    case Conditioning::kNone:
      break;
  }
  return "unconditional";
}

absl::Status CheckParams(const GenerateParams& params, const ModelInfo& model) {
  if (absl::Status s = CheckCondition(params, model); !s.ok()) return s;
  const ParamLimits& limits = model.limits;
  if (!std::isfinite(params.guidance_scale) || params.guidance_scale < 0 ||
      params.guidance_scale > limits.max_guidance) {
    return Invalid("guidance_scale", absl::StrCat("must be in [0, ", limits.max_guidance, "]"));
  }
  if (params.guidance_scale != 1.0f && model.conditioning == Conditioning::kNone) {
    return Invalid("guidance_scale", "guidance needs a conditional model; use 1");
  }
  if (!std::isfinite(params.temperature) || params.temperature <= 0 ||
      params.temperature > limits.max_temperature) {
    return Invalid("temperature", absl::StrCat("must be in (0, ", limits.max_temperature, "]"));
  }
  if (params.flow_steps != 0 && model.default_flow_steps == 0) {
    return Invalid("flow_steps", "the model has no flow head; use 0");
  }
  if (params.flow_steps < 0 || params.flow_steps > limits.max_flow_steps) {
    return Invalid("flow_steps", absl::StrCat("must be in [0, ", limits.max_flow_steps,
                                              "] (0: the model's ", model.default_flow_steps, ")"));
  }
  return absl::OkStatus();
}

absl::Status CheckDefaultGuidance(double guidance, const ParamLimits& limits) {
  if (!(guidance > 0) || guidance > limits.max_guidance) {
    return absl::InvalidArgumentError(
        absl::StrCat("guidance: must be in (0, ", limits.max_guidance, "]"));
  }
  return absl::OkStatus();
}

}  // namespace dartserve::model

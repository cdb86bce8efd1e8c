// Request validation for the gRPC API: every rejection is INVALID_ARGUMENT with a message that
// starts with the offending field's name ("guidance_scale: must be in [0, 20]").
#ifndef DARTSERVE_SERVER_VALIDATION_H_
#define DARTSERVE_SERVER_VALIDATION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/client_value.h"
#include "dartserve/v1/image_generator.pb.h"
#include "model/model_info.h"

namespace dartserve::server {

// The API's own limits. The model's parameter ranges (guidance, temperature, prompt length) are
// the model's: model::ModelInfo::limits.
inline constexpr int kMaxImagesPerRequest = 16;
inline constexpr size_t kMaxRequestIdLength = 128;
inline constexpr int kMaxPreviewSide = 4096;

struct ValidatedRequest {
  model::GenerateParams params;  // image 0; image i uses params.seed + i
  int num_images = 1;
  int priority = 1;       // scheduler class: 0 interactive, 1 normal, 2 batch
  int preview_every = 1;  // in progress steps (ModelInfo::progress_steps)
  int preview_max_side = 0;
  model::RenderKind preview_kind = model::RenderKind::kLinear;
};

// How every error message quotes a value the client sent (model name, request id, prompt, ...):
// common/client_value.h, shared with the scheduler.
using ::dartserve::kMaxQuotedBytes;
using ::dartserve::QuoteClientValue;

// INVALID_ARGUMENT naming the field, or OK. Empty ids are valid (the server picks one).
absl::Status ValidateRequestId(const std::string& id);

// Checks `request` against the API's limits and `model` (named `model_name` in messages; its
// ranges through model::CheckParams), resolves defaults (guidance, num_images, preview) and class
// names given as `prompt`. `random_seed` is used when the request has no seed. The request id and
// model name are checked by the caller.
absl::StatusOr<ValidatedRequest> ValidateGenerateRequest(const v1::GenerateImageRequest& request,
                                                         const model::ModelInfo& model,
                                                         absl::string_view model_name,
                                                         uint64_t random_seed);

}  // namespace dartserve::server

#endif  // DARTSERVE_SERVER_VALIDATION_H_

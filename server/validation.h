// Request validation for the gRPC API: every rejection is INVALID_ARGUMENT with a message that
// starts with the offending field's name ("guidance_scale: must be in [0, 20]").
#ifndef DARTSERVE_SERVER_VALIDATION_H_
#define DARTSERVE_SERVER_VALIDATION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "dartserve/v1/image_generator.pb.h"
#include "model/engine.h"

namespace dartserve::server {

// What the service knows about a served model; torch-free, filled in by whoever loads it.
struct ModelInfo {
  std::string name;
  std::string conditioning = "class";  // "class", "text" or "unconditional"
  int num_classes = 0;
  std::vector<std::string> class_names;  // index = class id; may be empty
  int image_size = 0;
  int channels = 0;
  int steps = 0;
  float default_guidance = 1.0f;
  int64_t parameters = 0;
};

// The API's limits.
inline constexpr int kMaxImagesPerRequest = 16;
inline constexpr size_t kMaxRequestIdLength = 128;
inline constexpr float kMaxGuidance = 20.0f;
inline constexpr float kMaxTemperature = 2.0f;
inline constexpr int kMaxPreviewSide = 4096;
inline constexpr size_t kMaxPromptLength = 2000;

struct ValidatedRequest {
  model::GenerateParams params;  // image 0; image i uses params.seed + i
  int num_images = 1;
  int priority = 1;  // scheduler class: 0 interactive, 1 normal, 2 batch
  int preview_every = 1;
  int preview_max_side = 0;
};

// INVALID_ARGUMENT naming the field, or OK. Empty ids are valid (the server picks one).
absl::Status ValidateRequestId(const std::string& id);

// Checks `request` against the API's limits and `model`, resolves defaults (guidance, num_images,
// preview) and class names given as `prompt`. `random_seed` is used when the request has no seed.
// The request id and model name are checked by the caller.
absl::StatusOr<ValidatedRequest> ValidateGenerateRequest(const v1::GenerateImageRequest& request,
                                                         const ModelInfo& model,
                                                         uint64_t random_seed);

}  // namespace dartserve::server

#endif  // DARTSERVE_SERVER_VALIDATION_H_

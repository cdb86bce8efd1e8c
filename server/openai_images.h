// POST /v1/images/generations: OpenAI's Images API over the same service as gRPC, so OpenAI SDKs
// and HTTP image load generators work unchanged (docs/service.md, "OpenAI-compatible images").
//
// Request: {"model", "prompt", "n", "size", "response_format": "b64_json", "output_format":
// "png", "stream", "partial_images", "quality", "background", "moderation", "user"}, plus the
// extensions "seed", "guidance_scale" and "num_inference_steps" that serving benchmarks send. A
// class-conditional model takes a class name as the prompt. What cannot be honoured (a size other
// than the model's, "url" responses, a transparent background, an unknown field) is 400 naming the
// field, in OpenAI's error shape {"error": {"message", "type", "param", "code"}}.
// Response: {"created", "data": [{"b64_json"}, ...], "size", "output_format"}; with "stream":
// server-sent events image_generation.partial_image (a preview; "partial_images" of them per
// image, spread over its steps) and image_generation.completed (one per image), and an "error"
// event if the call fails after the stream started.
#ifndef DARTSERVE_SERVER_OPENAI_IMAGES_H_
#define DARTSERVE_SERVER_OPENAI_IMAGES_H_

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "dartserve/v1/image_generator.pb.h"
#include "server/http_server.h"
#include "server/service.h"

namespace dartserve::server {

// An OpenAI images request as the service's request and how to answer it.
struct OpenAiImagesRequest {
  v1::GenerateImageRequest request;
  bool stream = false;
  int partial_images = 0;  // previews per image on the stream
  std::string size;        // "WxH" of the images
};

// Translates an OpenAI request `body` for the models `models` serves. INVALID_ARGUMENT starting
// with the OpenAI field's name for what does not map; the service checks the rest (then
// "num_images" is reported as "n").
absl::StatusOr<OpenAiImagesRequest> ParseOpenAiImagesRequest(absl::string_view body,
                                                             const v1::ListModelsResponse& models);

// Answers `exchange` (an HTTP handler thread; returns when the call has ended).
void ServeOpenAiImages(HttpExchange& exchange, ImageGeneratorService& service,
                       size_t max_body_bytes);

}  // namespace dartserve::server

#endif  // DARTSERVE_SERVER_OPENAI_IMAGES_H_

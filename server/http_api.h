// The HTTP front end beside gRPC (docs/service.md, "JSON API"): the JSON API in protobuf's JSON
// mapping, the OpenAI-compatible images endpoint (server/openai_images.h) and the web page
// (web/), all on the same ImageGeneratorService as gRPC: the same authentication, validation and
// stream logic, only another transport.
//
//   POST /v1/images:generate           GenerateImageRequest -> NDJSON GenerateImageResponse lines
//   GET  /v1/models                    ListModelsResponse
//   GET  /v1/info                      GetServerInfoResponse
//   POST /v1/requests/{id}:cancel      {} (CancelGeneration)
//   POST /v1/images/generations        OpenAI Images API (JSON, or server-sent events)
//   GET  /, /app.js, /style.css        the page (open: it asks for the token itself)
//
// Errors are an HTTP status (HttpStatusFor) with {"code": "...", "message": "..."}; bodies that are
// not JSON, unknown fields and wrong types are 400 naming the field, and bodies over the size
// limit are 400 too: nothing of them reaches the scheduler.
#ifndef DARTSERVE_SERVER_HTTP_API_H_
#define DARTSERVE_SERVER_HTTP_API_H_

#include <cstddef>

#include "absl/status/status.h"
#include "google/protobuf/message.h"
#include "server/http_server.h"
#include "server/service.h"

namespace dartserve::server {

struct HttpApiOptions {
  size_t max_body_bytes = 1 << 20;  // as gRPC's --max_request_kb
};

// Thread-safe: Handle runs on many HTTP threads at once.
class HttpApi {
 public:
  // `service` must outlive the HttpApi.
  HttpApi(ImageGeneratorService* service, HttpApiOptions options)
      : service_(service), options_(options) {}

  // The HttpServer handler: answers every request.
  void Handle(HttpExchange& exchange);

 private:
  void Generate(HttpExchange& exchange);
  void Cancel(HttpExchange& exchange, const std::string& request_id);
  // Answers with `message` as JSON, or with `status` when it is an error.
  void Reply(HttpExchange& exchange, const absl::Status& status,
             const google::protobuf::Message& message);

  ImageGeneratorService* const service_;
  const HttpApiOptions options_;
};

// Parses `body` (protobuf's JSON mapping; empty means {}) into `message`. INVALID_ARGUMENT
// starting with the field it is about: "num_images: invalid value ...", "preview.bogus: unknown
// field", or "body: not valid JSON: ...".
absl::Status ParseJsonBody(absl::string_view body, google::protobuf::Message& message);

}  // namespace dartserve::server

#endif  // DARTSERVE_SERVER_HTTP_API_H_

// GenerateImage over HTTP: the HTTP transport of a GenerateCall (server/stream.h), which runs the
// same stream logic as gRPC, and the encoders that put its events on the wire (the JSON API's
// newline-delimited JSON here; the OpenAI-compatible endpoint's in server/openai_images.h).
#ifndef DARTSERVE_SERVER_HTTP_STREAM_H_
#define DARTSERVE_SERVER_HTTP_STREAM_H_

#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "dartserve/v1/image_generator.pb.h"
#include "server/http_server.h"
#include "server/stream.h"

namespace dartserve::server {

// An HTTP status for a canonical code: 400 INVALID_ARGUMENT/FAILED_PRECONDITION/OUT_OF_RANGE, 401
// UNAUTHENTICATED, 403 PERMISSION_DENIED, 404 NOT_FOUND, 409 ALREADY_EXISTS/ABORTED, 429
// RESOURCE_EXHAUSTED, 499 CANCELLED, 501 UNIMPLEMENTED, 503 UNAVAILABLE, 504 DEADLINE_EXCEEDED,
// 500 otherwise (the mapping of Google's HTTP APIs and grpc-gateway).
int HttpStatusFor(absl::StatusCode code);

// {"code": "INVALID_ARGUMENT", "message": "..."}: the JSON API's error body (the message capped
// as for gRPC).
std::string JsonError(const absl::Status& status);

// What a generation's events become on the wire. Encode is called on a pump thread, the others on
// the HTTP thread, never concurrently.
class EventEncoder {
 public:
  virtual ~EventEncoder() = default;
  virtual std::string content_type() const = 0;
  // The bytes for `event`; empty: nothing to send for it (yet).
  virtual std::string Encode(const v1::GenerateImageResponse& event) = 0;
  // The last bytes once the call ends with `status`: after a started stream, or, when nothing was
  // sent yet and `status` is OK, the whole response body.
  virtual std::string Finish(const absl::Status& status) = 0;
  // The response to a call that fails before any bytes were sent: an HTTP status and body
  // (default: HttpStatusFor and JsonError, as application/json).
  virtual int ErrorStatus(const absl::Status& status) { return HttpStatusFor(status.code()); }
  virtual std::string ErrorBody(const absl::Status& status) { return JsonError(status); }
};

// The JSON API's stream: one GenerateImageResponse per line in protobuf's JSON mapping, and after
// an error that follows the first line, a last {"error": {"code": ..., "message": ...}} line.
class NdjsonEncoder final : public EventEncoder {
 public:
  std::string content_type() const override { return "application/x-ndjson"; }
  std::string Encode(const v1::GenerateImageResponse& event) override;
  std::string Finish(const absl::Status& status) override;
};

// The header that gives an HTTP generation a deadline, in seconds from its arrival (as Google's
// HTTP APIs name it); the call then ends DEADLINE_EXCEEDED (HTTP 504) like a gRPC call whose
// deadline passed, queue time included. Without it a call has no deadline; its client can always
// disconnect.
inline constexpr char kTimeoutHeader[] = "X-Server-Timeout";

// The deadline `exchange` asks for with kTimeoutHeader (InfiniteFuture without one);
// INVALID_ARGUMENT naming the header when it is not a positive number of seconds.
absl::StatusOr<absl::Time> RequestDeadline(const HttpExchange& exchange);

// Runs `prepared` on this HTTP handler thread and answers `exchange` with it, returning when the
// call has ended: the response starts (200) with the first bytes `encoder` makes, each write is
// flushed, and a call that ends before any is answered as the encoder says. A client that
// disconnects or stops reading cancels the call, as a gRPC client does. An id already in flight
// is answered 409, a bad kTimeoutHeader 400.
void ServeGenerateCall(HttpExchange& exchange, const PreparedCall& prepared,
                       std::unique_ptr<EventEncoder> encoder);

// The protobuf JSON mapping of a response message (lowerCamelCase names, zero values included).
std::string ToJson(const google::protobuf::Message& message);

}  // namespace dartserve::server

#endif  // DARTSERVE_SERVER_HTTP_STREAM_H_

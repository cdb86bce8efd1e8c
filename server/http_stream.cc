#include "server/http_stream.h"

#include <google/protobuf/util/json_util.h>

#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/client_value.h"
#include "nlohmann/json.hpp"
#include "server/grpc_status.h"

namespace dartserve::server {
namespace {

// How often a stream waiting for its next event checks that its client is still there.
constexpr absl::Duration kClientCheckInterval = absl::Milliseconds(100);

// The HTTP transport: the pump hands each encoded event to the handler thread, which writes it and
// reports back; one event is in flight at a time (GenerateCall's rule), so one slot suffices.
class HttpGenerateCall final : public GenerateCall {
 public:
  HttpGenerateCall(const PreparedCall& prepared, std::unique_ptr<EventEncoder> encoder)
      : GenerateCall(prepared), encoder_(std::move(encoder)) {}

  // The handler thread's loop; see ServeGenerateCall.
  void Serve(HttpExchange& exchange) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void WriteEvent(const v1::GenerateImageResponse* event) override ABSL_LOCKS_EXCLUDED(mu_) {
    std::string bytes = encoder_->Encode(*event);
    absl::MutexLock lock(&mu_);
    outgoing_ = std::move(bytes);
  }
  void EndCall(const absl::Status& status) override ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    end_ = status;
  }
  // Answers a call that ended with `status`; `started`: the stream's headers went out.
  void Answer(HttpExchange& exchange, bool started, const absl::Status& status);

  const std::unique_ptr<EventEncoder> encoder_;
  absl::Mutex mu_;
  std::optional<std::string> outgoing_ ABSL_GUARDED_BY(mu_);
  std::optional<absl::Status> end_ ABSL_GUARDED_BY(mu_);
};

void HttpGenerateCall::Serve(HttpExchange& exchange) {
  bool started = false;
  bool client_gone = false;
  while (true) {
    std::optional<std::string> bytes;
    std::optional<absl::Status> end;
    {
      absl::MutexLock lock(&mu_);
      const auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return outgoing_.has_value() || end_.has_value();
      };
      mu_.AwaitWithTimeout(absl::Condition(&ready), kClientCheckInterval);
      bytes = std::exchange(outgoing_, std::nullopt);
      end = end_;
    }
    if (bytes.has_value()) {
      bool ok = true;
      if (!bytes->empty()) {
        if (!started) ok = exchange.StartStream(200, encoder_->content_type());
        started = true;
        ok = ok && exchange.WriteChunk(*bytes);
      }
      WriteDone(ok);
    } else if (end.has_value()) {
      Answer(exchange, started, *end);
      break;
    } else if (!client_gone && exchange.ClientClosed()) {
      client_gone = true;
      ClientGone();  // the call ends (EndCall) at once, without further writes
    }
  }
  Released();
}

void HttpGenerateCall::Answer(HttpExchange& exchange, bool started, const absl::Status& status) {
  if (started) {
    exchange.WriteChunk(encoder_->Finish(status));
    exchange.EndStream();
  } else if (status.ok()) {
    exchange.Send(200, encoder_->content_type(), encoder_->Finish(status));
  } else {
    exchange.Send(encoder_->ErrorStatus(status), "application/json", encoder_->ErrorBody(status));
  }
}

}  // namespace

int HttpStatusFor(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted:
      return 409;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kCancelled:
      return 499;
    case absl::StatusCode::kUnimplemented:
      return 501;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

std::string JsonError(const absl::Status& status) {
  return nlohmann::json{{"code", absl::StatusCodeToString(status.code())},
                        {"message", CappedStatusMessage(status)}}
      .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string ToJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  std::string json;
  // Only fails for messages with Any fields, which the API has none of.
  (void)google::protobuf::util::MessageToJsonString(message, &json, options);
  return json;
}

std::string NdjsonEncoder::Encode(const v1::GenerateImageResponse& event) {
  return absl::StrCat(ToJson(event), "\n");
}

std::string NdjsonEncoder::Finish(const absl::Status& status) {
  if (status.ok()) return "";
  return absl::StrCat(R"({"error":)", JsonError(status), "}\n");
}

absl::StatusOr<absl::Time> RequestDeadline(const HttpExchange& exchange) {
  const std::optional<absl::string_view> header = exchange.header(kTimeoutHeader);
  if (!header.has_value()) return absl::InfiniteFuture();
  double seconds = 0;
  if (!absl::SimpleAtod(*header, &seconds) || !(seconds > 0) || seconds > 1e9) {
    return absl::InvalidArgumentError(absl::StrCat(
        kTimeoutHeader, ": must be a positive number of seconds, got ", QuoteClientValue(*header)));
  }
  return absl::Now() + absl::Seconds(seconds);
}

void ServeGenerateCall(HttpExchange& exchange, const PreparedCall& prepared,
                       std::unique_ptr<EventEncoder> encoder) {
  EventEncoder& answer = *encoder;
  const absl::StatusOr<absl::Time> deadline = RequestDeadline(exchange);
  if (!deadline.ok()) {
    return exchange.Send(answer.ErrorStatus(deadline.status()), "application/json",
                         answer.ErrorBody(deadline.status()));
  }
  auto call = std::make_shared<HttpGenerateCall>(prepared, std::move(encoder));
  if (absl::Status s = call->Start(*deadline); !s.ok()) {
    exchange.Send(answer.ErrorStatus(s), "application/json", answer.ErrorBody(s));
    return;
  }
  call->Serve(exchange);
}

}  // namespace dartserve::server

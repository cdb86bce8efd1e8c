#include "server/http_api.h"

#include <google/protobuf/util/json_util.h>

#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "server/http_stream.h"
#include "server/openai_images.h"
#include "server/validation.h"
#include "server/web_assets.h"

namespace dartserve::server {
namespace {

constexpr char kJson[] = "application/json";

// Protobuf's type names in its messages ("TYPE_UINT32", "type.googleapis.com/dartserve.v1.X") as
// a client knows them ("uint32", "dartserve.v1.X").
std::string TidyDetail(absl::string_view detail) {
  const size_t at = detail.find(" for type ");
  if (at == absl::string_view::npos) return std::string(detail);
  absl::string_view type = detail.substr(at + 10);
  if (absl::ConsumePrefix(&type, "TYPE_")) {
    return absl::StrCat(detail.substr(0, at), " (expected ", absl::AsciiStrToLower(type), ")");
  }
  absl::ConsumePrefix(&type, "type.googleapis.com/");
  return absl::StrCat(detail.substr(0, at), " (expected a ", type, " name)");
}

// Rewrites protobuf 3.21's JSON parse errors so that they start with the field, as every other
// error of the API does. Its forms: "foo: Cannot find field.", "(preview) bogus: Cannot find
// field.", "(num_images): invalid value \"x\" for type TYPE_UINT32", ": invalid value oneof field
// 'condition' is already set. Cannot set 'prompt' for type oneof", ": Root element must be a
// message.", and for text that is not JSON "Unexpected token.\n<text>\n^".
std::string NameTheField(absl::string_view message) {
  absl::string_view rest = message;
  std::string path;
  if (absl::ConsumePrefix(&rest, "(")) {
    const size_t close = rest.find(')');
    if (close != absl::string_view::npos) {
      path = std::string(rest.substr(0, close));
      rest.remove_prefix(close + 1);
    }
  }
  rest = absl::StripLeadingAsciiWhitespace(rest);
  if (absl::ConsumeSuffix(&rest, ": Cannot find field.")) {
    return absl::StrCat(path, path.empty() ? "" : ".", rest, ": unknown field");
  }
  if (absl::ConsumePrefix(&rest, ":")) {
    const absl::string_view detail = absl::StripAsciiWhitespace(rest);
    if (!path.empty()) return absl::StrCat(path, ": ", TidyDetail(detail));
    if (const size_t at = detail.find("Cannot set '"); at != absl::string_view::npos) {
      absl::string_view field = detail.substr(at + 12);
      field = field.substr(0, field.find('\''));
      return absl::StrCat(field, ": only one of prompt and class_id may be set");
    }
    if (absl::StrContains(detail, "Root element")) return "body: must be a JSON object";
    return absl::StrCat("body: ", detail);
  }
  return absl::StrCat("body: not valid JSON: ", message.substr(0, message.find('\n')));
}

}  // namespace

absl::Status ParseJsonBody(absl::string_view body, google::protobuf::Message& message) {
  if (absl::StripAsciiWhitespace(body).empty()) return absl::OkStatus();
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  const auto parsed = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(body.data(), body.size()), &message, options);
  if (parsed.ok()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      NameTheField(absl::string_view(parsed.message().data(), parsed.message().size())));
}

void HttpApi::Handle(HttpExchange& exchange) {
  const std::string& path = exchange.path();
  const std::string& method = exchange.method();
  const auto wrong_method = [&](const char* allowed) {
    exchange.Send(405, kJson,
                  JsonError(absl::UnimplementedError(
                      absl::StrCat("method: ", path, " takes ", allowed, ", not ", method))));
  };
  if (const WebAsset* asset = FindWebAsset(path)) {
    if (method != "GET" && method != "HEAD") return wrong_method("GET");
    exchange.Send(200, asset->content_type,
                  absl::string_view(reinterpret_cast<const char*>(asset->data), asset->size));
    return;
  }
  if (path == "/v1/images:generate") {
    if (method != "POST") return wrong_method("POST");
    return Generate(exchange);
  }
  if (path == "/v1/images/generations") {
    if (method != "POST") return wrong_method("POST");
    return ServeOpenAiImages(exchange, *service_, options_.max_body_bytes);
  }
  if (path == "/v1/models" || path == "/v1/info") {
    if (method != "GET") return wrong_method("GET");
    const absl::Status auth = service_->Authenticate(exchange.header("Authorization"));
    if (path == "/v1/models") {
      v1::ListModelsResponse response;
      if (auth.ok()) service_->DescribeModels(response);
      return Reply(exchange, auth, response);
    }
    v1::GetServerInfoResponse response;
    if (auth.ok()) service_->DescribeServer(response);
    return Reply(exchange, auth, response);
  }
  absl::string_view id = path;
  if (absl::ConsumePrefix(&id, "/v1/requests/") && absl::ConsumeSuffix(&id, ":cancel")) {
    if (method != "POST") return wrong_method("POST");
    return Cancel(exchange, std::string(id));
  }
  exchange.Send(
      404, kJson,
      JsonError(absl::NotFoundError(absl::StrCat("path: no endpoint ", QuoteClientValue(path)))));
}

void HttpApi::Generate(HttpExchange& exchange) {
  const std::optional<absl::string_view> authorization = exchange.header("Authorization");
  // An unauthenticated client learns nothing about its body.
  if (absl::Status s = service_->Authenticate(authorization); !s.ok()) {
    return exchange.Send(HttpStatusFor(s.code()), kJson, JsonError(s));
  }
  absl::StatusOr<std::string> body = exchange.ReadBody(options_.max_body_bytes);
  v1::GenerateImageRequest request;
  absl::Status parsed = body.ok() ? ParseJsonBody(*body, request) : body.status();
  if (!parsed.ok()) return exchange.Send(400, kJson, JsonError(parsed));
  absl::StatusOr<PreparedCall> prepared = service_->PrepareGenerate(authorization, request);
  if (!prepared.ok()) {
    return exchange.Send(HttpStatusFor(prepared.status().code()), kJson,
                         JsonError(prepared.status()));
  }
  ServeGenerateCall(exchange, *prepared, std::make_unique<NdjsonEncoder>());
}

void HttpApi::Cancel(HttpExchange& exchange, const std::string& request_id) {
  absl::Status status = service_->Authenticate(exchange.header("Authorization"));
  if (status.ok()) status = service_->Cancel(request_id);
  Reply(exchange, status, v1::CancelGenerationResponse());
}

void HttpApi::Reply(HttpExchange& exchange, const absl::Status& status,
                    const google::protobuf::Message& message) {
  if (!status.ok()) return exchange.Send(HttpStatusFor(status.code()), kJson, JsonError(status));
  exchange.Send(200, kJson, ToJson(message));
}

}  // namespace dartserve::server

#include "client/prometheus_scrape.h"

#include <civetweb.h>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace dartserve::client {
namespace {

constexpr int kHttpTimeoutMs = 10000;

void InitCivetwebOnce() {
  // Reference-counted process-wide state, shared with any civetweb server in the process (the
  // metrics endpoint's, in tests); never torn down. The return value (initialised features) is 0
  // for MG_FEATURES_DEFAULT, so it is not checked.
  static const bool initialized = [] {
    mg_init_library(MG_FEATURES_DEFAULT);
    return true;
  }();
  (void)initialized;
}

absl::Status HttpStatusToError(int code, absl::string_view message) {
  switch (code) {
    case 400:
      return absl::InvalidArgumentError(message);
    case 404:
      return absl::NotFoundError(message);
    case 503:
      return absl::UnavailableError(message);
    default:
      return absl::UnknownError(message);
  }
}

}  // namespace

absl::StatusOr<std::string> HttpGet(const std::string& host, int port,
                                    const std::string& path_and_query) {
  InitCivetwebOnce();
  const std::string url = absl::StrCat("http://", host, ":", port, path_and_query);
  char error[256] = {0};
  mg_connection* connection = mg_connect_client(host.c_str(), port, 0, error, sizeof(error));
  if (connection == nullptr) {
    return absl::UnavailableError(absl::StrCat("GET ", url, ": cannot connect: ", error));
  }
  // HTTP/1.0 so that the server closes the connection after the body and never sends chunks.
  mg_printf(connection, "GET %s HTTP/1.0\r\nHost: %s:%d\r\n\r\n", path_and_query.c_str(),
            host.c_str(), port);
  if (mg_get_response(connection, error, sizeof(error), kHttpTimeoutMs) < 0) {
    mg_close_connection(connection);
    return absl::UnavailableError(absl::StrCat("GET ", url, ": no response: ", error));
  }
  const mg_response_info* response = mg_get_response_info(connection);
  const int code = response->status_code;
  const long long content_length = response->content_length;
  std::string body;
  char buffer[8192];
  int read = 0;
  while ((read = mg_read(connection, buffer, sizeof(buffer))) > 0) body.append(buffer, read);
  mg_close_connection(connection);
  // Without a Content-Length the body ends when the server closes the connection, which
  // civetweb's client reports as -1 rather than 0; with one, the body must be complete.
  if (content_length >= 0 && body.size() != static_cast<size_t>(content_length)) {
    return absl::UnavailableError(
        absl::StrCat("GET ", url, ": read ", body.size(), " of ", content_length, " bytes"));
  }
  if (code != 200) {
    return HttpStatusToError(code, absl::StrCat("GET ", url, ": HTTP ", code, ": ", body));
  }
  return body;
}

std::optional<double> SampleValue(absl::string_view exposition, absl::string_view series) {
  for (absl::string_view line : absl::StrSplit(exposition, '\n')) {
    // A sample line is `series value [timestamp]`; comments start with '#' and never match.
    if (!absl::ConsumePrefix(&line, series) || !absl::ConsumePrefix(&line, " ")) continue;
    double value = 0;
    if (absl::SimpleAtod(line.substr(0, line.find(' ')), &value)) return value;
    return std::nullopt;
  }
  return std::nullopt;
}

absl::StatusOr<double> ScrapeSample(absl::string_view address, absl::string_view series) {
  const size_t colon = address.rfind(':');
  int port = 0;
  if (colon == absl::string_view::npos || colon == 0 ||
      !absl::SimpleAtoi(address.substr(colon + 1), &port) || port <= 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics address '", address, "' is not host:port"));
  }
  absl::StatusOr<std::string> body =
      HttpGet(std::string(address.substr(0, colon)), port, "/metrics");
  if (!body.ok()) return body.status();
  const std::optional<double> value = SampleValue(*body, series);
  if (!value) {
    return absl::NotFoundError(absl::StrCat("http://", address, "/metrics has no ", series));
  }
  return *value;
}

}  // namespace dartserve::client

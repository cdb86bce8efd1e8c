#include "tests/server/http_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace dartserve::server {
namespace {

constexpr int kReadTimeoutSeconds = 60;

}  // namespace

HttpClient::HttpClient(int port) {
  fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) return;
  timeval timeout = {.tv_sec = kReadTimeoutSeconds, .tv_usec = 0};
  setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  sockaddr_in target = {};
  target.sin_family = AF_INET;
  target.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &target.sin_addr);
  if (connect(fd_, reinterpret_cast<const sockaddr*>(&target), sizeof(target)) != 0) Close();
}

void HttpClient::Close() {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
}

bool HttpClient::Send(const std::string& method, const std::string& path, const std::string& body,
                      const std::vector<std::string>& headers) {
  std::string request = absl::StrCat(method, " ", path, " HTTP/1.1\r\nHost: localhost\r\n");
  for (const std::string& h : headers) absl::StrAppend(&request, h, "\r\n");
  if (!body.empty() || method == "POST") {
    absl::StrAppend(&request, "Content-Length: ", body.size(), "\r\n");
  }
  absl::StrAppend(&request, "Connection: close\r\n\r\n", body);
  size_t sent = 0;
  while (sent < request.size()) {
    const ssize_t n = send(fd_, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
  }
  return true;
}

bool HttpClient::Fill() {
  if (fd_ < 0) return false;
  char buffer[65536];
  const ssize_t n = recv(fd_, buffer, sizeof(buffer), 0);
  if (n <= 0) return false;
  raw_.append(buffer, static_cast<size_t>(n));
  return true;
}

int HttpClient::ReadHead() {
  size_t end;
  while ((end = raw_.find("\r\n\r\n")) == std::string::npos) {
    if (!Fill()) return 0;
  }
  const std::vector<std::string> lines = absl::StrSplit(raw_.substr(0, end), "\r\n");
  raw_.erase(0, end + 4);
  int status = 0;
  const std::vector<std::string> first = absl::StrSplit(lines[0], ' ');
  if (first.size() < 2 || !absl::SimpleAtoi(first[1], &status)) return 0;
  for (size_t i = 1; i < lines.size(); ++i) {
    const size_t colon = lines[i].find(':');
    if (colon == std::string::npos) continue;
    headers_[absl::AsciiStrToLower(lines[i].substr(0, colon))] =
        std::string(absl::StripAsciiWhitespace(lines[i].substr(colon + 1)));
  }
  chunked_ = absl::AsciiStrToLower(header("transfer-encoding")) == "chunked";
  if (!chunked_ && !header("content-length").empty()) {
    absl::SimpleAtoi(header("content-length"), &remaining_);
  }
  return status;
}

std::string HttpClient::header(const std::string& lower_name) const {
  auto it = headers_.find(lower_name);
  return it == headers_.end() ? "" : it->second;
}

bool HttpClient::FillBody() {
  if (body_done_) return false;
  if (chunked_) {
    size_t eol;
    while ((eol = raw_.find("\r\n")) == std::string::npos) {
      if (!Fill()) return body_done_ = true, false;
    }
    const size_t size = std::strtoul(raw_.substr(0, eol).c_str(), nullptr, 16);
    while (raw_.size() < eol + 2 + size + 2) {
      if (!Fill()) return body_done_ = true, false;
    }
    body_.append(raw_, eol + 2, size);
    raw_.erase(0, eol + 2 + size + 2);
    if (size == 0) body_done_ = true;
    return size > 0;
  }
  if (remaining_ == 0) return body_done_ = true, false;
  if (raw_.empty() && !Fill()) return body_done_ = true, false;
  const size_t take =
      remaining_ < 0 ? raw_.size() : std::min<size_t>(raw_.size(), static_cast<size_t>(remaining_));
  body_.append(raw_, 0, take);
  raw_.erase(0, take);
  if (remaining_ > 0) remaining_ -= static_cast<long long>(take);
  return true;
}

std::optional<std::string> HttpClient::ReadLine() {
  size_t eol;
  while ((eol = body_.find('\n')) == std::string::npos) {
    if (!FillBody()) {
      if (body_.empty()) return std::nullopt;
      return std::exchange(body_, "");
    }
  }
  std::string line = body_.substr(0, eol);
  body_.erase(0, eol + 1);
  return line;
}

std::string HttpClient::ReadBody() {
  while (FillBody()) {
  }
  return std::exchange(body_, "");
}

HttpResult HttpRequest(int port, const std::string& method, const std::string& path,
                       const std::string& body, const std::vector<std::string>& headers) {
  HttpClient client(port);
  HttpResult result;
  if (!client.connected()) return result;
  // A server may answer (an error) before it has read the whole body; read the answer anyway.
  client.Send(method, path, body, headers);
  result.status = client.ReadHead();
  result.content_type = client.header("content-type");
  result.body = client.ReadBody();
  return result;
}

}  // namespace dartserve::server

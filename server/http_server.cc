#include "server/http_server.h"

#include <arpa/inet.h>
#include <civetweb.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/civetweb_util.h"
#include "server/tls_shims.h"

namespace dartserve::server {
namespace {

// civetweb reads a TLS certificate and key only from one file; it is written privately (0600)
// for mg_start and removed right after.
class TlsFile {
 public:
  ~TlsFile() {
    if (!path_.empty()) unlink(path_.c_str());
  }
  absl::Status Write(const std::string& cert_pem, const std::string& key_pem) {
    char path[] = "/tmp/dartserve-http-tls-XXXXXX";
    const int fd = mkstemp(path);  // created 0600
    if (fd < 0) return absl::InternalError("tls: cannot create a temporary file");
    path_ = path;
    const std::string pem = absl::StrCat(cert_pem, "\n", key_pem, "\n");
    const bool ok = write(fd, pem.data(), pem.size()) == static_cast<ssize_t>(pem.size());
    close(fd);
    return ok ? absl::OkStatus() : absl::InternalError("tls: cannot write a temporary file");
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace

HttpExchange::HttpExchange(mg_connection* connection) : connection_(connection) {
  const mg_request_info* info = mg_get_request_info(connection);
  method_ = info->request_method != nullptr ? info->request_method : "";
  path_ = info->local_uri != nullptr ? info->local_uri : "";
  query_ = info->query_string != nullptr ? info->query_string : "";
}

std::optional<absl::string_view> HttpExchange::header(const char* name) const {
  const char* value = mg_get_header(connection_, name);
  if (value == nullptr) return std::nullopt;
  return absl::string_view(value);
}

absl::StatusOr<std::string> HttpExchange::ReadBody(size_t limit) {
  const long long declared = mg_get_request_info(connection_)->content_length;
  char buffer[16384];
  const auto too_large = [&] {
    // The unread rest of the body must not be taken for the next request.
    mg_disable_connection_keep_alive(connection_);
    // Closing a socket with unread input makes the kernel send a reset, which can destroy the
    // error response before the client reads it. So read and drop a moderately oversized body
    // (up to 4x the limit) and only cut off a client that sends more.
    const size_t drain_limit = 4 * limit;
    if (declared <= static_cast<long long>(drain_limit)) {
      for (size_t drained = 0; drained <= drain_limit;) {
        const int n = mg_read(connection_, buffer, sizeof(buffer));
        if (n <= 0) break;
        drained += static_cast<size_t>(n);
      }
    }
    return absl::InvalidArgumentError(
        absl::StrCat("body: larger than the limit of ", limit, " bytes"));
  };
  if (declared > static_cast<long long>(limit)) return too_large();
  std::string body;
  while (true) {
    const int n = mg_read(connection_, buffer, sizeof(buffer));
    if (n < 0) return absl::InvalidArgumentError("body: could not be read");
    if (n == 0) break;
    body.append(buffer, static_cast<size_t>(n));
    if (body.size() > limit) return too_large();
  }
  return body;
}

void HttpExchange::Send(int status, absl::string_view content_type, absl::string_view body) {
  responded_ = true;
  const std::string length = absl::StrCat(body.size());
  mg_response_header_start(connection_, status);
  mg_response_header_add(connection_, "Content-Type", content_type.data(),
                         static_cast<int>(content_type.size()));
  mg_response_header_add(connection_, "Content-Length", length.c_str(), -1);
  mg_response_header_add(connection_, "Cache-Control", "no-store", -1);
  mg_response_header_send(connection_);
  // A HEAD response has the GET response's headers and no body.
  if (!body.empty() && method_ != "HEAD") mg_write(connection_, body.data(), body.size());
}

bool HttpExchange::StartStream(int status, absl::string_view content_type) {
  responded_ = true;
  mg_response_header_start(connection_, status);
  mg_response_header_add(connection_, "Content-Type", content_type.data(),
                         static_cast<int>(content_type.size()));
  mg_response_header_add(connection_, "Transfer-Encoding", "chunked", -1);
  mg_response_header_add(connection_, "Cache-Control", "no-store", -1);
  // Proxies that buffer responses (nginx) would hold the events back.
  mg_response_header_add(connection_, "X-Accel-Buffering", "no", -1);
  return mg_response_header_send(connection_) == 0;
}

bool HttpExchange::WriteChunk(absl::string_view bytes) {
  if (bytes.empty()) return true;  // an empty chunk would end the body
  return mg_send_chunk(connection_, bytes.data(), static_cast<unsigned int>(bytes.size())) > 0;
}

bool HttpExchange::EndStream() {
  static constexpr char kLastChunk[] = "0\r\n\r\n";
  return mg_write(connection_, kLastChunk, sizeof(kLastChunk) - 1) > 0;
}

int HttpExchange::Socket() {
  if (socket_.has_value()) return *socket_;
  socket_ = -1;
  const mg_request_info* info = mg_get_request_info(connection_);
  in_addr remote;
  if (inet_pton(AF_INET, info->remote_addr, &remote) != 1) return -1;
  DIR* fds = opendir("/proc/self/fd");
  if (fds == nullptr) return -1;
  // The connection is the socket whose peer is the client's address and port and whose own port
  // is the one the request came in on; it stays open while this handler runs.
  while (const dirent* entry = readdir(fds)) {
    int fd;
    if (!absl::SimpleAtoi(entry->d_name, &fd)) continue;
    sockaddr_in peer = {}, local = {};
    socklen_t peer_size = sizeof(peer), local_size = sizeof(local);
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_size) != 0 ||
        peer.sin_family != AF_INET || peer.sin_addr.s_addr != remote.s_addr ||
        ntohs(peer.sin_port) != info->remote_port) {
      continue;
    }
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_size) == 0 &&
        ntohs(local.sin_port) == info->server_port) {
      socket_ = fd;
      break;
    }
  }
  closedir(fds);
  return *socket_;
}

bool HttpExchange::ClientClosed() {
  const int fd = Socket();
  if (fd < 0) return false;
  pollfd p = {.fd = fd, .events = POLLRDHUP, .revents = 0};
  return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const HttpServerOptions& options,
                                                              Handler handler) {
  absl::StatusOr<ListenAddress> parsed = ParseListenAddress(options.address, "HTTP address");
  if (!parsed.ok()) return parsed.status();
  const bool tls = !options.tls_cert_pem.empty() || !options.tls_key_pem.empty();
  TlsFile tls_file;
  if (tls) {
    if (options.tls_cert_pem.empty() || options.tls_key_pem.empty()) {
      return absl::InvalidArgumentError("tls: both a certificate and a key are needed");
    }
    if (absl::Status s = tls_file.Write(options.tls_cert_pem, options.tls_key_pem); !s.ok()) {
      return s;
    }
    if (absl::Status s = LoadTlsShims(); !s.ok()) return s;
  }
  const std::string ports = absl::StrCat(parsed->host, ":", parsed->port, tls ? "s" : "");
  const std::string threads = absl::StrCat(options.threads);
  const std::string timeout = absl::StrCat(options.io_timeout_ms);
  std::vector<const char*> civet_options = {
      "listening_ports", ports.c_str(), "num_threads", threads.c_str(), "request_timeout_ms",
      timeout.c_str(), "enable_keep_alive", "yes",
      // Events are small writes that must leave at once, not wait for Nagle's algorithm.
      "tcp_nodelay", "1"};
  if (tls) {
    civet_options.insert(civet_options.end(), {"ssl_certificate", tls_file.path().c_str()});
  }
  civet_options.push_back(nullptr);

  std::unique_ptr<HttpServer> server(new HttpServer(std::move(handler)));
  mg_callbacks callbacks = {};
  callbacks.begin_request = &HttpServer::OnRequest;
  callbacks.log_message = &CaptureCivetwebLog;
  {
    CivetwebStartScope scope;
    server->context_ = mg_start(&callbacks, server.get(), civet_options.data());
    if (server->context_ == nullptr) {
      return absl::UnavailableError(absl::StrCat(
          "cannot serve HTTP on ", options.address, ": ",
          scope.log().empty() ? "civetweb did not start" : absl::StrJoin(scope.log(), "; ")));
    }
  }
  mg_server_port bound[1] = {};
  if (mg_get_server_ports(server->context_, 1, bound) < 1 || bound[0].port <= 0) {
    return absl::InternalError(
        absl::StrCat("HTTP on ", options.address, ": civetweb did not report its port"));
  }
  server->port_ = bound[0].port;
  server->wake_ip_ = parsed->LoopbackReachableIp();
  return server;
}

HttpServer::~HttpServer() {
  if (context_ == nullptr) return;
  StopCivetweb(wake_ip_, port_, [this] { mg_stop(context_); });
}

int HttpServer::OnRequest(mg_connection* connection) {
  auto* server = static_cast<HttpServer*>(mg_get_user_data(mg_get_context(connection)));
  HttpExchange exchange(connection);
  server->handler_(exchange);
  if (!exchange.responded()) {
    exchange.Send(500, "application/json",
                  R"({"code":"INTERNAL","message":"the request was not answered"})");
  }
  return 1;  // handled (civetweb logs it as such)
}

}  // namespace dartserve::server

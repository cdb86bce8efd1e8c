// A small HTTP/1.1 server on civetweb (the library under the metrics endpoint): one handler for
// every request, run on a civetweb worker thread, with what the JSON API needs on top of civetweb's
// C API: bodies with a size limit, whole responses, chunked streams flushed per write, and a check
// for a client that has gone away while its stream waits.
//
// Threads: civetweb runs `threads` workers; each request holds one for as long as its handler
// runs (a streamed generation, for its whole length), so `threads` bounds the requests served at
// once; more wait in civetweb's accept queue.
#ifndef DARTSERVE_SERVER_HTTP_SERVER_H_
#define DARTSERVE_SERVER_HTTP_SERVER_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

struct mg_connection;
struct mg_context;

namespace dartserve::server {

// One request and its response, on the handler's thread only (not thread-safe). Send, or
// StartStream followed by WriteChunk calls and EndStream, answers it once; the write calls
// return false once the client can no longer be written to (it disconnected, or stopped reading
// for the server's write timeout).
class HttpExchange {
 public:
  explicit HttpExchange(mg_connection* connection);

  const std::string& method() const { return method_; }
  // The URL-decoded path, without the query.
  const std::string& path() const { return path_; }
  const std::string& query() const { return query_; }
  // A request header's value, nullopt when absent.
  std::optional<absl::string_view> header(const char* name) const;

  // The whole request body. INVALID_ARGUMENT "body: ..." when it is longer than `limit` bytes
  // or cannot be read. The rest of a body up to 4x `limit` is read and dropped, so that the
  // error response reaches the client; a longer one is cut off.
  absl::StatusOr<std::string> ReadBody(size_t limit);

  void Send(int status, absl::string_view content_type, absl::string_view body);
  bool StartStream(int status, absl::string_view content_type);
  bool WriteChunk(absl::string_view bytes);
  bool EndStream();
  bool responded() const { return responded_; }

  // Whether the client has closed the connection (checked without blocking). A stream that waits
  // for its next event polls this, since civetweb only notices a closed connection on a write.
  bool ClientClosed();

 private:
  // The connection's socket, found once by its addresses (civetweb 1.15 does not expose it); -1
  // when not found.
  int Socket();

  mg_connection* const connection_;
  std::string method_, path_, query_;
  bool responded_ = false;
  std::optional<int> socket_;
};

struct HttpServerOptions {
  std::string address = "0.0.0.0:8080";  // "<IPv4>:<port>" or "localhost:<port>"; port 0 picks
  int threads = 64;                      // concurrent requests (streams hold one each)
  // TLS: both PEM strings set -> HTTPS only; both empty -> plain HTTP.
  std::string tls_cert_pem;
  std::string tls_key_pem;
  // A socket read or write that makes no progress for this long fails (a stalled client).
  int io_timeout_ms = 30000;
};

class HttpServer {
 public:
  using Handler = std::function<void(HttpExchange&)>;

  // Starts listening and serving `handler` (which must answer every request; one that does not is
  // answered 500). INVALID_ARGUMENT for a malformed address or half a TLS pair; UNAVAILABLE
  // "cannot serve HTTP on ADDRESS: REASON" when civetweb cannot listen or start.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const HttpServerOptions& options,
                                                           Handler handler);
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;
  // Stops accepting and waits for every handler to return.
  ~HttpServer();

  int port() const { return port_; }

 private:
  explicit HttpServer(Handler handler) : handler_(std::move(handler)) {}
  static int OnRequest(mg_connection* connection);

  const Handler handler_;
  mg_context* context_ = nullptr;
  int port_ = 0;
  uint32_t wake_ip_ = 0;
};

}  // namespace dartserve::server

#endif  // DARTSERVE_SERVER_HTTP_SERVER_H_

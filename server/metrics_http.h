// The metrics endpoint: serves a Registry's exposition over HTTP on its own port (DESIGN.md §5).
//
// GET (or HEAD) /metrics answers 200 with Content-Type "text/plain; version=0.0.4" and the output
// of Registry::Serialize(); every other path answers 404, other methods on /metrics 405. No
// files are served. Requests run on civetweb's own threads (two workers), so a scrape never
// blocks the gRPC server's threads; Serialize() is thread-safe and runs the registry's collect
// hooks on one of those threads.
//
// Process-wide effects, both from civetweb 1.15 as packaged by Debian (see metrics_http.cc):
//  - the process ignores SIGPIPE from the first Start on (as gRPC servers do anyway);
//  - this library defines pthread_attr_setstacksize, forwarding to glibc except inside
//    civetweb's start-up, whose fixed 100 KiB thread stacks cannot hold LibTorch's static TLS.
#ifndef DARTSERVE_SERVER_METRICS_HTTP_H_
#define DARTSERVE_SERVER_METRICS_HTTP_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/metrics.h"

struct mg_connection;
struct mg_context;

namespace dartserve::metrics {

// Serves GET /metrics (text/plain; version=0.0.4) from a Registry with civetweb, on its own
// threads.
class MetricsHttpServer {
 public:
  // `address` is "<IPv4 address>:<port>" ("0.0.0.0:9464", "127.0.0.1:0") or "localhost:<port>";
  // port 0 picks an ephemeral port, which port() reports. INVALID_ARGUMENT for a malformed
  // address; UNAVAILABLE naming the address when it cannot listen (port in use, address not
  // local). `registry` must outlive the server.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(Registry* registry,
                                                                  const std::string& address);

  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;
  // Stops serving: waits for requests in flight, then closes the listening socket. Takes
  // milliseconds (see the definition for how civetweb's 2 s stop latency is avoided).
  ~MetricsHttpServer();

  // The port actually listened on (the ephemeral one when started with port 0).
  int port() const { return port_; }

 private:
  explicit MetricsHttpServer(Registry* registry) : registry_(registry) {}

  // civetweb's request handler; `cbdata` is the server.
  static int HandleRequest(mg_connection* connection, void* cbdata);

  Registry* const registry_;
  mg_context* context_ = nullptr;
  int port_ = 0;
  // IPv4 address (network byte order) the destructor connects to, to wake civetweb up.
  uint32_t wake_ip_ = 0;
};

}  // namespace dartserve::metrics

#endif  // DARTSERVE_SERVER_METRICS_HTTP_H_

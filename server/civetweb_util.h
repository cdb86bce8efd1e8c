// What every civetweb server in the process shares (the metrics endpoint's prometheus::Exposer
// and the HTTP front end, server/http_server.h): listen-address checking, a start-up scope that
// works around Debian's civetweb packaging and captures its errors, and a fast stop.
#ifndef DARTSERVE_SERVER_CIVETWEB_UTIL_H_
#define DARTSERVE_SERVER_CIVETWEB_UTIL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

struct mg_connection;

namespace dartserve::server {

// A validated listening address.
struct ListenAddress {
  std::string host;  // an IPv4 literal ("localhost" becomes 127.0.0.1)
  int port = 0;      // 0: the kernel picks one
  // IPv4 address (network byte order) where this machine reaches the listener: `host`, or
  // loopback for 0.0.0.0.
  uint32_t LoopbackReachableIp() const;
};

// civetweb's own parser of "listening_ports" is lenient in surprising ways (in 1.15,
// "999.1.1.1:0" binds 231.1.1.1), so addresses are checked here: "<IPv4 address>:<port>" (Debian's
// civetweb has no IPv6) or "localhost:<port>". INVALID_ARGUMENT starting with `what` ("metrics
// address") otherwise.
absl::StatusOr<ListenAddress> ParseListenAddress(absl::string_view address, absl::string_view what);

// Lives on the thread that calls mg_start (directly or in prometheus::Exposer's constructor),
// around that call. Meanwhile civetweb's threads get glibc's default stack size instead of the
// packaged 100 KiB (see pthread_attr_setstacksize in civetweb_util.cc), and the messages civetweb
// logs through CaptureCivetwebLog are kept, to explain a failed start. One per thread at a time.
class CivetwebStartScope {
 public:
  CivetwebStartScope();
  ~CivetwebStartScope();
  CivetwebStartScope(const CivetwebStartScope&) = delete;
  CivetwebStartScope& operator=(const CivetwebStartScope&) = delete;

  const std::vector<std::string>& log() const { return log_; }

 private:
  std::vector<std::string> log_;
};

// A civetweb log_message callback: inside a CivetwebStartScope on this thread, keeps the message
// and returns 1 (handled); elsewhere returns 0 (civetweb's default: no log file, dropped).
int CaptureCivetwebLog(const mg_connection* connection, const char* message);

// Runs `stop` (which stops a civetweb server listening on `ip`:`port`, waiting for its threads)
// quickly: civetweb's master thread (1.15) polls its listening socket in 2-second quanta and
// checks the stop flag only between them, so a connection is opened and closed every few
// milliseconds until `stop` returns, which wakes it up.
void StopCivetweb(uint32_t ip, int port, absl::FunctionRef<void()> stop);

// Whether a CivetwebStartScope is alive on this thread (for the interposed
// pthread_attr_setstacksize).
bool StartingCivetwebOnThisThread();

}  // namespace dartserve::server

#endif  // DARTSERVE_SERVER_CIVETWEB_UTIL_H_

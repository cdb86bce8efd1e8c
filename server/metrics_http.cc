#include "server/metrics_http.h"

#include <arpa/inet.h>
#include <civetweb.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace dartserve::metrics {
namespace {

// True while this thread is inside mg_start2, which is where civetweb 1.15 creates all of its
// threads (master and workers); see pthread_attr_setstacksize below.
thread_local bool starting_civetweb = false;

constexpr char kContentType[] = "text/plain; version=0.0.4; charset=utf-8";

// civetweb keeps a reference-counted global state; it is initialised once per process and never
// torn down, because other users of civetweb in the process (tests' HTTP clients) share it.
void InitCivetwebOnce() {
  static const bool initialized = [] {
    // The return value is the set of features initialised, which is 0 for MG_FEATURES_DEFAULT
    // (civetweb 1.15), so it cannot signal failure here; mg_start2 reports any real problem.
    mg_init_library(MG_FEATURES_DEFAULT);
    return true;
  }();
  (void)initialized;
}

// A validated listening address.
struct ListenAddress {
  std::string host;  // an IPv4 literal
  int port = 0;
};

// civetweb's own parser of "listening_ports" is lenient in surprising ways (in 1.15,
// "999.1.1.1:0" binds 231.1.1.1), so the address is checked here: an IPv4 literal (this civetweb
// build has no IPv6) or "localhost", and a port.
absl::StatusOr<ListenAddress> ParseAddress(absl::string_view address) {
  const size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics address \"", address, "\" is not <IPv4 address>:<port>"));
  }
  ListenAddress parsed;
  parsed.host = std::string(address.substr(0, colon));
  const absl::string_view port_text = address.substr(colon + 1);
  const bool port_ok =
      !port_text.empty() && port_text.find_first_not_of("0123456789") == absl::string_view::npos &&
      absl::SimpleAtoi(port_text, &parsed.port) && parsed.port >= 0 && parsed.port <= 65535;
  if (!port_ok) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics address \"", address, "\": port must be a number in [0, 65535]"));
  }
  if (parsed.host == "localhost") parsed.host = "127.0.0.1";
  in_addr ip;
  if (inet_pton(AF_INET, parsed.host.c_str(), &ip) != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "metrics address \"", address, "\": host must be an IPv4 address or localhost"));
  }
  return parsed;
}

// Opens and closes a TCP connection to `ip`:`port`, which wakes civetweb's master thread from
// its poll() on the listening socket. Errors are irrelevant: the next attempt retries.
void Poke(uint32_t ip, int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  sockaddr_in target = {};
  target.sin_family = AF_INET;
  target.sin_addr.s_addr = ip;
  target.sin_port = htons(static_cast<uint16_t>(port));
  (void)connect(fd, reinterpret_cast<const sockaddr*>(&target), sizeof(target));
  close(fd);
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(
    Registry* registry, const std::string& address) {
  absl::StatusOr<ListenAddress> parsed = ParseAddress(address);
  if (!parsed.ok()) return parsed.status();
  const std::string listening_ports = absl::StrCat(parsed->host, ":", parsed->port);
  InitCivetwebOnce();

  std::unique_ptr<MetricsHttpServer> server(new MetricsHttpServer(registry));
  const char* options[] = {
      "listening_ports", listening_ports.c_str(),
      // Scrapes are rare and cheap: two workers suffice and keep the thread count small.
      "num_threads", "2",
      // A stalled client cannot hold a worker for long.
      "request_timeout_ms", "10000", nullptr};
  mg_callbacks callbacks;
  std::memset(&callbacks, 0, sizeof(callbacks));
  mg_init_data init = {
      .callbacks = &callbacks, .user_data = server.get(), .configuration_options = options};
  char error_text[256] = {0};
  unsigned error_code = 0;
  mg_error_data error = {
      .code = &error_code, .text = error_text, .text_buffer_size = sizeof(error_text)};
  starting_civetweb = true;
  server->context_ = mg_start2(&init, &error);
  starting_civetweb = false;
  if (server->context_ == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", address, ": ", error_text));
  }
  mg_set_request_handler(server->context_, "/", &MetricsHttpServer::HandleRequest, server.get());

  // civetweb 1.15 reads the bound address back after bind() (getsockname), so for port 0 this
  // reports the ephemeral port the kernel chose; tests rely on that.
  mg_server_port ports[4];
  const int num_ports = mg_get_server_ports(server->context_, 4, ports);
  if (num_ports < 1 || ports[0].port <= 0) {
    return absl::InternalError(
        absl::StrCat("metrics server on ", address, ": civetweb did not report its port"));
  }
  server->port_ = ports[0].port;
  // A server on every interface is reachable on loopback, which is where the destructor pokes it.
  const std::string wake_host = parsed->host == "0.0.0.0" ? "127.0.0.1" : parsed->host;
  in_addr wake_ip;
  inet_pton(AF_INET, wake_host.c_str(), &wake_ip);
  server->wake_ip_ = wake_ip.s_addr;
  return server;
}

MetricsHttpServer::~MetricsHttpServer() {
  if (context_ == nullptr) return;
  // civetweb 1.15's master thread polls its listening socket in 2-second quanta and checks the
  // stop flag only between them, so a bare mg_stop takes up to 2 s. A connection wakes it up;
  // as one that arrives before mg_stop sets the flag is just served (and closed), the poke is
  // repeated every few milliseconds until mg_stop returns.
  absl::Mutex mu;
  bool stopped = false;
  std::thread waker([&] {
    absl::MutexLock lock(&mu);
    while (!mu.AwaitWithTimeout(absl::Condition(&stopped), absl::Milliseconds(5))) {
      Poke(wake_ip_, port_);
    }
  });
  mg_stop(context_);
  {
    absl::MutexLock lock(&mu);
    stopped = true;
  }
  waker.join();
}

int MetricsHttpServer::HandleRequest(mg_connection* connection, void* cbdata) {
  const auto* server = static_cast<const MetricsHttpServer*>(cbdata);
  const mg_request_info* request = mg_get_request_info(connection);
  const absl::string_view path = request->local_uri != nullptr ? request->local_uri : "";
  if (path != "/metrics") {
    mg_send_http_error(connection, 404, "Not found: this server only serves /metrics\n");
    return 404;
  }
  const absl::string_view method = request->request_method;
  const bool head = method == "HEAD";
  if (method != "GET" && !head) {
    mg_send_http_error(connection, 405, "Method not allowed: use GET /metrics\n");
    return 405;
  }
  const std::string body = server->registry_->Serialize();
  mg_send_http_ok(connection, kContentType, static_cast<long long>(body.size()));
  if (!head) mg_write(connection, body.data(), body.size());
  return 200;
}

}  // namespace dartserve::metrics

// Debian builds civetweb 1.15 with a fixed 100 KiB thread stack (USE_STACK_SIZE=102400). glibc
// places a thread's static TLS on its stack, and a process that links LibTorch (OpenBLAS, glog:
// about 108 KiB of static TLS) needs more than that, so every civetweb pthread_create fails with
// EINVAL ("Cannot create first worker thread") in the server and in its tests. The stack size is
// a compile-time choice of the package, so the call is intercepted instead: while this thread is
// inside mg_start2, the request is ignored and civetweb's threads get glibc's default stack size,
// like any std::thread. Every other caller in the process goes straight to glibc.
extern "C" int pthread_attr_setstacksize(pthread_attr_t* attr, size_t stack_size) noexcept {
  if (dartserve::metrics::starting_civetweb) return 0;
  using SetStackSize = int (*)(pthread_attr_t*, size_t);
  static const auto glibc_set_stack_size =
      reinterpret_cast<SetStackSize>(dlsym(RTLD_NEXT, "pthread_attr_setstacksize"));
  if (glibc_set_stack_size == nullptr) return ENOSYS;
  return glibc_set_stack_size(attr, stack_size);
}

#include "server/civetweb_util.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace dartserve::server {
namespace {

// The CivetwebStartScope alive on this thread, if any.
thread_local CivetwebStartScope* start_scope = nullptr;
// Its log, which CaptureCivetwebLog appends to.
thread_local std::vector<std::string>* start_log = nullptr;

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

bool StartingCivetwebOnThisThread() { return start_scope != nullptr; }

uint32_t ListenAddress::LoopbackReachableIp() const {
  in_addr ip;
  inet_pton(AF_INET, host == "0.0.0.0" ? "127.0.0.1" : host.c_str(), &ip);
  return ip.s_addr;
}

absl::StatusOr<ListenAddress> ParseListenAddress(absl::string_view address,
                                                 absl::string_view what) {
  const size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " \"", address, "\" is not <IPv4 address>:<port>"));
  }
  ListenAddress parsed;
  parsed.host = std::string(address.substr(0, colon));
  const absl::string_view port_text = address.substr(colon + 1);
  const bool port_ok =
      !port_text.empty() && port_text.find_first_not_of("0123456789") == absl::string_view::npos &&
      absl::SimpleAtoi(port_text, &parsed.port) && parsed.port >= 0 && parsed.port <= 65535;
  if (!port_ok) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " \"", address, "\": port must be a number in [0, 65535]"));
  }
  if (parsed.host == "localhost") parsed.host = "127.0.0.1";
  in_addr ip;
  if (inet_pton(AF_INET, parsed.host.c_str(), &ip) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " \"", address, "\": host must be an IPv4 address or localhost"));
  }
  return parsed;
}

CivetwebStartScope::CivetwebStartScope() {
  start_scope = this;
  start_log = &log_;
}

CivetwebStartScope::~CivetwebStartScope() {
  start_scope = nullptr;
  start_log = nullptr;
}

int CaptureCivetwebLog(const mg_connection* /*connection*/, const char* message) {
  if (start_log == nullptr) return 0;
  start_log->emplace_back(message);
  return 1;
}

void StopCivetweb(uint32_t ip, int port, absl::FunctionRef<void()> stop) {
  // A connection that arrives before the stop flag is set is just served (and closed), so the
  // poke is repeated until `stop` has returned.
  absl::Mutex mu;
  bool stopped = false;
  std::thread waker([&] {
    absl::MutexLock lock(&mu);
    while (!mu.AwaitWithTimeout(absl::Condition(&stopped), absl::Milliseconds(5))) {
      Poke(ip, port);
    }
  });
  stop();
  {
    absl::MutexLock lock(&mu);
    stopped = true;
  }
  waker.join();
}

}  // namespace dartserve::server

// Debian builds civetweb (1.15) with a fixed 100 KiB thread stack (USE_STACK_SIZE=102400). glibc
// places a thread's static TLS on its stack, and a process that links LibTorch (OpenBLAS, glog:
// about 108 KiB of static TLS) needs more than that, so every civetweb pthread_create fails with
// EINVAL and mg_start fails (prometheus::Exposer's constructor throws "null context when
// constructing CivetServer") in the dartserve binary and in tests that link LibTorch. The stack
// size is a compile-time choice of the package, so the call is intercepted: inside a
// CivetwebStartScope (where civetweb creates all of its threads, master and workers), the request
// is ignored and civetweb's threads get glibc's default stack size, like any std::thread. Every
// other caller in the process goes straight to glibc. (The CMake target exports this symbol from
// executables so that the dynamic linker binds civetweb's calls to it.)
extern "C" int pthread_attr_setstacksize(pthread_attr_t* attr, size_t stack_size) noexcept {
  if (dartserve::server::StartingCivetwebOnThisThread()) return 0;
  using SetStackSize = int (*)(pthread_attr_t*, size_t);
  static const auto glibc_set_stack_size =
      reinterpret_cast<SetStackSize>(dlsym(RTLD_NEXT, "pthread_attr_setstacksize"));
  if (glibc_set_stack_size == nullptr) return ENOSYS;
  return glibc_set_stack_size(attr, stack_size);
}

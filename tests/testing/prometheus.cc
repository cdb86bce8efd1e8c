#include "tests/testing/prometheus.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace dartserve::testing {
namespace {

constexpr char kPrometheusBinary[] = "/usr/bin/prometheus";
constexpr char kPromtoolBinary[] = "/usr/bin/promtool";
// Generous for a loaded 2-core CI machine; Prometheus is usually ready in about a second.
constexpr absl::Duration kReadyTimeout = absl::Seconds(30);

absl::Status ErrnoError(absl::string_view what) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(errno)));
}

// Percent-encodes everything but RFC 3986's unreserved characters.
std::string UrlEncode(absl::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if ((u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') || (u >= '0' && u <= '9') || u == '-' ||
        u == '_' || u == '.' || u == '~') {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 15]);
    }
  }
  return out;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::ostringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

absl::Status WriteFile(const std::string& path, absl::string_view contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

// A fresh private directory under the system temp directory ($TMPDIR or /tmp).
absl::StatusOr<std::string> MakeTempDir(absl::string_view prefix) {
  std::string pattern =
      (std::filesystem::temp_directory_path() / absl::StrCat(prefix, "-XXXXXX")).string();
  if (mkdtemp(pattern.data()) == nullptr) return ErrnoError(absl::StrCat("mkdtemp ", pattern));
  return pattern;
}

// Starts `argv` (argv[0] is the binary's path) with stdin from `stdin_fd` and stdout and stderr
// into `output_fd`. The child gets no other descriptor of this process and is SIGKILLed when the
// calling thread exits.
absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& argv, int stdin_fd, int output_fd) {
  // Everything the child needs is prepared before fork(): the parent may have other threads
  // (civetweb's), so the child may only make async-signal-safe calls until exec.
  std::vector<char*> args;
  for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return ErrnoError("fork");
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);  // the parent died before prctl took effect
    // civetweb makes this process ignore SIGPIPE, and ignored signals survive exec.
    signal(SIGPIPE, SIG_DFL);
    if (dup2(stdin_fd, STDIN_FILENO) < 0 || dup2(output_fd, STDOUT_FILENO) < 0 ||
        dup2(output_fd, STDERR_FILENO) < 0) {
      _exit(127);
    }
    // Keeps the test's sockets (listening metrics ports) out of a child that may outlive them.
    close_range(3, ~0U, 0);
    execv(args[0], args.data());
    _exit(127);
  }
  return pid;
}

// waitpid, retried on EINTR. Returns the wait status, or -1 on error.
int WaitFor(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return status;
}

std::string DescribeExit(int status) {
  if (status == -1) return "an unknown status (waitpid failed)";
  if (WIFEXITED(status)) return absl::StrCat("exit code ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return absl::StrCat("signal ", WTERMSIG(status));
  return absl::StrCat("wait status ", status);
}

// A port that was free a moment ago. Another process may take it before Prometheus binds it;
// PrometheusProcess::Start retries in that case.
absl::StatusOr<int> PickFreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoError("socket");
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof(address);
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) < 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) < 0) {
    absl::Status status = ErrnoError("bind to 127.0.0.1:0");
    close(fd);
    return status;
  }
  close(fd);
  return static_cast<int>(ntohs(address.sin_port));
}

}  // namespace

absl::Status PromtoolCheckMetrics(const std::string& exposition) {
  absl::StatusOr<std::string> dir = MakeTempDir("dartserve-promtool");
  if (!dir.ok()) return dir.status();
  const std::string input_path = *dir + "/metrics.txt";
  const std::string output_path = *dir + "/promtool.out";
  absl::Status status = WriteFile(input_path, exposition);
  if (status.ok()) {
    const int input = open(input_path.c_str(), O_RDONLY | O_CLOEXEC);
    const int output = open(output_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (input < 0 || output < 0) {
      status = ErrnoError("open promtool's input or output file");
    } else {
      absl::StatusOr<pid_t> pid = Spawn({kPromtoolBinary, "check", "metrics"}, input, output);
      if (!pid.ok()) {
        status = pid.status();
      } else {
        const int exit = WaitFor(*pid);
        if (!WIFEXITED(exit) || WEXITSTATUS(exit) != 0) {
          absl::StatusOr<std::string> out = ReadFile(output_path);
          status = absl::InvalidArgumentError(
              absl::StrCat("promtool check metrics rejected the exposition (", DescribeExit(exit),
                           "):\n", out.ok() ? *out : "(no output)"));
        }
      }
    }
    if (input >= 0) close(input);
    if (output >= 0) close(output);
  }
  std::error_code ignored;
  std::filesystem::remove_all(*dir, ignored);
  return status;
}

absl::StatusOr<std::unique_ptr<PrometheusProcess>> PrometheusProcess::Start(int target_port) {
  if (!PrometheusAvailable()) {
    return absl::FailedPreconditionError(absl::StrCat(kPrometheusBinary, " is not installed"));
  }
  absl::Status last_error;
  // The free port can be taken by someone else between PickFreePort and Prometheus's bind; a
  // few attempts make that race irrelevant.
  for (int attempt = 0; attempt < 3; ++attempt) {
    absl::StatusOr<std::string> dir = MakeTempDir("dartserve-prometheus");
    if (!dir.ok()) return dir.status();
    absl::StatusOr<int> port = PickFreePort();
    if (!port.ok()) {
      std::error_code ignored;
      std::filesystem::remove_all(*dir, ignored);
      return port.status();
    }
    const std::string config_path = *dir + "/prometheus.yml";
    const std::string log_path = *dir + "/prometheus.log";
    absl::Status written = WriteFile(config_path, absl::StrCat(R"(global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: dartserve
    metrics_path: /metrics
    static_configs:
      - targets: ["127.0.0.1:)",
                                                               target_port, R"("]
)"));
    const int input = open("/dev/null", O_RDONLY | O_CLOEXEC);
    const int log = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    absl::StatusOr<pid_t> pid = absl::InternalError("not started");
    if (!written.ok()) {
      pid = written;
    } else if (input < 0 || log < 0) {
      pid = ErrnoError("open /dev/null or the Prometheus log");
    } else {
      pid = Spawn({kPrometheusBinary, absl::StrCat("--config.file=", config_path),
                   absl::StrCat("--storage.tsdb.path=", *dir, "/data"),
                   absl::StrCat("--web.listen-address=127.0.0.1:", *port)},
                  input, log);
    }
    if (input >= 0) close(input);
    if (log >= 0) close(log);
    if (!pid.ok()) {
      std::error_code ignored;
      std::filesystem::remove_all(*dir, ignored);
      return pid.status();
    }
    std::unique_ptr<PrometheusProcess> process(new PrometheusProcess(*pid, *port, *dir));

    // Bounded polling of an external process's readiness: Prometheus offers no other signal.
    const absl::Time deadline = absl::Now() + kReadyTimeout;
    bool exited = false;
    while (true) {
      int status = 0;
      if (waitpid(process->pid_, &status, WNOHANG) == process->pid_) {
        process->pid_ = -1;
        last_error =
            absl::UnavailableError(absl::StrCat("prometheus exited during start-up with ",
                                                DescribeExit(status), ":\n", process->Log()));
        exited = true;
        break;
      }
      if (HttpGet("127.0.0.1", *port, "/-/ready").ok()) return process;
      if (absl::Now() > deadline) {
        return absl::DeadlineExceededError(absl::StrCat("prometheus was not ready after ",
                                                        absl::FormatDuration(kReadyTimeout), ":\n",
                                                        process->Log()));
      }
      absl::SleepFor(absl::Milliseconds(100));
    }
    if (exited && !absl::StrContains(last_error.message(), "address already in use")) break;
  }
  return last_error;
}

PrometheusProcess::~PrometheusProcess() { Stop(); }

void PrometheusProcess::Stop() {
  if (pid_ > 0) {
    kill(pid_, SIGTERM);
    // Bounded polling of an external process's shutdown: a clean stop (TSDB closed) usually
    // takes well under a second; after 10 s it is killed.
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    int status = 0;
    pid_t reaped = 0;
    while ((reaped = waitpid(pid_, &status, WNOHANG)) == 0 && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(20));
    }
    if (reaped == 0) {  // still running
      kill(pid_, SIGKILL);
      WaitFor(pid_);
    }
    pid_ = -1;
  }
  if (!dir_.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
    dir_.clear();
  }
}

std::string PrometheusProcess::Log() const {
  if (dir_.empty()) return "";
  absl::StatusOr<std::string> log = ReadFile(dir_ + "/prometheus.log");
  return log.ok() ? *log : "(no log)";
}

absl::StatusOr<nlohmann::json> PrometheusProcess::Query(const std::string& promql) {
  absl::StatusOr<std::string> body =
      HttpGet("127.0.0.1", port_, absl::StrCat("/api/v1/query?query=", UrlEncode(promql)));
  if (!body.ok()) return body.status();
  nlohmann::json response = nlohmann::json::parse(*body, nullptr, /*allow_exceptions=*/false);
  if (response.is_discarded() || !response.is_object()) {
    return absl::InternalError(absl::StrCat("query ", promql, ": response is not JSON: ", *body));
  }
  if (response.value("status", "") != "success") {
    return absl::UnknownError(absl::StrCat("query ", promql, " failed: ", response.dump()));
  }
  return response["data"];
}

absl::StatusOr<nlohmann::json> PrometheusProcess::WaitForResult(const std::string& promql,
                                                                absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  std::string last;
  // Bounded polling: the result appears only after Prometheus has scraped the target.
  while (true) {
    absl::StatusOr<nlohmann::json> data = Query(promql);
    if (data.ok()) {
      if (data->value("resultType", "") == "vector" && data->contains("result") &&
          (*data)["result"].is_array() && !(*data)["result"].empty()) {
        return data;
      }
      last = data->dump();
    } else {
      last = data.status().ToString();
    }
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat("no result for ", promql, " after ",
                                                      absl::FormatDuration(timeout),
                                                      "; last answer: ", last));
    }
    absl::SleepFor(absl::Milliseconds(200));
  }
}

bool PrometheusAvailable() {
  return access(kPrometheusBinary, X_OK) == 0 && access(kPromtoolBinary, X_OK) == 0;
}

}  // namespace dartserve::testing

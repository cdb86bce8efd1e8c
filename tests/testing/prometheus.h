// Test helpers that check metrics with Debian's real Prometheus tools: `promtool check metrics`
// and a throw-away Prometheus server that scrapes an endpoint under test. The HTTP GET and the
// sample parser are the client's (client/prometheus_scrape.h), which dartserve-loadgen scrapes
// the server with; they are named here too, so that tests say testing::HttpGet.
//
// Child processes are started with fork/exec and an argument vector (no shell), get their
// output captured in a temporary file for error messages, and are killed if the thread that
// started them exits (PR_SET_PDEATHSIG), so a crashing test leaves no Prometheus behind. Start
// them from a thread that outlives them (a test body's thread does).
#ifndef DARTSERVE_TESTS_TESTING_PROMETHEUS_H_
#define DARTSERVE_TESTS_TESTING_PROMETHEUS_H_

#include <sys/types.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/prometheus_scrape.h"
#include "nlohmann/json.hpp"

namespace dartserve::testing {

using ::dartserve::client::HttpGet;
using ::dartserve::client::SampleValue;

// Pipes `exposition` into `promtool check metrics`; OK iff promtool accepts it. Lint warnings
// are errors too; the INVALID_ARGUMENT message includes promtool's output.
absl::Status PromtoolCheckMetrics(const std::string& exposition);

// A Prometheus server (Debian's /usr/bin/prometheus) on a free local port, with a temporary data
// directory and a config that scrapes 127.0.0.1:<target_port>/metrics every second.
class PrometheusProcess {
 public:
  // Returns once Prometheus reports ready (GET /-/ready); an error with its log otherwise.
  static absl::StatusOr<std::unique_ptr<PrometheusProcess>> Start(int target_port);

  PrometheusProcess(const PrometheusProcess&) = delete;
  PrometheusProcess& operator=(const PrometheusProcess&) = delete;
  // Stop().
  ~PrometheusProcess();

  // Terminates Prometheus (SIGTERM, then SIGKILL if it lingers), reaps it and removes the
  // temporary directory. Idempotent.
  void Stop();

  int port() const { return port_; }

  // GET /api/v1/query?query=<url-encoded promql>; returns the response's "data" object, or an
  // error (with Prometheus's message) when the status is not "success".
  absl::StatusOr<nlohmann::json> Query(const std::string& promql);

  // Polls Query until `promql` returns a non-empty vector result or `timeout` passes
  // (DEADLINE_EXCEEDED, with the last answer). Bounded polling of an external process is the only
  // way to wait for its scrape.
  absl::StatusOr<nlohmann::json> WaitForResult(const std::string& promql, absl::Duration timeout);

  // Prometheus's own output so far (for failure messages).
  std::string Log() const;

 private:
  PrometheusProcess(pid_t pid, int port, std::string dir)
      : pid_(pid), port_(port), dir_(std::move(dir)) {}

  pid_t pid_;  // -1 once reaped
  int port_;
  std::string dir_;  // config, data and log; removed by Stop()
};

// Whether /usr/bin/prometheus and /usr/bin/promtool exist and are executable.
bool PrometheusAvailable();

}  // namespace dartserve::testing

#endif  // DARTSERVE_TESTS_TESTING_PROMETHEUS_H_

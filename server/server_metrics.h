// The service's Prometheus metrics, on prometheus-cpp: the metric families (prefix dartserve_,
// base units, fixed buckets; docs/service.md lists them), per served model the children that the
// hot paths update without lookups, and the HTTP endpoint that serves them (prometheus-cpp's
// Exposer). No request ids or prompts are ever used as labels.
#ifndef DARTSERVE_SERVER_SERVER_METRICS_H_
#define DARTSERVE_SERVER_SERVER_METRICS_H_

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace prometheus {
class Exposer;
}  // namespace prometheus

namespace dartserve::server {

// One model's children. The references stay valid for the ServerMetrics' lifetime; updating
// them is thread-safe (prometheus-cpp's metrics are).
struct ModelMetrics {
  prometheus::Histogram& queue_wait;
  prometheus::Histogram& time_to_first_preview;
  prometheus::Histogram& step_duration;
  prometheus::Histogram& step_batch_requests;
  prometheus::Histogram& step_batch_tokens;
  prometheus::Histogram& png_encode;
  prometheus::Gauge& running;
  prometheus::Gauge& waiting;
  prometheus::Gauge& kv_usage_ratio;
  prometheus::Gauge& kv_bytes;
  prometheus::Counter& previews_sent;
  prometheus::Counter& previews_dropped;
  prometheus::Counter& images;
};

// The dartserve_ families. A prometheus::Collectable: register it (by shared_ptr, as the Exposer
// holds a weak_ptr) with a MetricsEndpoint, or read it with Serialize().
// Thread-safety: every method is thread-safe.
class ServerMetrics : public prometheus::Collectable {
 public:
  ServerMetrics();
  ServerMetrics(const ServerMetrics&) = delete;
  ServerMetrics& operator=(const ServerMetrics&) = delete;

  // The children for `model` (created on first use; the same ones afterwards).
  ModelMetrics& ForModel(const std::string& model);
  // The busy-time counter of compute lane `lane` (replica index; model/compute_lane.h), created on
  // first use: dartserve_compute_lane_busy_seconds_total{lane}.
  prometheus::Counter& ForLane(int lane);
  // A finished GenerateImage call: its duration and outcome.
  void RecordRequest(const std::string& model, const absl::Status& status, double seconds);

  // Runs `hook` at the start of every Collect(), to refresh gauges that mirror live state (queue
  // length, KV use) only when someone looks. Hooks run in registration order, on the collecting
  // thread (a civetweb worker for scrapes), never concurrently with each other. A hook must not
  // call Collect(), Serialize() or AddCollectHook() (it would deadlock), and must stay callable
  // until this object is destroyed or no longer collected.
  void AddCollectHook(std::function<void()> hook);

  // Runs the collect hooks, then returns every family that has children.
  std::vector<prometheus::MetricFamily> Collect() const override;
  // Collect() in the Prometheus text format (0.0.4), as /metrics serves it minus the Exposer's
  // own exposer_* families. For tests and diagnostics.
  std::string Serialize() const;

 private:
  // Serializes Collect() calls, so hooks never run concurrently; guards hooks_.
  mutable absl::Mutex collect_mu_;
  std::vector<std::function<void()>> hooks_ ABSL_GUARDED_BY(collect_mu_);

  prometheus::Registry registry_;
  prometheus::Family<prometheus::Histogram>& request_duration_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& queue_wait_;
  prometheus::Family<prometheus::Histogram>& time_to_first_preview_;
  prometheus::Family<prometheus::Histogram>& step_duration_;
  prometheus::Family<prometheus::Histogram>& step_batch_requests_;
  prometheus::Family<prometheus::Histogram>& step_batch_tokens_;
  prometheus::Family<prometheus::Histogram>& png_encode_;
  prometheus::Family<prometheus::Gauge>& running_;
  prometheus::Family<prometheus::Gauge>& waiting_;
  prometheus::Family<prometheus::Gauge>& kv_usage_ratio_;
  prometheus::Family<prometheus::Gauge>& kv_bytes_;
  prometheus::Family<prometheus::Counter>& previews_sent_;
  prometheus::Family<prometheus::Counter>& previews_dropped_;
  prometheus::Family<prometheus::Counter>& images_;
  prometheus::Family<prometheus::Counter>& lane_busy_;

  absl::Mutex models_mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<ModelMetrics>> models_
      ABSL_GUARDED_BY(models_mu_);
};

// The process metrics every Prometheus exporter reports, under the standard names (as
// client_golang's process collector and the other official clients export them), read from
// /proc/self when collected, so they are current at every scrape:
//   process_cpu_seconds_total       counter  user + system CPU time
//   process_resident_memory_bytes   gauge    resident set size
//   process_virtual_memory_bytes    gauge    virtual memory size
//   process_open_fds                gauge    open file descriptors
//   process_max_fds                 gauge    the open-files limit (RLIMIT_NOFILE)
//   process_start_time_seconds      gauge    start time, seconds since the Unix epoch
// and dartserve_build_info{version} (always 1), which carries the version as a label so that
// dashboards and alerts can join on it. No `model` label: they describe the process. A value that
// cannot be read (not Linux, /proc not mounted) is left out, never reported as 0.
// Thread-safety: Collect() is thread-safe (it only reads the process's files).
class ProcessMetrics : public prometheus::Collectable {
 public:
  explicit ProcessMetrics(std::string version);

  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const std::string version_;
};

// GET /metrics over HTTP on its own port, served by prometheus-cpp's Exposer (civetweb, two
// worker threads of its own, so a scrape never blocks the gRPC server's threads). Any path under
// /metrics serves the collectables; other paths answer 404.
//
// Process-wide effects, both from civetweb as packaged by Debian (see civetweb_util.h):
//  - the process ignores SIGPIPE from the first Start on (as gRPC servers do anyway);
//  - this library defines pthread_attr_setstacksize, forwarding to glibc except inside a
//    civetweb start-up (the Exposer's), whose fixed 100 KiB thread stacks cannot hold LibTorch's
//    static TLS.
class MetricsEndpoint {
 public:
  // `address` is "<IPv4 address>:<port>" ("0.0.0.0:9464", "127.0.0.1:0") or "localhost:<port>";
  // port 0 picks an ephemeral port, which port() reports. INVALID_ARGUMENT for a malformed
  // address; UNAVAILABLE naming the address and civetweb's reason when it cannot listen (port in
  // use, address not local). The endpoint holds `collectable` weakly: once it is destroyed, the
  // endpoint serves only the Exposer's own exposer_* families.
  static absl::StatusOr<std::unique_ptr<MetricsEndpoint>> Start(
      const std::string& address, const std::shared_ptr<prometheus::Collectable>& collectable);

  MetricsEndpoint(const MetricsEndpoint&) = delete;
  MetricsEndpoint& operator=(const MetricsEndpoint&) = delete;
  // Stops serving: waits for scrapes in flight, then closes the listening socket. Takes
  // milliseconds (see the definition for how civetweb's 2 s stop latency is avoided).
  ~MetricsEndpoint();

  // Serves `collectable` too (held weakly, as the one given to Start). Thread-safe.
  void Add(const std::shared_ptr<prometheus::Collectable>& collectable);

  // The port actually listened on (the ephemeral one when started with port 0).
  int port() const { return port_; }

 private:
  MetricsEndpoint() = default;

  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;
  // IPv4 address (network byte order) the destructor connects to, to wake civetweb up.
  uint32_t wake_ip_ = 0;
};

}  // namespace dartserve::server

#endif  // DARTSERVE_SERVER_SERVER_METRICS_H_

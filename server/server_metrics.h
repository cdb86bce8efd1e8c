// The service's metric families (names after research/serving_anchors.md §4, prefix dartserve_,
// base units) and, per served model, the children the hot paths update without lookups.
// No request ids or prompts are ever used as labels.
#ifndef DARTSERVE_SERVER_SERVER_METRICS_H_
#define DARTSERVE_SERVER_SERVER_METRICS_H_

#include <memory>
#include <mutex>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "server/metrics.h"

namespace dartserve::server {

// One model's children. References stay valid for the registry's lifetime.
struct ModelMetrics {
  metrics::Histogram& queue_wait;
  metrics::Histogram& time_to_first_preview;
  metrics::Histogram& step_duration;
  metrics::Histogram& step_batch_requests;
  metrics::Histogram& step_batch_tokens;
  metrics::Histogram& png_encode;
  metrics::Gauge& running;
  metrics::Gauge& waiting;
  metrics::Gauge& kv_usage_ratio;
  metrics::Gauge& kv_bytes;
  metrics::Counter& previews_sent;
  metrics::Counter& previews_dropped;
  metrics::Counter& images;
};

class ServerMetrics {
 public:
  explicit ServerMetrics(metrics::Registry* registry);

  metrics::Registry& registry() { return *registry_; }
  // The children for `model` (created on first use).
  ModelMetrics& ForModel(const std::string& model);
  // A finished GenerateImage call: its duration and outcome.
  void RecordRequest(const std::string& model, const absl::Status& status, double seconds);

 private:
  metrics::Registry* const registry_;
  metrics::Family<metrics::Histogram>& request_duration_;
  metrics::Family<metrics::Counter>& requests_;
  metrics::Family<metrics::Histogram>& queue_wait_;
  metrics::Family<metrics::Histogram>& time_to_first_preview_;
  metrics::Family<metrics::Histogram>& step_duration_;
  metrics::Family<metrics::Histogram>& step_batch_requests_;
  metrics::Family<metrics::Histogram>& step_batch_tokens_;
  metrics::Family<metrics::Histogram>& png_encode_;
  metrics::Family<metrics::Gauge>& running_;
  metrics::Family<metrics::Gauge>& waiting_;
  metrics::Family<metrics::Gauge>& kv_usage_ratio_;
  metrics::Family<metrics::Gauge>& kv_bytes_;
  metrics::Family<metrics::Counter>& previews_sent_;
  metrics::Family<metrics::Counter>& previews_dropped_;
  metrics::Family<metrics::Counter>& images_;

  std::mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<ModelMetrics>> models_;
};

}  // namespace dartserve::server

#endif  // DARTSERVE_SERVER_SERVER_METRICS_H_

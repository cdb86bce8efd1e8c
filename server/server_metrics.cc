#include "server/server_metrics.h"

#include "server/grpc_status.h"

namespace dartserve::server {
namespace {

// Request-level latencies: 5 ms .. ~160 s. Steps: 0.5 ms .. ~16 s.
std::vector<double> RequestBuckets() { return metrics::ExponentialBuckets(0.005, 2, 16); }
std::vector<double> StepBuckets() { return metrics::ExponentialBuckets(0.0005, 2, 16); }

}  // namespace

ServerMetrics::ServerMetrics(metrics::Registry* registry)
    : registry_(registry),
      request_duration_(registry->AddHistogram(
          "dartserve_request_duration_seconds",
          "GenerateImage calls from arrival to final status, by model and status.",
          RequestBuckets(), {"model", "status"})),
      requests_(registry->AddCounter("dartserve_requests_total",
                                     "GenerateImage calls by model and final status.",
                                     {"model", "status"})),
      queue_wait_(registry->AddHistogram("dartserve_queue_wait_seconds",
                                         "Time an image waited in the queue before its first step.",
                                         RequestBuckets(), {"model"})),
      time_to_first_preview_(
          registry->AddHistogram("dartserve_time_to_first_preview_seconds",
                                 "Call arrival to the first preview image written to the client.",
                                 RequestBuckets(), {"model"})),
      step_duration_(registry->AddHistogram(
          "dartserve_step_duration_seconds",
          "One scheduler iteration: one denoising step for every active request.", StepBuckets(),
          {"model"})),
      step_batch_requests_(registry->AddHistogram("dartserve_step_batch_requests",
                                                  "Requests stepped together in one iteration.",
                                                  metrics::ExponentialBuckets(1, 2, 9), {"model"})),
      step_batch_tokens_(registry->AddHistogram("dartserve_step_batch_tokens",
                                                "Tokens put through the model in one iteration.",
                                                metrics::ExponentialBuckets(16, 2, 14), {"model"})),
      png_encode_(registry->AddHistogram("dartserve_png_encode_seconds",
                                         "PNG encoding of one preview or final image.",
                                         StepBuckets(), {"model"})),
      running_(registry->AddGauge("dartserve_requests_running",
                                  "Images being denoised now (one per requested image).",
                                  {"model"})),
      waiting_(registry->AddGauge("dartserve_requests_waiting",
                                  "Images waiting in the queue (one per requested image).",
                                  {"model"})),
      kv_usage_ratio_(registry->AddGauge("dartserve_kv_cache_usage_ratio",
                                         "Reserved KV cache memory over the KV budget.",
                                         {"model"})),
      kv_bytes_(registry->AddGauge("dartserve_kv_cache_bytes", "Reserved KV cache memory in bytes.",
                                   {"model"})),
      previews_sent_(registry->AddCounter("dartserve_previews_sent_total",
                                          "Preview images written to clients.", {"model"})),
      previews_dropped_(registry->AddCounter(
          "dartserve_previews_dropped_total",
          "Preview images replaced by a newer one before a slow client read them.",
          {"model", "reason"})),
      images_(
          registry->AddCounter("dartserve_images_total", "Final images generated.", {"model"})) {}

ModelMetrics& ServerMetrics::ForModel(const std::string& model) {
  std::lock_guard<std::mutex> lock(mu_);
  std::unique_ptr<ModelMetrics>& m = models_[model];
  if (m == nullptr) {
    m.reset(new ModelMetrics{
        .queue_wait = queue_wait_.WithLabels({model}),
        .time_to_first_preview = time_to_first_preview_.WithLabels({model}),
        .step_duration = step_duration_.WithLabels({model}),
        .step_batch_requests = step_batch_requests_.WithLabels({model}),
        .step_batch_tokens = step_batch_tokens_.WithLabels({model}),
        .png_encode = png_encode_.WithLabels({model}),
        .running = running_.WithLabels({model}),
        .waiting = waiting_.WithLabels({model}),
        .kv_usage_ratio = kv_usage_ratio_.WithLabels({model}),
        .kv_bytes = kv_bytes_.WithLabels({model}),
        .previews_sent = previews_sent_.WithLabels({model}),
        .previews_dropped = previews_dropped_.WithLabels({model, "backpressure"}),
        .images = images_.WithLabels({model}),
    });
  }
  return *m;
}

void ServerMetrics::RecordRequest(const std::string& model, const absl::Status& status,
                                  double seconds) {
  const std::string label = StatusLabel(status.code());
  request_duration_.WithLabels({model, label}).Observe(seconds);
  requests_.WithLabels({model, label}).Increment();
}

}  // namespace dartserve::server

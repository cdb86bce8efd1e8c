#include "server/server_metrics.h"

#include <CivetServer.h>
#include <dirent.h>
#include <prometheus/exposer.h>
#include <prometheus/text_serializer.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <exception>
#include <fstream>
#include <optional>
#include <sstream>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "server/civetweb_util.h"
#include "server/grpc_status.h"

namespace dartserve::server {
namespace {

// `count` upper bounds start, start*factor, start*factor^2, ...
std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  std::vector<double> buckets;
  double bound = start;
  for (int i = 0; i < count; ++i, bound *= factor) buckets.push_back(bound);
  return buckets;
}

// Request-level latencies: 5 ms .. ~160 s. Steps: 0.5 ms .. ~16 s.
const prometheus::Histogram::BucketBoundaries& RequestBuckets() {
  static const auto* const buckets = new std::vector<double>(ExponentialBuckets(0.005, 2, 16));
  return *buckets;
}
const prometheus::Histogram::BucketBoundaries& StepBuckets() {
  static const auto* const buckets = new std::vector<double>(ExponentialBuckets(0.0005, 2, 16));
  return *buckets;
}
const prometheus::Histogram::BucketBoundaries& BatchRequestBuckets() {
  static const auto* const buckets = new std::vector<double>(ExponentialBuckets(1, 2, 9));
  return *buckets;
}
const prometheus::Histogram::BucketBoundaries& BatchTokenBuckets() {
  static const auto* const buckets = new std::vector<double>(ExponentialBuckets(16, 2, 14));
  return *buckets;
}

template <typename T>
prometheus::Family<T>& Add(prometheus::Registry& registry, const std::string& name,
                           const std::string& help) {
  return prometheus::detail::Builder<T>().Name(name).Help(help).Register(registry);
}

// /proc/self/stat's fields from the third on ("state" is [0]), or empty when unreadable. The
// second field, the command name in parentheses, may itself hold spaces and parentheses, so the
// fields are taken after its last ')'.
std::vector<std::string> ProcSelfStat() {
  std::ifstream in("/proc/self/stat");
  std::string line;
  if (!std::getline(in, line)) return {};
  const size_t paren = line.rfind(')');
  if (paren == std::string::npos) return {};
  std::istringstream rest(line.substr(paren + 1));
  std::vector<std::string> fields;
  for (std::string field; rest >> field;) fields.push_back(std::move(field));
  return fields;
}

// Field `number` (1-based, as proc(5) numbers them) of ProcSelfStat()'s `fields`.
std::optional<double> StatField(const std::vector<std::string>& fields, size_t number) {
  const size_t index = number - 3;
  double value = 0;
  if (index >= fields.size() || !absl::SimpleAtod(fields[index], &value)) return std::nullopt;
  return value;
}

// The system's boot time, seconds since the epoch ("btime" in /proc/stat).
std::optional<double> BootTimeSeconds() {
  std::ifstream in("/proc/stat");
  for (std::string line; std::getline(in, line);) {
    absl::string_view rest = line;
    double value = 0;
    if (absl::ConsumePrefix(&rest, "btime ") && absl::SimpleAtod(rest, &value)) return value;
  }
  return std::nullopt;
}

// Open file descriptors, without the one this count itself opens.
std::optional<double> OpenFds() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return std::nullopt;
  const int own = dirfd(dir);
  int count = 0;
  while (const dirent* entry = readdir(dir)) {
    int fd = 0;
    if (absl::SimpleAtoi(entry->d_name, &fd) && fd != own) ++count;
  }
  closedir(dir);
  return count;
}

prometheus::MetricFamily OneValue(const std::string& name, const std::string& help,
                                  prometheus::MetricType type, double value) {
  prometheus::ClientMetric metric;
  if (type == prometheus::MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  return {.name = name, .help = help, .type = type, .metric = {metric}};
}

}  // namespace

ProcessMetrics::ProcessMetrics(std::string version) : version_(std::move(version)) {}

std::vector<prometheus::MetricFamily> ProcessMetrics::Collect() const {
  using prometheus::MetricType;
  std::vector<prometheus::MetricFamily> out;
  const std::vector<std::string> stat = ProcSelfStat();
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const std::optional<double> utime = StatField(stat, 14), stime = StatField(stat, 15);
  if (utime && stime && ticks > 0) {
    out.push_back(OneValue("process_cpu_seconds_total",
                           "Total user and system CPU time spent in seconds.", MetricType::Counter,
                           (*utime + *stime) / ticks));
  }
  if (const std::optional<double> rss = StatField(stat, 24)) {
    out.push_back(OneValue("process_resident_memory_bytes", "Resident memory size in bytes.",
                           MetricType::Gauge, *rss * static_cast<double>(sysconf(_SC_PAGESIZE))));
  }
  if (const std::optional<double> vsize = StatField(stat, 23)) {
    out.push_back(OneValue("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                           MetricType::Gauge, *vsize));
  }
  if (const std::optional<double> fds = OpenFds()) {
    out.push_back(
        OneValue("process_open_fds", "Number of open file descriptors.", MetricType::Gauge, *fds));
  }
  if (rlimit limit; getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY) {
    out.push_back(OneValue("process_max_fds", "Maximum number of open file descriptors.",
                           MetricType::Gauge, static_cast<double>(limit.rlim_cur)));
  }
  const std::optional<double> started = StatField(stat, 22);  // clock ticks after boot
  const std::optional<double> boot = BootTimeSeconds();
  if (started && boot && ticks > 0) {
    out.push_back(OneValue("process_start_time_seconds",
                           "Start time of the process since unix epoch in seconds.",
                           MetricType::Gauge, *boot + *started / ticks));
  }
  prometheus::MetricFamily build =
      OneValue("dartserve_build_info", "The running dartserve's version (the value is always 1).",
               MetricType::Gauge, 1);
  build.metric[0].label = {{.name = "version", .value = version_}};
  out.push_back(std::move(build));
  return out;
}

ServerMetrics::ServerMetrics()
    : request_duration_(Add<prometheus::Histogram>(
          registry_, "dartserve_request_duration_seconds",
          "GenerateImage calls from arrival to final status, by model and status.")),
      requests_(Add<prometheus::Counter>(registry_, "dartserve_requests_total",
                                         "GenerateImage calls by model and final status.")),
      queue_wait_(
          Add<prometheus::Histogram>(registry_, "dartserve_queue_wait_seconds",
                                     "Time an image waited in the queue before its first step.")),
      time_to_first_preview_(Add<prometheus::Histogram>(
          registry_, "dartserve_time_to_first_preview_seconds",
          "Call arrival to the first preview image written to the client.")),
      step_duration_(Add<prometheus::Histogram>(
          registry_, "dartserve_step_duration_seconds",
          "One scheduler iteration: one denoising step for every active request.")),
      step_batch_requests_(
          Add<prometheus::Histogram>(registry_, "dartserve_step_batch_requests",
                                     "Requests stepped together in one iteration.")),
      step_batch_tokens_(
          Add<prometheus::Histogram>(registry_, "dartserve_step_batch_tokens",
                                     "Tokens put through the model in one iteration.")),
      png_encode_(Add<prometheus::Histogram>(registry_, "dartserve_png_encode_seconds",
                                             "PNG encoding of one preview or final image.")),
      running_(Add<prometheus::Gauge>(registry_, "dartserve_requests_running",
                                      "Images being denoised now (one per requested image).")),
      waiting_(Add<prometheus::Gauge>(registry_, "dartserve_requests_waiting",
                                      "Images waiting in the queue (one per requested image).")),
      kv_usage_ratio_(Add<prometheus::Gauge>(registry_, "dartserve_kv_cache_usage_ratio",
                                             "Reserved KV cache memory over the KV budget.")),
      kv_bytes_(Add<prometheus::Gauge>(registry_, "dartserve_kv_cache_bytes",
                                       "Reserved KV cache memory in bytes.")),
      previews_sent_(Add<prometheus::Counter>(registry_, "dartserve_previews_sent_total",
                                              "Preview images written to clients.")),
      previews_dropped_(Add<prometheus::Counter>(
          registry_, "dartserve_previews_dropped_total",
          "Preview images replaced by a newer one before a slow client read them.")),
      images_(
          Add<prometheus::Counter>(registry_, "dartserve_images_total", "Final images generated.")),
      lane_busy_(Add<prometheus::Counter>(
          registry_, "dartserve_compute_lane_busy_seconds_total",
          "Seconds a compute lane (one per replica index, shared by every model's replica on "
          "it) spent running model calls.")) {}

prometheus::Counter& ServerMetrics::ForLane(int lane) {
  return lane_busy_.Add({{"lane", absl::StrCat(lane)}});  // the existing child after the first
}

ModelMetrics& ServerMetrics::ForModel(const std::string& model) {
  absl::MutexLock lock(&models_mu_);
  std::unique_ptr<ModelMetrics>& m = models_[model];
  if (m == nullptr) {
    const prometheus::Labels labels = {{"model", model}};
    m.reset(new ModelMetrics{
        .queue_wait = queue_wait_.Add(labels, RequestBuckets()),
        .time_to_first_preview = time_to_first_preview_.Add(labels, RequestBuckets()),
        .step_duration = step_duration_.Add(labels, StepBuckets()),
        .step_batch_requests = step_batch_requests_.Add(labels, BatchRequestBuckets()),
        .step_batch_tokens = step_batch_tokens_.Add(labels, BatchTokenBuckets()),
        .png_encode = png_encode_.Add(labels, StepBuckets()),
        .running = running_.Add(labels),
        .waiting = waiting_.Add(labels),
        .kv_usage_ratio = kv_usage_ratio_.Add(labels),
        .kv_bytes = kv_bytes_.Add(labels),
        .previews_sent = previews_sent_.Add(labels),
        .previews_dropped = previews_dropped_.Add({{"model", model}, {"reason", "backpressure"}}),
        .images = images_.Add(labels),
    });
  }
  return *m;
}

void ServerMetrics::RecordRequest(const std::string& model, const absl::Status& status,
                                  double seconds) {
  // Family::Add returns the existing child for labels it has seen.
  const prometheus::Labels labels = {{"model", model}, {"status", StatusLabel(status.code())}};
  request_duration_.Add(labels, RequestBuckets()).Observe(seconds);
  requests_.Add(labels).Increment();
}

void ServerMetrics::AddCollectHook(std::function<void()> hook) {
  absl::MutexLock lock(&collect_mu_);
  hooks_.push_back(std::move(hook));
}

std::vector<prometheus::MetricFamily> ServerMetrics::Collect() const {
  absl::MutexLock lock(&collect_mu_);
  for (const std::function<void()>& hook : hooks_) hook();
  return registry_.Collect();
}

std::string ServerMetrics::Serialize() const {
  return prometheus::TextSerializer().Serialize(Collect());
}

absl::StatusOr<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::Start(
    const std::string& address, const std::shared_ptr<prometheus::Collectable>& collectable) {
  absl::StatusOr<ListenAddress> parsed = ParseListenAddress(address, "metrics address");
  if (!parsed.ok()) return parsed.status();

  std::unique_ptr<MetricsEndpoint> endpoint(new MetricsEndpoint());
  CivetCallbacks callbacks;  // copied by civetweb
  callbacks.log_message = &CaptureCivetwebLog;
  {
    CivetwebStartScope scope;
    // civetweb reports a failed start (bind, threads) only as an exception from the Exposer's
    // constructor, with a generic text; the captured log says what actually went wrong.
    try {
      endpoint->exposer_ = std::make_unique<prometheus::Exposer>(
          std::vector<std::string>{"listening_ports", absl::StrCat(parsed->host, ":", parsed->port),
                                   // Scrapes are rare and cheap: two workers suffice.
                                   "num_threads", "2",
                                   // A stalled client cannot hold a worker for long.
                                   "request_timeout_ms", "10000"},
          &callbacks);
    } catch (const std::exception& e) {
      return absl::UnavailableError(
          absl::StrCat("cannot serve metrics on ", address, ": ",
                       scope.log().empty() ? e.what() : absl::StrJoin(scope.log(), "; ")));
    }
  }
  endpoint->exposer_->RegisterCollectable(collectable);

  // civetweb reads the bound address back after bind() (getsockname), so for port 0 this is the
  // ephemeral port the kernel chose.
  const std::vector<int> ports = endpoint->exposer_->GetListeningPorts();
  if (ports.empty() || ports[0] <= 0) {
    return absl::InternalError(
        absl::StrCat("metrics endpoint on ", address, ": civetweb did not report its port"));
  }
  endpoint->port_ = ports[0];
  endpoint->wake_ip_ = parsed->LoopbackReachableIp();
  return endpoint;
}

void MetricsEndpoint::Add(const std::shared_ptr<prometheus::Collectable>& collectable) {
  exposer_->RegisterCollectable(collectable);
}

MetricsEndpoint::~MetricsEndpoint() {
  if (exposer_ == nullptr) return;
  StopCivetweb(wake_ip_, port_, [this] { exposer_.reset(); });
}

}  // namespace dartserve::server

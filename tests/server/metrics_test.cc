// What the server reports (server/server_metrics.h): its families, labels and buckets, the
// collect hooks, the /metrics endpoint served by prometheus-cpp's Exposer, and that output as
// judged by Debian's promtool and a real Prometheus server. Torch-free (metrics_test links no
// LibTorch; see tests/CMakeLists.txt).
#include <fcntl.h>
#include <prometheus/text_serializer.h>
#include <unistd.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/server_metrics.h"
#include "tests/testing/prometheus.h"

namespace dartserve::server {
namespace {

using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

// The "le" values of `histogram`'s buckets for the series whose labels start with `labels`
// (e.g. model="fmnist"), in exposition order.
std::vector<std::string> BucketBounds(const std::string& exposition, const std::string& histogram,
                                      const std::string& labels) {
  const std::string prefix = absl::StrCat(histogram, "_bucket{", labels, ",le=\"");
  std::vector<std::string> bounds;
  for (absl::string_view line : absl::StrSplit(exposition, '\n')) {
    if (!absl::ConsumePrefix(&line, prefix)) continue;
    bounds.emplace_back(line.substr(0, line.find('"')));
  }
  return bounds;
}

// `bounds` and the implicit +Inf bucket.
std::vector<std::string> WithInf(std::vector<std::string> bounds) {
  bounds.push_back("+Inf");
  return bounds;
}

TEST(ServerMetricsTest, ExposesEveryFamilyWithItsTypeAndHelp) {
  ServerMetrics metrics;
  // Families appear once they have children: per model at once, per call outcome after a call.
  EXPECT_EQ(metrics.Serialize(), "");
  metrics.ForModel("fmnist");
  metrics.RecordRequest("fmnist", absl::OkStatus(), 0.25);
  const std::string text = metrics.Serialize();
  const struct {
    const char* name;
    const char* type;
    const char* help;
  } kFamilies[] = {
      {"dartserve_request_duration_seconds", "histogram",
       "GenerateImage calls from arrival to final status, by model and status."},
      {"dartserve_requests_total", "counter", "GenerateImage calls by model and final status."},
      {"dartserve_queue_wait_seconds", "histogram",
       "Time an image waited in the queue before its first step."},
      {"dartserve_time_to_first_preview_seconds", "histogram",
       "Call arrival to the first preview image written to the client."},
      {"dartserve_step_duration_seconds", "histogram",
       "One scheduler iteration: one denoising step for every active request."},
      {"dartserve_step_batch_requests", "histogram", "Requests stepped together in one iteration."},
      {"dartserve_step_batch_tokens", "histogram",
       "Tokens put through the model in one iteration."},
      {"dartserve_png_encode_seconds", "histogram", "PNG encoding of one preview or final image."},
      {"dartserve_requests_running", "gauge",
       "Images being denoised now (one per requested image)."},
      {"dartserve_requests_waiting", "gauge",
       "Images waiting in the queue (one per requested image)."},
      {"dartserve_kv_cache_usage_ratio", "gauge", "Reserved KV cache memory over the KV budget."},
      {"dartserve_kv_cache_bytes", "gauge", "Reserved KV cache memory in bytes."},
      {"dartserve_previews_sent_total", "counter", "Preview images written to clients."},
      {"dartserve_previews_dropped_total", "counter",
       "Preview images replaced by a newer one before a slow client read them."},
      {"dartserve_images_total", "counter", "Final images generated."},
  };
  for (const auto& family : kFamilies) {
    EXPECT_THAT(text, HasSubstr(absl::StrCat("# HELP ", family.name, " ", family.help, "\n# TYPE ",
                                             family.name, " ", family.type, "\n")))
        << family.name;
  }
  // Nothing else.
  int families = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    families += absl::StartsWith(line, "# TYPE ");
  }
  EXPECT_EQ(families, std::size(kFamilies)) << text;
}

TEST(ServerMetricsTest, HistogramsHaveFixedBucketsInBaseUnits) {
  ServerMetrics metrics;
  metrics.ForModel("m");
  metrics.RecordRequest("m", absl::OkStatus(), 1);
  const std::string text = metrics.Serialize();
  // Request-level latencies: 5 ms .. ~160 s.
  const std::vector<std::string> request =
      WithInf({"0.005", "0.01", "0.02", "0.04", "0.08", "0.16", "0.32", "0.64", "1.28", "2.56",
               "5.12", "10.24", "20.48", "40.96", "81.92", "163.84"});
  EXPECT_THAT(BucketBounds(text, "dartserve_request_duration_seconds", "model=\"m\",status=\"ok\""),
              ElementsAreArray(request));
  for (const char* name :
       {"dartserve_queue_wait_seconds", "dartserve_time_to_first_preview_seconds"}) {
    EXPECT_THAT(BucketBounds(text, name, "model=\"m\""), ElementsAreArray(request)) << name;
  }
  // Steps and PNG encoding: 0.5 ms .. ~16 s.
  const std::vector<std::string> step =
      WithInf({"0.0005", "0.001", "0.002", "0.004", "0.008", "0.016", "0.032", "0.064", "0.128",
               "0.256", "0.512", "1.024", "2.048", "4.096", "8.192", "16.384"});
  for (const char* name : {"dartserve_step_duration_seconds", "dartserve_png_encode_seconds"}) {
    EXPECT_THAT(BucketBounds(text, name, "model=\"m\""), ElementsAreArray(step)) << name;
  }
  EXPECT_THAT(BucketBounds(text, "dartserve_step_batch_requests", "model=\"m\""),
              ElementsAreArray(WithInf({"1", "2", "4", "8", "16", "32", "64", "128", "256"})));
  EXPECT_THAT(BucketBounds(text, "dartserve_step_batch_tokens", "model=\"m\""),
              ElementsAreArray(WithInf({"16", "32", "64", "128", "256", "512", "1024", "2048",
                                        "4096", "8192", "16384", "32768", "65536", "131072"})));
}

TEST(ServerMetricsTest, CountsPerModelAndOutcome) {
  ServerMetrics metrics;
  ModelMetrics& fmnist = metrics.ForModel("fmnist");
  EXPECT_EQ(&metrics.ForModel("fmnist"), &fmnist);
  EXPECT_NE(&metrics.ForModel("shapes"), &fmnist);
  metrics.RecordRequest("fmnist", absl::OkStatus(), 0.25);
  metrics.RecordRequest("fmnist", absl::OkStatus(), 0.5);
  metrics.RecordRequest("fmnist", absl::InvalidArgumentError("class_id"), 0);
  fmnist.previews_sent.Increment();
  fmnist.previews_sent.Increment();
  fmnist.previews_dropped.Increment();
  fmnist.images.Increment();
  fmnist.queue_wait.Observe(0.01);  // on a bound: counts in that bucket ("le")
  fmnist.running.Set(3);
  const std::string text = metrics.Serialize();
  for (const char* sample : {
           "dartserve_requests_total{model=\"fmnist\",status=\"ok\"} 2\n",
           "dartserve_requests_total{model=\"fmnist\",status=\"invalid_argument\"} 1\n",
           "dartserve_request_duration_seconds_count{model=\"fmnist\",status=\"ok\"} 2\n",
           "dartserve_request_duration_seconds_sum{model=\"fmnist\",status=\"ok\"} 0.75\n",
           "dartserve_request_duration_seconds_bucket{model=\"fmnist\",status=\"ok\",le=\"0.32\"} "
           "1\n",
           "dartserve_previews_sent_total{model=\"fmnist\"} 2\n",
           "dartserve_previews_dropped_total{model=\"fmnist\",reason=\"backpressure\"} 1\n",
           "dartserve_images_total{model=\"fmnist\"} 1\n",
           "dartserve_queue_wait_seconds_bucket{model=\"fmnist\",le=\"0.005\"} 0\n",
           "dartserve_queue_wait_seconds_bucket{model=\"fmnist\",le=\"0.01\"} 1\n",
           "dartserve_requests_running{model=\"fmnist\"} 3\n",
           // The other model's children exist from ForModel on, at 0.
           "dartserve_images_total{model=\"shapes\"} 0\n",
       }) {
    EXPECT_THAT(text, HasSubstr(sample));
  }
}

TEST(ServerMetricsTest, CollectHooksRunOnEveryCollection) {
  ServerMetrics metrics;
  ModelMetrics& m = metrics.ForModel("fmnist");
  int live_queue_length = 3;
  int runs = 0;
  metrics.AddCollectHook([&] {
    ++runs;
    m.waiting.Set(live_queue_length);
  });
  EXPECT_THAT(metrics.Serialize(), HasSubstr("\ndartserve_requests_waiting{model=\"fmnist\"} 3\n"));
  live_queue_length = 5;
  EXPECT_EQ(metrics.Collect().size(), 15u - 2u);  // no call recorded: no request-level families
  EXPECT_THAT(metrics.Serialize(), HasSubstr("\ndartserve_requests_waiting{model=\"fmnist\"} 5\n"));
  EXPECT_EQ(runs, 3);
}

// A ServerMetrics with every family populated, a label value that needs escaping, and a collect
// hook: what a server exposes.
std::shared_ptr<ServerMetrics> ExampleMetrics() {
  auto metrics = std::make_shared<ServerMetrics>();
  ModelMetrics& m = metrics->ForModel("fmnist");
  for (double v : {0.005, 0.03, 0.2, 0.9, 30.0}) {
    metrics->RecordRequest("fmnist", absl::OkStatus(), v);
  }
  metrics->RecordRequest("fmnist", absl::CancelledError(), 2);
  m.queue_wait.Observe(0.1);
  m.time_to_first_preview.Observe(0.2);
  m.step_duration.Observe(0.004);
  m.step_batch_requests.Observe(3);
  m.step_batch_tokens.Observe(300);
  m.png_encode.Observe(0.001);
  m.previews_sent.Increment(4);
  m.previews_dropped.Increment();
  m.images.Increment();
  metrics->ForModel("say \"hi\"\\\n").images.Increment(2);
  metrics->AddCollectHook([&m] {
    m.running.Set(42);
    m.kv_bytes.Set(1 << 20);
    m.kv_usage_ratio.Set(0.25);
  });
  return metrics;
}

// The value of the unlabelled sample `name` in `exposition`; nullopt when absent.
std::optional<double> SampleValue(const std::string& exposition, const std::string& name) {
  for (absl::string_view line : absl::StrSplit(exposition, '\n')) {
    if (!absl::ConsumePrefix(&line, name + " ")) continue;
    double value = 0;
    if (absl::SimpleAtod(line, &value)) return value;
  }
  return std::nullopt;
}

std::string SerializeProcess(const ProcessMetrics& metrics) {
  return prometheus::TextSerializer().Serialize(metrics.Collect());
}

TEST(ProcessMetricsTest, ReportsThisProcess) {
  const ProcessMetrics metrics("1.2.3");
  const std::string text = SerializeProcess(metrics);
  const struct {
    const char* name;
    const char* type;
  } kFamilies[] = {
      {"process_cpu_seconds_total", "counter"},
      {"process_resident_memory_bytes", "gauge"},
      {"process_virtual_memory_bytes", "gauge"},
      {"process_open_fds", "gauge"},
      {"process_max_fds", "gauge"},
      {"process_start_time_seconds", "gauge"},
      {"dartserve_build_info", "gauge"},
  };
  for (const auto& family : kFamilies) {
    EXPECT_THAT(text, HasSubstr(absl::StrCat("# TYPE ", family.name, " ", family.type, "\n")))
        << text;
  }
  EXPECT_THAT(text, HasSubstr("\ndartserve_build_info{version=\"1.2.3\"} 1\n"));

  const double rss = SampleValue(text, "process_resident_memory_bytes").value_or(0);
  EXPECT_GT(rss, 1 << 20) << "a process with a C++ runtime holds more than 1 MiB";
  EXPECT_GE(SampleValue(text, "process_virtual_memory_bytes").value_or(0), rss);
  EXPECT_GE(SampleValue(text, "process_cpu_seconds_total").value_or(-1), 0);
  const double start = SampleValue(text, "process_start_time_seconds").value_or(0);
  const double now = absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch());
  EXPECT_LE(start, now + 1);  // clock ticks round the start time
  EXPECT_GT(start, now - 24 * 3600) << "this test process started within the day";
  const double fds = SampleValue(text, "process_open_fds").value_or(0);
  EXPECT_GT(fds, 0);
  EXPECT_GT(SampleValue(text, "process_max_fds").value_or(0), fds);
}

// The values are read when collected, not once.
TEST(ProcessMetricsTest, FollowsTheProcessBetweenCollections) {
  const ProcessMetrics metrics("dev");
  const double fds = SampleValue(SerializeProcess(metrics), "process_open_fds").value_or(0);
  const int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(SampleValue(SerializeProcess(metrics), "process_open_fds"), fds + 1);
  close(fd);
  EXPECT_EQ(SampleValue(SerializeProcess(metrics), "process_open_fds"), fds);

  // CPU time advances while this thread computes (in clock ticks, so loop until it shows;
  // bounded, so a counter that never moves fails instead of hanging).
  const double cpu = SampleValue(SerializeProcess(metrics), "process_cpu_seconds_total").value();
  const absl::Time bound = absl::Now() + absl::Seconds(60);
  volatile uint64_t sink = 0;
  double later = cpu;
  while (later <= cpu && absl::Now() < bound) {
    for (int i = 0; i < 1'000'000; ++i) sink = sink + static_cast<uint64_t>(i);
    later = SampleValue(SerializeProcess(metrics), "process_cpu_seconds_total").value();
  }
  EXPECT_GT(later, cpu);
}

TEST(MetricsEndpointTest, ServesTheServerMetricsOnAnEphemeralPort) {
  std::shared_ptr<ServerMetrics> metrics = ExampleMetrics();
  absl::StatusOr<std::unique_ptr<MetricsEndpoint>> endpoint =
      MetricsEndpoint::Start("127.0.0.1:0", metrics);
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  const int port = (*endpoint)->port();
  ASSERT_GT(port, 0);

  absl::StatusOr<std::string> body = testing::HttpGet("127.0.0.1", port, "/metrics");
  ASSERT_TRUE(body.ok()) << body.status();
  // Every family of the server, as collected (hooks included), after the Exposer's own.
  EXPECT_THAT(*body, HasSubstr(metrics->Serialize()));
  EXPECT_THAT(*body, HasSubstr("\ndartserve_requests_running{model=\"fmnist\"} 42\n"));
  EXPECT_THAT(*body, HasSubstr("# TYPE exposer_scrapes_total counter\n"));
  // A query string does not change the path.
  EXPECT_TRUE(testing::HttpGet("127.0.0.1", port, "/metrics?x=1").ok());
  for (const char* path : {"/", "/metric", "/index.html"}) {
    absl::StatusOr<std::string> other = testing::HttpGet("127.0.0.1", port, path);
    EXPECT_EQ(other.status().code(), absl::StatusCode::kNotFound) << path << ": " << other.status();
  }

  // Once the endpoint is gone, its port no longer answers.
  endpoint->reset();
  EXPECT_EQ(testing::HttpGet("127.0.0.1", port, "/metrics").status().code(),
            absl::StatusCode::kUnavailable);
}

TEST(MetricsEndpointTest, ReportsAddressesItCannotUse) {
  auto metrics = std::make_shared<ServerMetrics>();
  absl::StatusOr<std::unique_ptr<MetricsEndpoint>> first =
      MetricsEndpoint::Start("127.0.0.1:0", metrics);
  ASSERT_TRUE(first.ok()) << first.status();
  // A port in use is an error status naming the address and the reason, not an exception.
  const std::string taken = absl::StrCat("127.0.0.1:", (*first)->port());
  absl::StatusOr<std::unique_ptr<MetricsEndpoint>> second = MetricsEndpoint::Start(taken, metrics);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable) << second.status();
  EXPECT_THAT(second.status().message(), HasSubstr(taken));
  EXPECT_THAT(second.status().message(), HasSubstr("in use"));
  // The first one still serves.
  EXPECT_TRUE(testing::HttpGet("127.0.0.1", (*first)->port(), "/metrics").ok());

  for (const char* bad : {"9464", "127.0.0.1:", "127.0.0.1:99999", "999.1.1.1:0", "host:80"}) {
    EXPECT_EQ(MetricsEndpoint::Start(bad, metrics).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
}

TEST(PromtoolTest, AcceptsWhatTheEndpointServes) {
  if (!testing::PrometheusAvailable()) GTEST_SKIP() << "prometheus is not installed";
  std::shared_ptr<ServerMetrics> metrics = ExampleMetrics();
  absl::StatusOr<std::unique_ptr<MetricsEndpoint>> endpoint =
      MetricsEndpoint::Start("127.0.0.1:0", metrics);
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  auto process = std::make_shared<ProcessMetrics>("1.2.3");
  (*endpoint)->Add(process);
  // Twice: the second scrape also carries the Exposer's statistics of the first.
  for (int i = 0; i < 2; ++i) {
    absl::StatusOr<std::string> body =
        testing::HttpGet("127.0.0.1", (*endpoint)->port(), "/metrics");
    ASSERT_TRUE(body.ok()) << body.status();
    EXPECT_THAT(*body, HasSubstr("\nprocess_resident_memory_bytes "));
    EXPECT_THAT(*body, HasSubstr("\ndartserve_build_info{version=\"1.2.3\"} 1\n"));
    EXPECT_EQ(testing::PromtoolCheckMetrics(*body), absl::OkStatus());
  }
}

TEST(PromtoolTest, RejectsBadExpositions) {
  if (!testing::PrometheusAvailable()) GTEST_SKIP() << "prometheus is not installed";
  // A syntax error.
  absl::Status status = testing::PromtoolCheckMetrics("# TYPE x counter\nx{a=b} 1\n");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  // A lint problem only: a counter without the _total suffix.
  status = testing::PromtoolCheckMetrics(
      "# HELP requests Requests.\n# TYPE requests counter\nrequests 1\n");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("_total"));
}

TEST(PrometheusTest, ScrapesTheEndpoint) {
  if (!testing::PrometheusAvailable()) GTEST_SKIP() << "prometheus is not installed";
  std::shared_ptr<ServerMetrics> metrics = ExampleMetrics();
  absl::StatusOr<std::unique_ptr<MetricsEndpoint>> endpoint =
      MetricsEndpoint::Start("127.0.0.1:0", metrics);
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  absl::StatusOr<std::unique_ptr<testing::PrometheusProcess>> prometheus =
      testing::PrometheusProcess::Start((*endpoint)->port());
  ASSERT_TRUE(prometheus.ok()) << prometheus.status();

  absl::StatusOr<nlohmann::json> count =
      (*prometheus)
          ->WaitForResult(
              "dartserve_request_duration_seconds_count{model=\"fmnist\",status=\"ok\"}",
              absl::Seconds(30));
  ASSERT_TRUE(count.ok()) << count.status() << "\n" << (*prometheus)->Log();
  ASSERT_EQ((*count)["result"].size(), 1u) << count->dump();
  // A vector sample is [timestamp, "value"].
  EXPECT_EQ((*count)["result"][0]["value"][1], "5") << count->dump();
  EXPECT_EQ((*count)["result"][0]["metric"]["job"], "dartserve") << count->dump();

  // The escaped label value arrives intact, and so does what the collect hook set.
  absl::StatusOr<nlohmann::json> images =
      (*prometheus)->Query("dartserve_images_total{model!=\"fmnist\"}");
  ASSERT_TRUE(images.ok()) << images.status();
  ASSERT_EQ((*images)["result"].size(), 1u) << images->dump();
  EXPECT_EQ((*images)["result"][0]["metric"]["model"], "say \"hi\"\\\n") << images->dump();
  EXPECT_EQ((*images)["result"][0]["value"][1], "2") << images->dump();
  absl::StatusOr<nlohmann::json> running = (*prometheus)->Query("dartserve_requests_running");
  ASSERT_TRUE(running.ok()) << running.status();
  ASSERT_EQ((*running)["result"].size(), 2u) << running->dump();
  absl::StatusOr<nlohmann::json> live =
      (*prometheus)->Query("dartserve_requests_running{model=\"fmnist\"}");
  ASSERT_TRUE(live.ok()) << live.status();
  ASSERT_EQ((*live)["result"].size(), 1u) << live->dump();
  EXPECT_EQ((*live)["result"][0]["value"][1], "42");

  // Bucket boundaries survive the trip: 3 of the 5 ok calls took <= 0.32 s.
  absl::StatusOr<nlohmann::json> bucket =
      (*prometheus)->Query("dartserve_request_duration_seconds_bucket{status=\"ok\",le=\"0.32\"}");
  ASSERT_TRUE(bucket.ok()) << bucket.status();
  ASSERT_EQ((*bucket)["result"].size(), 1u) << bucket->dump();
  EXPECT_EQ((*bucket)["result"][0]["value"][1], "3");

  // Bad PromQL is an error, not an empty result.
  EXPECT_FALSE((*prometheus)->Query("sum(").ok());
}

}  // namespace
}  // namespace dartserve::server

// The metrics library, its HTTP endpoint, and its output as judged by Debian's promtool and a
// real Prometheus server.
#include "server/metrics.h"

#include <cmath>
#include <cstdlib>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/metrics_http.h"
#include "tests/testing/prometheus.h"

namespace dartserve::metrics {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(RegistryTest, SerializesExactly) {
  Registry registry;
  // Registered out of order: families come out sorted by name, children in creation order.
  Family<Histogram>& latency = registry.AddHistogram("dart_request_duration_seconds",
                                                     "End-to-end latency.", {0.5, 1}, {"model"});
  Family<Counter>& requests =
      registry.AddCounter("dart_requests_total", "Requests by outcome.", {"status", "reason"});
  Gauge& waiting =
      registry.AddGauge("dart_requests_waiting", "Queued \\ waiting\nrequests.").WithLabels({});
  Family<Counter>& unused = registry.AddCounter("dart_unused_total", "Never used.", {"x"});
  (void)unused;

  requests.WithLabels({"ok", ""}).Increment(3);
  requests.WithLabels({"error", "say \"hi\"\\\n"}).Increment();
  waiting.Set(2.5);
  Histogram& fmnist = latency.WithLabels({"fmnist"});
  fmnist.Observe(0.25);
  fmnist.Observe(0.5);  // on a bound: counts in that bucket ("le")
  fmnist.Observe(0.75);
  fmnist.Observe(4);

  EXPECT_EQ(registry.Serialize(),
            "# HELP dart_request_duration_seconds End-to-end latency.\n"
            "# TYPE dart_request_duration_seconds histogram\n"
            "dart_request_duration_seconds_bucket{model=\"fmnist\",le=\"0.5\"} 2\n"
            "dart_request_duration_seconds_bucket{model=\"fmnist\",le=\"1\"} 3\n"
            "dart_request_duration_seconds_bucket{model=\"fmnist\",le=\"+Inf\"} 4\n"
            "dart_request_duration_seconds_sum{model=\"fmnist\"} 5.5\n"
            "dart_request_duration_seconds_count{model=\"fmnist\"} 4\n"
            "# HELP dart_requests_total Requests by outcome.\n"
            "# TYPE dart_requests_total counter\n"
            "dart_requests_total{status=\"ok\",reason=\"\"} 3\n"
            "dart_requests_total{status=\"error\",reason=\"say \\\"hi\\\"\\\\\\n\"} 1\n"
            "# HELP dart_requests_waiting Queued \\\\ waiting\\nrequests.\n"
            "# TYPE dart_requests_waiting gauge\n"
            "dart_requests_waiting 2.5\n");
  // dart_unused_total has no children, so it is left out (as the Go client does).
}

TEST(RegistryTest, UnlabelledFamiliesAreExposedFromTheStart) {
  Registry registry;
  registry.AddCounter("a_total", "A.");
  registry.AddHistogram("b_seconds", "B.", {1});
  EXPECT_EQ(registry.Serialize(),
            "# HELP a_total A.\n"
            "# TYPE a_total counter\n"
            "a_total 0\n"
            "# HELP b_seconds B.\n"
            "# TYPE b_seconds histogram\n"
            "b_seconds_bucket{le=\"1\"} 0\n"
            "b_seconds_bucket{le=\"+Inf\"} 0\n"
            "b_seconds_sum 0\n"
            "b_seconds_count 0\n");
}

TEST(RegistryTest, WithLabelsReturnsTheSameChild) {
  Registry registry;
  Family<Gauge>& family = registry.AddGauge("g", "G.", {"a"});
  Gauge& first = family.WithLabels({"x"});
  family.WithLabels({"y"}).Set(7);
  EXPECT_EQ(&family.WithLabels({"x"}), &first);
  EXPECT_EQ(family.WithLabels({"y"}).Value(), 7);
}

TEST(RegistryTest, IdenticalRegistrationReturnsTheExistingFamily) {
  Registry registry;
  Family<Counter>& first = registry.AddCounter("c_total", "C.", {"a"});
  EXPECT_EQ(&registry.AddCounter("c_total", "C.", {"a"}), &first);
  Family<Histogram>& h = registry.AddHistogram("h_seconds", "H.", {1, 2});
  // A trailing +Inf bound is implicit, so this is the same histogram.
  EXPECT_EQ(&registry.AddHistogram("h_seconds", "H.", {1, 2, INFINITY}), &h);
}

TEST(RegistryTest, CollectHooksRunOnEachSerialize) {
  Registry registry;
  Gauge& queue = registry.AddGauge("queue_length", "Live queue length.").WithLabels({});
  int live_queue_length = 3;
  int runs = 0;
  registry.AddCollectHook([&] {
    ++runs;
    queue.Set(live_queue_length);
  });
  EXPECT_THAT(registry.Serialize(), HasSubstr("\nqueue_length 3\n"));
  live_queue_length = 5;
  EXPECT_THAT(registry.Serialize(), HasSubstr("\nqueue_length 5\n"));
  EXPECT_EQ(runs, 2);
}

TEST(CounterTest, IgnoresNegativeAndNanIncrements) {
  Counter counter;
  counter.Increment(2);
  counter.Increment(-1);
  counter.Increment(std::numeric_limits<double>::quiet_NaN());
  counter.Increment();
  EXPECT_EQ(counter.Value(), 3);
}

TEST(GaugeTest, GoesUpAndDown) {
  Gauge gauge;
  gauge.Increment(5);
  gauge.Decrement(2);
  gauge.Decrement();
  EXPECT_EQ(gauge.Value(), 2);
  gauge.Set(-4);
  EXPECT_EQ(gauge.Value(), -4);
}

TEST(HistogramTest, BucketsAreCumulativeEndingWithInf) {
  Histogram histogram({1, 2, 4});
  for (double v : {0.0, 1.0, 1.5, 2.0, 3.0, 100.0, -7.0}) histogram.Observe(v);
  EXPECT_THAT(histogram.BucketCounts(), ElementsAre(3, 5, 6, 7));
  EXPECT_EQ(histogram.Count(), 7u);
  EXPECT_EQ(histogram.Sum(), 100.5);
  histogram.Observe(std::numeric_limits<double>::quiet_NaN());
  EXPECT_THAT(histogram.BucketCounts(), ElementsAre(3, 5, 6, 8));
  EXPECT_TRUE(std::isnan(histogram.Sum()));
}

TEST(MetricsTest, ConcurrentUpdatesSumExactly) {
  Registry registry;
  Family<Counter>& counters = registry.AddCounter("c_total", "C.", {"shard"});
  Counter& counter = counters.WithLabels({"0"});
  Gauge& gauge = registry.AddGauge("g", "G.").WithLabels({});
  Histogram& histogram = registry.AddHistogram("h", "H.", {0.5}).WithLabels({});
  constexpr int kThreads = 4;
  constexpr int kIterations = 50000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kIterations; ++i) {
        counter.Increment();
        // Concurrent WithLabels on an existing child must find it, not create another.
        counters.WithLabels({"0"}).Increment(2);
        gauge.Increment(3);
        gauge.Decrement(1);
        histogram.Observe(t % 2 == 0 ? 0.25 : 1.0);  // exact in binary, so the sum is exact
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  constexpr double kTotal = double{kThreads} * kIterations;
  EXPECT_EQ(counter.Value(), 3 * kTotal);
  EXPECT_EQ(gauge.Value(), 2 * kTotal);
  EXPECT_EQ(histogram.Count(), static_cast<uint64_t>(kTotal));
  EXPECT_THAT(histogram.BucketCounts(),
              ElementsAre(static_cast<uint64_t>(kTotal / 2), static_cast<uint64_t>(kTotal)));
  EXPECT_EQ(histogram.Sum(), kTotal / 2 * 0.25 + kTotal / 2 * 1.0);
}

TEST(MetricsTest, ValuesRoundTripAndSpecialValuesAreSpelledForPrometheus) {
  EXPECT_EQ(FormatValue(INFINITY), "+Inf");
  EXPECT_EQ(FormatValue(-INFINITY), "-Inf");
  EXPECT_EQ(FormatValue(std::numeric_limits<double>::quiet_NaN()), "NaN");
  EXPECT_EQ(FormatValue(0.1), "0.1");
  EXPECT_EQ(FormatValue(42), "42");
  for (double v : {0.1 + 0.2, 1.0 / 3, 1e-300, 6.02214076e23, -123456789.125,
                   std::numeric_limits<double>::max(), std::numeric_limits<double>::denorm_min()}) {
    EXPECT_EQ(std::strtod(FormatValue(v).c_str(), nullptr), v) << FormatValue(v);
  }
  Registry registry;
  Family<Gauge>& gauges = registry.AddGauge("g", "G.", {"v"});
  gauges.WithLabels({"inf"}).Set(INFINITY);
  gauges.WithLabels({"nan"}).Set(std::numeric_limits<double>::quiet_NaN());
  EXPECT_THAT(registry.Serialize(), HasSubstr("g{v=\"inf\"} +Inf\ng{v=\"nan\"} NaN\n"));
}

TEST(MetricsTest, BucketHelpers) {
  EXPECT_THAT(ExponentialBuckets(0.5, 3, 3), ElementsAre(0.5, 1.5, 4.5));
  EXPECT_THAT(LinearBuckets(1, 2, 3), ElementsAre(1, 3, 5));
}

// Programming errors abort with a message naming the problem. (Death tests run first, before
// any test starts civetweb threads, so gtest's default "fast" style is safe.)
TEST(MetricsDeathTest, WrongNumberOfLabelValues) {
  Registry registry;
  Family<Counter>& family = registry.AddCounter("c_total", "C.", {"a", "b"});
  EXPECT_DEATH(family.WithLabels({"x"}),
               "c_total has 2 label\\(s\\) \\(a, b\\) but WithLabels got 1");
}

TEST(MetricsDeathTest, InvalidNames) {
  Registry registry;
  EXPECT_DEATH(registry.AddCounter("1bad_total", "."), "invalid metric name \"1bad_total\"");
  EXPECT_DEATH(registry.AddCounter("bad-name_total", "."), "invalid metric name");
  EXPECT_DEATH(registry.AddGauge("g", ".", {"bad-label"}), "invalid label name \"bad-label\"");
  EXPECT_DEATH(registry.AddGauge("g", ".", {"__reserved"}), "invalid label name");
  EXPECT_DEATH(registry.AddGauge("g", ".", {"a", "a"}), "duplicate label name");
  EXPECT_DEATH(registry.AddHistogram("h", ".", {1}, {"le"}), "\"le\" is reserved");
}

TEST(MetricsDeathTest, ConflictingRegistrations) {
  Registry registry;
  registry.AddCounter("x_total", "X.");
  registry.AddHistogram("lat_seconds", "L.", {1});
  EXPECT_DEATH(registry.AddGauge("x_total", "X."), "x_total is already registered as a counter");
  EXPECT_DEATH(registry.AddCounter("x_total", "X.", {"a"}), "already registered");
  EXPECT_DEATH(registry.AddHistogram("lat_seconds", "L.", {2}), "already registered");
  EXPECT_DEATH(registry.AddGauge("lat_seconds_count", "C."),
               "would expose lat_seconds_count, which metric family lat_seconds already exposes");
}

TEST(MetricsDeathTest, BadBuckets) {
  Registry registry;
  EXPECT_DEATH(registry.AddHistogram("h", ".", {1, 1}), "not strictly increasing");
  EXPECT_DEATH(registry.AddHistogram("h", ".", {2, 1}), "not strictly increasing");
  EXPECT_DEATH(registry.AddHistogram("h", ".", {std::nan("")}), "not finite");
  EXPECT_DEATH(ExponentialBuckets(0, 2, 3), "needs start > 0");
  EXPECT_DEATH(LinearBuckets(0, 1, 0), "count >= 1");
}

// A registry with every metric type, labels and escaping: what a server exposes.
void FillExampleRegistry(Registry* registry) {
  Family<Counter>& requests =
      registry->AddCounter("dart_requests_total", "Requests by outcome.", {"status", "reason"});
  requests.WithLabels({"ok", ""}).Increment(7);
  requests.WithLabels({"error", "bad \"size\"\\\n"}).Increment();
  registry->AddGauge("dart_requests_waiting", "Requests waiting.").WithLabels({}).Set(3);
  Family<Histogram>& latency =
      registry->AddHistogram("dart_request_duration_seconds", "End-to-end latency.",
                             ExponentialBuckets(0.01, 2, 10), {"model"});
  for (double v : {0.005, 0.03, 0.2, 0.9, 30.0}) latency.WithLabels({"fmnist"}).Observe(v);
}

TEST(MetricsHttpServerTest, ServesMetricsOnAnEphemeralPortAnd404Elsewhere) {
  Registry registry;
  FillExampleRegistry(&registry);
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> server =
      MetricsHttpServer::Start(&registry, "127.0.0.1:0");
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_GT((*server)->port(), 0);

  absl::StatusOr<std::string> body =
      dartserve::testing::HttpGet("127.0.0.1", (*server)->port(), "/metrics");
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(*body, registry.Serialize());
  // A query string does not change the path.
  EXPECT_TRUE(dartserve::testing::HttpGet("127.0.0.1", (*server)->port(), "/metrics?x=1").ok());

  for (const char* path : {"/", "/metrics/extra", "/metric", "/index.html"}) {
    absl::StatusOr<std::string> other =
        dartserve::testing::HttpGet("127.0.0.1", (*server)->port(), path);
    EXPECT_EQ(other.status().code(), absl::StatusCode::kNotFound) << path << ": " << other.status();
  }

  // Once the server is gone, its port no longer answers.
  const int port = (*server)->port();
  server->reset();
  EXPECT_EQ(dartserve::testing::HttpGet("127.0.0.1", port, "/metrics").status().code(),
            absl::StatusCode::kUnavailable);
}

TEST(MetricsHttpServerTest, ReportsAddressesItCannotUse) {
  Registry registry;
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> first =
      MetricsHttpServer::Start(&registry, "127.0.0.1:0");
  ASSERT_TRUE(first.ok()) << first.status();
  const std::string taken = "127.0.0.1:" + std::to_string((*first)->port());
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> second =
      MetricsHttpServer::Start(&registry, taken);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable) << second.status();
  EXPECT_THAT(second.status().message(), HasSubstr(taken));

  for (const char* bad : {"9464", "127.0.0.1:", "127.0.0.1:99999", "999.1.1.1:0", "host:80"}) {
    EXPECT_EQ(MetricsHttpServer::Start(&registry, bad).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
}

TEST(PromtoolTest, AcceptsTheRegistryExposition) {
  if (!dartserve::testing::PrometheusAvailable()) GTEST_SKIP() << "prometheus is not installed";
  Registry registry;
  FillExampleRegistry(&registry);
  EXPECT_EQ(dartserve::testing::PromtoolCheckMetrics(registry.Serialize()), absl::OkStatus());
}

TEST(PromtoolTest, RejectsBadExpositions) {
  if (!dartserve::testing::PrometheusAvailable()) GTEST_SKIP() << "prometheus is not installed";
  // A syntax error.
  absl::Status status = dartserve::testing::PromtoolCheckMetrics("# TYPE x counter\nx{a=b} 1\n");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  // A lint problem only: a counter without the _total suffix.
  status = dartserve::testing::PromtoolCheckMetrics(
      "# HELP requests Requests.\n# TYPE requests counter\nrequests 1\n");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("_total"));
}

TEST(PrometheusTest, ScrapesTheEndpoint) {
  if (!dartserve::testing::PrometheusAvailable()) GTEST_SKIP() << "prometheus is not installed";
  Registry registry;
  FillExampleRegistry(&registry);
  Gauge& live = registry.AddGauge("dart_live_value", "Set by a collect hook.").WithLabels({});
  registry.AddCollectHook([&live] { live.Set(42); });
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> server =
      MetricsHttpServer::Start(&registry, "127.0.0.1:0");
  ASSERT_TRUE(server.ok()) << server.status();
  absl::StatusOr<std::unique_ptr<dartserve::testing::PrometheusProcess>> prometheus =
      dartserve::testing::PrometheusProcess::Start((*server)->port());
  ASSERT_TRUE(prometheus.ok()) << prometheus.status();

  absl::StatusOr<nlohmann::json> count =
      (*prometheus)
          ->WaitForResult("dart_request_duration_seconds_count{model=\"fmnist\"}",
                          absl::Seconds(30));
  ASSERT_TRUE(count.ok()) << count.status() << "\n" << (*prometheus)->Log();
  ASSERT_EQ((*count)["result"].size(), 1u) << count->dump();
  // A vector sample is [timestamp, "value"].
  EXPECT_EQ((*count)["result"][0]["value"][1], "5") << count->dump();
  EXPECT_EQ((*count)["result"][0]["metric"]["job"], "dartserve") << count->dump();

  // The escaped label value arrives intact, and so does what the collect hook set.
  absl::StatusOr<nlohmann::json> errors =
      (*prometheus)->Query("dart_requests_total{status=\"error\"}");
  ASSERT_TRUE(errors.ok()) << errors.status();
  ASSERT_EQ((*errors)["result"].size(), 1u) << errors->dump();
  EXPECT_EQ((*errors)["result"][0]["metric"]["reason"], "bad \"size\"\\\n") << errors->dump();
  absl::StatusOr<nlohmann::json> live_value = (*prometheus)->Query("dart_live_value");
  ASSERT_TRUE(live_value.ok()) << live_value.status();
  ASSERT_EQ((*live_value)["result"].size(), 1u) << live_value->dump();
  EXPECT_EQ((*live_value)["result"][0]["value"][1], "42");

  // Bucket boundaries survive the trip: 3 of the 5 observations are <= 0.32.
  absl::StatusOr<nlohmann::json> bucket =
      (*prometheus)->Query("dart_request_duration_seconds_bucket{le=\"0.32\"}");
  ASSERT_TRUE(bucket.ok()) << bucket.status();
  ASSERT_EQ((*bucket)["result"].size(), 1u) << bucket->dump();
  EXPECT_EQ((*bucket)["result"][0]["value"][1], "3");

  // Bad PromQL is an error, not an empty result.
  EXPECT_FALSE((*prometheus)->Query("sum(").ok());
}

}  // namespace
}  // namespace dartserve::metrics

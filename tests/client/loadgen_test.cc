#include "client/loadgen.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/prometheus_scrape.h"
#include "common/file_io.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/server_metrics.h"
#include "tests/client/fake_server.h"

namespace dartserve::client {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::Pair;
using ::testing::StartsWith;
using Clock = std::chrono::steady_clock;

// An arbitrary fixed start, so that end times are exact.
const Clock::time_point kStart = Clock::time_point() + std::chrono::hours(1);

Clock::time_point At(double seconds) {
  return kStart +
         std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

CallRecord Ok(double latency) {
  return {.code = grpc::StatusCode::OK, .latency = latency, .end = At(latency)};
}

CallRecord Failed(grpc::StatusCode code, double latency) {
  return {.code = code, .latency = latency, .end = At(latency)};
}

LoadRun RunOf(std::vector<CallRecord> records) {
  LoadRun run;
  run.start = kStart;
  run.sent = static_cast<int64_t>(records.size());
  run.records = std::move(records);
  return run;
}

// --- the report: Describe and Summarize --------------------------------------------------------

TEST(DescribeTest, NearestRankOfOneToHundred) {
  std::vector<double> samples;
  for (int i = 1; i <= 100; ++i) samples.push_back(i);
  std::shuffle(samples.begin(), samples.end(), std::mt19937_64(3));  // Describe sorts
  const Distribution d = Describe(samples);
  EXPECT_EQ(d.count, 100);
  EXPECT_EQ(d.p50, 50);
  EXPECT_EQ(d.p90, 90);
  EXPECT_EQ(d.p95, 95);
  EXPECT_EQ(d.p99, 99);
  EXPECT_EQ(d.max, 100);
  EXPECT_DOUBLE_EQ(d.mean, 50.5);
}

TEST(DescribeTest, TenSamplesRoundRanksUp) {
  // Nearest rank: p90 of 10 samples is the 9th, p95 and p99 the 10th.
  const Distribution d = Describe({0.7, 0.1, 0.9, 0.3, 1.0, 0.5, 0.2, 0.8, 0.4, 0.6});
  EXPECT_EQ(d.p50, 0.5);
  EXPECT_EQ(d.p90, 0.9);
  EXPECT_EQ(d.p95, 1.0);
  EXPECT_EQ(d.p99, 1.0);
  EXPECT_EQ(d.max, 1.0);
}

TEST(DescribeTest, SingleSampleIsEveryPercentile) {
  const Distribution d = Describe({2.5});
  EXPECT_EQ(d.count, 1);
  EXPECT_EQ(d.p50, 2.5);
  EXPECT_EQ(d.p90, 2.5);
  EXPECT_EQ(d.p99, 2.5);
  EXPECT_EQ(d.max, 2.5);
  EXPECT_EQ(d.mean, 2.5);
}

TEST(DescribeTest, NoSamplesIsAllZero) {
  const Distribution d = Describe({});
  EXPECT_EQ(d.count, 0);
  EXPECT_EQ(d.p50, 0);
  EXPECT_EQ(d.p99, 0);
  EXPECT_EQ(d.max, 0);
  EXPECT_EQ(d.mean, 0);  // not NaN
}

TEST(SummarizeTest, LatencyPercentilesAndCounts) {
  std::vector<CallRecord> records;
  for (int i = 100; i >= 1; --i) records.push_back(Ok(i / 100.0));
  const LoadSummary s = Summarize(RunOf(records));
  EXPECT_EQ(s.sent, 100);
  EXPECT_EQ(s.requests, 100);
  EXPECT_EQ(s.ok, 100);
  EXPECT_EQ(s.failed, 0);
  EXPECT_TRUE(s.errors.empty());
  EXPECT_EQ(s.latency.count, 100);
  EXPECT_EQ(s.latency.p50, 0.50);
  EXPECT_EQ(s.latency.p90, 0.90);
  EXPECT_EQ(s.latency.p99, 0.99);
  EXPECT_EQ(s.latency.max, 1.00);
  // The last call ends 1 s after the start.
  EXPECT_DOUBLE_EQ(s.seconds, 1.0);
  EXPECT_DOUBLE_EQ(s.requests_per_second, 100);
}

TEST(SummarizeTest, ErrorsAreCountedByCodeAndKeptOutOfLatency) {
  const LoadSummary s = Summarize(RunOf({
      Ok(1),
      Failed(grpc::StatusCode::DEADLINE_EXCEEDED, 100),
      Ok(2),
      Failed(grpc::StatusCode::RESOURCE_EXHAUSTED, 0.001),
      Ok(4),
      Failed(grpc::StatusCode::DEADLINE_EXCEEDED, 100),
      Ok(3),
  }));
  EXPECT_EQ(s.requests, 7);
  EXPECT_EQ(s.ok, 4);
  EXPECT_EQ(s.failed, 3);
  EXPECT_THAT(s.errors, ElementsAre(Pair("DEADLINE_EXCEEDED", 2), Pair("RESOURCE_EXHAUSTED", 1)));
  // Only the four successful calls: neither the 100 s timeouts nor the fast rejection.
  EXPECT_EQ(s.latency.count, 4);
  EXPECT_EQ(s.latency.p50, 2);
  EXPECT_EQ(s.latency.p90, 4);
  EXPECT_EQ(s.latency.max, 4);
  EXPECT_DOUBLE_EQ(s.latency.mean, 2.5);
  // Failed calls still count towards the wall time and the request rate.
  EXPECT_DOUBLE_EQ(s.seconds, 100);
  EXPECT_DOUBLE_EQ(s.requests_per_second, 0.07);
  EXPECT_DOUBLE_EQ(s.ok_per_second, 0.04);
}

TEST(SummarizeTest, OnlyFailedCallsGiveNoLatency) {
  const LoadSummary s = Summarize(RunOf({Failed(grpc::StatusCode::UNAVAILABLE, 0.5)}));
  EXPECT_EQ(s.ok, 0);
  EXPECT_EQ(s.failed, 1);
  EXPECT_THAT(s.errors, ElementsAre(Pair("UNAVAILABLE", 1)));
  EXPECT_EQ(s.latency.count, 0);
  EXPECT_EQ(s.latency.p99, 0);
  EXPECT_EQ(s.latency.max, 0);
}

TEST(SummarizeTest, SingleCall) {
  CallRecord call = Ok(0.25);
  call.to_accepted = 0.01;
  call.first_preview = 0.05;
  call.previews = 8;
  call.images = 2;
  const LoadSummary s = Summarize(RunOf({call}));
  EXPECT_EQ(s.latency.count, 1);
  EXPECT_EQ(s.latency.p50, 0.25);
  EXPECT_EQ(s.latency.p99, 0.25);
  EXPECT_EQ(s.latency.max, 0.25);
  EXPECT_EQ(s.time_to_accepted.p99, 0.01);
  EXPECT_EQ(s.time_to_first_preview.p50, 0.05);
  EXPECT_EQ(s.time_to_first_preview.count, 1);
  EXPECT_EQ(s.images, 2);
  EXPECT_DOUBLE_EQ(s.images_per_second, 8);
  EXPECT_EQ(s.previews_per_call, 8);
}

TEST(SummarizeTest, NoCallsIsAllZeroAndFinite) {
  LoadRun run = RunOf({});
  run.sent = 3;  // e.g. interrupted before any call ended
  run.interrupted = true;
  const LoadSummary s = Summarize(run);
  EXPECT_TRUE(s.interrupted);
  EXPECT_EQ(s.sent, 3);
  EXPECT_EQ(s.requests, 0);
  EXPECT_EQ(s.ok, 0);
  EXPECT_EQ(s.failed, 0);
  EXPECT_EQ(s.latency.count, 0);
  EXPECT_EQ(s.latency.p50, 0);
  EXPECT_GT(s.seconds, 0);
  EXPECT_EQ(s.requests_per_second, 0);
  EXPECT_EQ(s.images_per_second, 0);
  EXPECT_EQ(s.previews_per_call, 0);
}

TEST(SummarizeTest, AcceptedAndPreviewTimesOnlyFromCallsThatHadThem) {
  CallRecord a = Ok(1), b = Ok(2), c = Ok(3), failed = Failed(grpc::StatusCode::CANCELLED, 1);
  a.to_accepted = 0.1;
  a.first_preview = 0.3;
  a.previews = 2;
  b.to_accepted = 0.2;    // no preview
  c.first_preview = 0.6;  // no Accepted (an old server)
  c.previews = 1;
  failed.to_accepted = 0.9;  // a failed call's times are left out too
  failed.first_preview = 0.9;
  failed.previews = 1;
  const LoadSummary s = Summarize(RunOf({a, b, c, failed}));
  EXPECT_EQ(s.time_to_accepted.count, 2);
  EXPECT_EQ(s.time_to_accepted.p50, 0.1);
  EXPECT_EQ(s.time_to_accepted.p99, 0.2);
  EXPECT_EQ(s.time_to_first_preview.count, 2);
  EXPECT_EQ(s.time_to_first_preview.p50, 0.3);
  EXPECT_EQ(s.time_to_first_preview.p99, 0.6);
  EXPECT_EQ(s.previews, 4);  // every call's previews
  EXPECT_EQ(s.previews_per_call, 1);
}

// A call of `kind` that asked for `asked` images, got `images` and ended with `code`.
CallRecord KindCall(CallKind kind, grpc::StatusCode code, int asked, int images) {
  CallRecord r = Failed(code, 1);
  r.kind = kind;
  r.asked_images = asked;
  r.images = images;
  return r;
}

TEST(SummarizeTest, LostCallsEndedOkWithoutTheirImages) {
  using enum grpc::StatusCode;
  CallRecord cancelled_by_rpc = KindCall(CallKind::kCancelRpc, CANCELLED, 1, 0);
  cancelled_by_rpc.cancel_rpc = OK;
  CallRecord late_cancel_rpc = KindCall(CallKind::kCancelRpc, OK, 1, 1);
  late_cancel_rpc.cancel_rpc = NOT_FOUND;
  const std::vector<CallRecord> records = {
      KindCall(CallKind::kNormal, OK, 2, 2),
      KindCall(CallKind::kNormal, OK, 2, 1),  // lost: OK, one image short
      KindCall(CallKind::kClientCancel, CANCELLED, 1, 0),
      KindCall(CallKind::kShortDeadline, DEADLINE_EXCEEDED, 1, 0),
      KindCall(CallKind::kShortDeadline, OK, 1, 0),  // lost
      KindCall(CallKind::kAbandon, OK, 1, 0),        // stopped reading: not lost
      cancelled_by_rpc,
      late_cancel_rpc,
  };
  EXPECT_FALSE(IsLost(records[0]));
  EXPECT_TRUE(IsLost(records[1]));
  EXPECT_FALSE(IsLost(Ok(1))) << "a record that does not know what it asked for";
  const LoadSummary s = Summarize(RunOf(records));
  EXPECT_EQ(s.lost, 2);
  EXPECT_THAT(s.outcomes, ::testing::SizeIs(5));
  const KindOutcome& normal = s.outcomes.at("normal");
  EXPECT_EQ(normal.calls, 2);
  EXPECT_EQ(normal.lost, 1);
  EXPECT_THAT(normal.statuses, ElementsAre(Pair("OK", 2)));
  EXPECT_THAT(s.outcomes.at("short_deadline").statuses,
              ElementsAre(Pair("DEADLINE_EXCEEDED", 1), Pair("OK", 1)));
  EXPECT_EQ(s.outcomes.at("abandon").lost, 0);
  const KindOutcome& rpc = s.outcomes.at("cancel_rpc");
  EXPECT_THAT(rpc.statuses, ElementsAre(Pair("CANCELLED", 1), Pair("OK", 1)));
  EXPECT_THAT(rpc.cancel_rpcs, ElementsAre(Pair("NOT_FOUND", 1), Pair("OK", 1)));
}

TEST(SummarizeTest, RssMaximumAndSecondHalfGrowth) {
  LoadRun run = RunOf({Ok(1)});
  run.server_rss = {{0, 100}, {5, 300}, {10, 250}, {15, 260}, {20, 270}};
  run.rss_scrape_errors = 1;
  const LoadSummary s = Summarize(run);
  EXPECT_EQ(s.server_rss.size(), 5u);
  EXPECT_EQ(s.rss_max_bytes, 300);
  EXPECT_EQ(s.rss_second_half_growth_bytes, 20);  // 270 - the middle sample's 250
  EXPECT_EQ(s.rss_scrape_errors, 1);
}

LoadgenOptions ReportOptions() {
  LoadgenOptions options;
  options.connection.server = "host:1";
  options.concurrency = 4;
  options.rate = 20;
  options.duration = 10;
  options.mix_text = "class:0-9";
  options.seed = 7;
  options.warmup = 2;
  options.timeout = 60;
  return options;
}

TEST(ReportTest, Text) {
  CallRecord call = Ok(0.5);
  call.to_accepted = 0.001;
  call.first_preview = 0.1;
  call.previews = 3;
  call.images = 2;
  LoadRun run = RunOf({call, Ok(1.5), Failed(grpc::StatusCode::RESOURCE_EXHAUSTED, 0.2)});
  run.sent = 4;
  run.max_waiting = 5;
  run.interrupted = true;
  EXPECT_EQ(ReportText(ReportOptions(), Summarize(run)),
            "calls: 4 sent, 3 completed, 2 ok, 1 failed (RESOURCE_EXHAUSTED 1), 0 lost "
            "[interrupted]\n"
            "throughput: 1.33 images/s, 2.00 requests/s over 1.50 s (offered 20/s; at most 5 "
            "waited in the client)\n"
            "latency (s): p50 0.500  p90 1.500  p95 1.500  p99 1.500  max 1.500  mean 1.000\n"
            "time to accepted (s): p50 0.001  p99 0.001\n"
            "time to first preview (s): p50 0.100  p99 0.100  (1 calls with previews, 1.0 "
            "previews per call)\n");
}

TEST(ReportTest, ClosedLoopTextHasNoOfferedRate) {
  LoadgenOptions options = ReportOptions();
  options.rate = 0;
  const std::string text = ReportText(options, Summarize(RunOf({Ok(1)})));
  EXPECT_THAT(text, StartsWith("calls: 1 sent, 1 completed, 1 ok, 0 failed, 0 lost\n"
                               "throughput: 0.00 images/s, 1.00 requests/s over 1.00 s\n"));
}

TEST(ReportTest, TextListsOutcomesPerKindAndTheRss) {
  using enum grpc::StatusCode;
  CallRecord cancelled_by_rpc = KindCall(CallKind::kCancelRpc, CANCELLED, 1, 0);
  cancelled_by_rpc.cancel_rpc = OK;
  LoadRun run = RunOf({KindCall(CallKind::kNormal, OK, 1, 1), cancelled_by_rpc,
                       KindCall(CallKind::kClientCancel, CANCELLED, 1, 0),
                       KindCall(CallKind::kClientCancel, OK, 1, 0)});
  constexpr double kMiB = 1 << 20;
  run.server_rss = {{0, 100 * kMiB}, {5.2, 110 * kMiB}, {10, 110 * kMiB}};
  const std::string text = ReportText(ReportOptions(), Summarize(run));
  EXPECT_THAT(text, HasSubstr(", 1 lost\n"));
  // In kAllCallKinds order, not alphabetically.
  EXPECT_THAT(text, HasSubstr("  normal: 1 calls (OK 1), 0 lost\n"
                              "  client_cancel: 2 calls (CANCELLED 1, OK 1), 1 lost\n"
                              "  cancel_rpc: 1 calls (CANCELLED 1), CancelGeneration (OK 1), 0 "
                              "lost\n"
                              "server RSS (MiB): 100.0 at 0 s, 110.0 at 5 s, 110.0 at 10 s; max "
                              "110.0, second half +0.0 (3 samples)\n"));
}

TEST(ReportTest, TextShowsEightRssSamplesOfMany) {
  LoadRun run = RunOf({Ok(1)});
  for (int i = 0; i < 50; ++i) run.server_rss.push_back({i * 10.0, (100.0 + i) * (1 << 20)});
  const std::string text = ReportText(ReportOptions(), Summarize(run));
  EXPECT_THAT(text, HasSubstr("server RSS (MiB): 100.0 at 0 s, 107.0 at 70 s,"));
  EXPECT_THAT(text, HasSubstr(", 149.0 at 490 s; max 149.0, second half +24.0 (50 samples)\n"));
  // Normal calls alone get no outcome lines.
  EXPECT_THAT(text, Not(HasSubstr("  normal:")));
}

TEST(ReportTest, JsonEchoesTheConfigAndHasFlatKeys) {
  LoadRun run = RunOf({Ok(1), Ok(2), Failed(grpc::StatusCode::DEADLINE_EXCEEDED, 60)});
  run.max_waiting = 3;
  const nlohmann::json json = ReportJson(ReportOptions(), Summarize(run));
  EXPECT_EQ(json.at("config").at("server"), "host:1");
  EXPECT_EQ(json.at("config").at("tls"), false);
  EXPECT_EQ(json.at("config").at("concurrency"), 4);
  EXPECT_EQ(json.at("config").at("rate"), 20.0);
  EXPECT_EQ(json.at("config").at("mix"), "class:0-9");
  EXPECT_EQ(json.at("config").at("seed"), 7u);
  EXPECT_EQ(json.at("sent"), 3);
  EXPECT_EQ(json.at("requests"), 3);
  EXPECT_EQ(json.at("ok"), 2);
  EXPECT_EQ(json.at("failed"), 1);
  EXPECT_EQ(json.at("errors"), nlohmann::json({{"DEADLINE_EXCEEDED", 1}}));
  EXPECT_EQ(json.at("latency_p50_s"), 1.0);
  EXPECT_EQ(json.at("latency_p99_s"), 2.0);
  EXPECT_EQ(json.at("latency_max_s"), 2.0);
  EXPECT_EQ(json.at("latency_mean_s"), 1.5);
  EXPECT_EQ(json.at("seconds"), 60.0);
  EXPECT_EQ(json.at("calls_with_previews"), 0);
  EXPECT_EQ(json.at("max_waiting_in_client"), 3);
  EXPECT_EQ(json.at("lost"), 0);
  EXPECT_EQ(json.at("outcomes").at("normal").at("calls"), 3);
  EXPECT_EQ(json.at("outcomes").at("normal").at("statuses"),
            nlohmann::json({{"OK", 2}, {"DEADLINE_EXCEEDED", 1}}));
  EXPECT_EQ(json.at("server_rss"), nlohmann::json::array());
  for (const char* key :
       {"interrupted", "images", "requests_per_second", "ok_per_second", "images_per_second",
        "latency_p90_s", "latency_p95_s", "time_to_accepted_p50_s", "time_to_accepted_p99_s",
        "time_to_first_preview_p50_s", "time_to_first_preview_p99_s", "previews_per_call"}) {
    EXPECT_TRUE(json.contains(key)) << key;
  }
}

TEST(OptionsTest, ValidateNamesTheFlag) {
  EXPECT_TRUE(ValidateLoadgenOptions(LoadgenOptions()).ok());
  auto message_of = [](void (*mutate)(LoadgenOptions&)) {
    LoadgenOptions options;
    mutate(options);
    const absl::Status status = ValidateLoadgenOptions(options);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    return std::string(status.message());
  };
  EXPECT_THAT(message_of([](LoadgenOptions& o) { o.concurrency = 0; }), HasSubstr("--concurrency"));
  EXPECT_THAT(message_of([](LoadgenOptions& o) { o.rate = -1; }), HasSubstr("--rate"));
  EXPECT_THAT(message_of([](LoadgenOptions& o) { o.rate = std::nan(""); }), HasSubstr("--rate"));
  EXPECT_THAT(message_of([](LoadgenOptions& o) { o.duration = 0; }), HasSubstr("--duration"));
  EXPECT_THAT(message_of([](LoadgenOptions& o) { o.warmup = -1; }), HasSubstr("--warmup"));
  EXPECT_THAT(message_of([](LoadgenOptions& o) { o.timeout = -1; }), HasSubstr("--timeout"));
  EXPECT_THAT(message_of([](LoadgenOptions& o) { o.short_timeout = 0; }),
              HasSubstr("--short_timeout"));
  EXPECT_THAT(message_of([](LoadgenOptions& o) { o.abandon_seconds = -1; }),
              HasSubstr("--abandon_seconds"));
  EXPECT_THAT(message_of([](LoadgenOptions& o) { o.rss_every = 0; }), HasSubstr("--rss_every"));
  EXPECT_THAT(message_of([](LoadgenOptions& o) { o.soak = true; }), HasSubstr("--metrics"));
}

// --- scraping the server's metrics ---------------------------------------------------------------

TEST(ScrapeTest, SampleValueReadsOneSeries) {
  const std::string exposition =
      "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
      "# TYPE process_resident_memory_bytes gauge\n"
      "process_resident_memory_bytes 1.5e+08\n"
      "process_resident_memory_bytes_total 7\n"
      "dartserve_images_total{model=\"a\"} 3 1700000000000\n"
      "broken NaNx\n";
  EXPECT_EQ(SampleValue(exposition, "process_resident_memory_bytes"), 1.5e8);
  EXPECT_EQ(SampleValue(exposition, "dartserve_images_total{model=\"a\"}"), 3);
  EXPECT_EQ(SampleValue(exposition, "process_resident"), std::nullopt);
  EXPECT_EQ(SampleValue(exposition, "dartserve_images_total"), std::nullopt);
  EXPECT_EQ(SampleValue(exposition, "broken"), std::nullopt);
}

TEST(ScrapeTest, ScrapeSampleReadsAnEndpointAndNamesWhatIsMissing) {
  // The endpoint holds what it serves weakly.
  const auto process = std::make_shared<server::ProcessMetrics>("t");
  absl::StatusOr<std::unique_ptr<server::MetricsEndpoint>> endpoint =
      server::MetricsEndpoint::Start("127.0.0.1:0", process);
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  const std::string address = absl::StrCat("127.0.0.1:", (*endpoint)->port());
  absl::StatusOr<double> rss = ScrapeSample(address, "process_resident_memory_bytes");
  ASSERT_TRUE(rss.ok()) << rss.status();
  EXPECT_GT(*rss, 1 << 20);
  EXPECT_EQ(ScrapeSample(address, "no_such_metric").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ScrapeSample("127.0.0.1", "x").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ScrapeSample("127.0.0.1:1", "x").status().code(), absl::StatusCode::kUnavailable);
}

// --- the runner, against an in-process server ---------------------------------------------------

class RunLoadTest : public ::testing::Test {
 protected:
  // Options for a short run against `server_` with `mix`.
  LoadgenOptions Options(const std::string& mix) {
    LoadgenOptions options;
    options.connection.server = server_.address();
    options.concurrency = 3;
    options.duration = 0.2;
    options.warmup = 0;
    options.timeout = 30;
    options.connect_timeout = 10;
    options.mix_text = mix;
    absl::StatusOr<LoadMix> parsed = ParseLoadMix(mix);
    EXPECT_TRUE(parsed.ok()) << parsed.status();
    if (parsed.ok()) options.mix = *parsed;
    return options;
  }

  LoadRun Run(const LoadgenOptions& options) {
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = ConnectForLoad(options);
    EXPECT_TRUE(channel.ok()) << channel.status();
    if (!channel.ok()) return {};
    return RunLoad(*channel, options, stop_, log_);
  }

  FakeImageGenerator service_;
  InProcessServer server_{&service_, /*health=*/true};
  std::atomic<bool> stop_{false};
  std::ostringstream log_;
};

TEST_F(RunLoadTest, ClosedLoopMeasuresEveryCallAfterTheWarmUp) {
  LoadgenOptions options = Options("class:0-9,n:2");
  options.warmup = 5;
  const LoadRun run = Run(options);
  EXPECT_FALSE(run.interrupted);
  EXPECT_GT(run.sent, 0);
  ASSERT_EQ(static_cast<int64_t>(run.records.size()), run.sent);
  // The server saw the warm-up calls too; the run did not measure them.
  EXPECT_EQ(service_.calls(), run.sent + options.warmup);
  EXPECT_LE(service_.max_in_flight(), options.concurrency);
  for (const CallRecord& r : run.records) {
    EXPECT_EQ(r.code, grpc::StatusCode::OK);
    EXPECT_EQ(r.images, 2);
    EXPECT_EQ(r.previews, 2);  // the Progress messages without a preview do not count
    EXPECT_GE(r.to_accepted, 0);
    EXPECT_GE(r.first_preview, r.to_accepted);
    EXPECT_GE(r.latency, r.first_preview);
    EXPECT_GE(r.end, run.start);
  }
  const LoadSummary s = Summarize(run);
  EXPECT_EQ(s.ok, run.sent);
  EXPECT_EQ(s.images, 2 * run.sent);
  EXPECT_EQ(s.time_to_first_preview.count, run.sent);
}

TEST_F(RunLoadTest, OpenLoopStartsEveryArrival) {
  LoadgenOptions options = Options("class:1");
  options.rate = 100;
  options.duration = 0.3;
  const LoadRun run = Run(options);
  EXPECT_GT(run.sent, 0);
  EXPECT_EQ(static_cast<int64_t>(run.records.size()), run.sent);
  EXPECT_EQ(service_.calls(), run.sent);
  EXPECT_EQ(service_.calls_with_class(1), run.sent);
  EXPECT_LE(service_.max_in_flight(), options.concurrency);
  for (const CallRecord& r : run.records) EXPECT_EQ(r.code, grpc::StatusCode::OK);
}

TEST_F(RunLoadTest, FailedCallsAreCountedByCode) {
  service_.fail_class = 3;
  const LoadRun run = Run(Options("class:3|4"));
  const LoadSummary s = Summarize(run);
  EXPECT_EQ(s.requests, service_.calls());
  EXPECT_EQ(s.ok, service_.calls_with_class(4));
  EXPECT_EQ(s.failed, service_.calls_with_class(3));
  if (s.failed > 0) {
    EXPECT_THAT(s.errors, ElementsAre(Pair("RESOURCE_EXHAUSTED", s.failed)));
  }
  EXPECT_EQ(s.images, s.ok);  // one image per successful call, none from the failed ones
}

TEST_F(RunLoadTest, RequestsAreDrawnFromTheSeed) {
  LoadgenOptions options = Options("class:0-9");
  options.seed = 11;
  const LoadRun run = Run(options);
  ASSERT_GT(run.sent, 0);
  // Every call started draws the next request, so the server saw the first `sent` draws of the
  // mix from that seed (in some order, as calls overlap).
  std::mt19937_64 rng(options.seed);
  std::vector<int> expected(10);
  for (int64_t i = 0; i < run.sent; ++i) ++expected[SampleRequest(options.mix, rng).class_id()];
  std::vector<int> seen;
  for (int c = 0; c < 10; ++c) seen.push_back(service_.calls_with_class(c));
  EXPECT_EQ(seen, expected);
}

TEST_F(RunLoadTest, EachKindEndsTheWayItActs) {
  // The server holds every call after Accepted, so only what the client does ends it.
  service_.hang = true;
  const struct {
    const char* kind;
    grpc::StatusCode code;
  } kCases[] = {
      {"client_cancel", grpc::StatusCode::CANCELLED},
      {"cancel_rpc", grpc::StatusCode::CANCELLED},
      {"short_deadline", grpc::StatusCode::DEADLINE_EXCEEDED},
      {"abandon", grpc::StatusCode::CANCELLED},
  };
  for (const auto& c : kCases) {
    SCOPED_TRACE(c.kind);
    LoadgenOptions options = Options(absl::StrCat("class:1,kind:", c.kind));
    options.short_timeout = 0.1;
    options.abandon_seconds = 0.05;
    const LoadRun run = Run(options);
    ASSERT_GT(run.sent, 0);
    ASSERT_EQ(static_cast<int64_t>(run.records.size()), run.sent);
    for (const CallRecord& r : run.records) {
      EXPECT_EQ(CallKindName(r.kind), c.kind);
      EXPECT_EQ(r.code, c.code);
      EXPECT_GE(r.to_accepted, 0);
      EXPECT_FALSE(IsLost(r));
      if (r.kind == CallKind::kShortDeadline) {
        EXPECT_LE(r.latency, 5) << "its own deadline";
      }
      // The CancelGeneration call found the call it named.
      EXPECT_EQ(r.cancel_rpc, r.kind == CallKind::kCancelRpc ? std::optional(grpc::StatusCode::OK)
                                                             : std::nullopt);
    }
  }
  EXPECT_GT(service_.cancel_calls(), 0);
}

TEST_F(RunLoadTest, AServerThatLosesImagesFailsTheRun) {
  service_.skip_results = true;  // every call ends OK right after Accepted, without its image
  LoadgenOptions options = Options("class:2,kind:normal|abandon");
  const LoadSummary s = Summarize(Run(options));
  ASSERT_GT(s.outcomes.at("normal").calls, 0);
  EXPECT_EQ(s.outcomes.at("normal").lost, s.outcomes.at("normal").calls);
  // An abandoned stream's images are the client's to lose.
  if (s.outcomes.contains("abandon")) {
    EXPECT_EQ(s.outcomes.at("abandon").lost, 0);
  }
  EXPECT_EQ(s.lost, s.outcomes.at("normal").calls);

  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = ConnectForLoad(options);
  ASSERT_TRUE(channel.ok()) << channel.status();
  std::ostringstream out;
  const absl::Status status = RunLoadgen(*channel, options, stop_, out, log_);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("calls were lost"));
  EXPECT_THAT(out.str(), HasSubstr("  normal: "));
}

TEST_F(RunLoadTest, SamplesTheServersRss) {
  // The endpoint holds what it serves weakly.
  const auto process = std::make_shared<server::ProcessMetrics>("t");
  absl::StatusOr<std::unique_ptr<server::MetricsEndpoint>> endpoint =
      server::MetricsEndpoint::Start("127.0.0.1:0", process);
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  LoadgenOptions options = Options("class:1");
  options.metrics = absl::StrCat("127.0.0.1:", (*endpoint)->port());
  options.rss_every = 0.05;
  options.duration = 0.3;
  const LoadRun run = Run(options);
  EXPECT_EQ(run.rss_scrape_errors, 0);
  // One at the start, one every 50 ms, one at the end: a loaded machine may skip some.
  ASSERT_GE(run.server_rss.size(), 2u);
  for (size_t i = 0; i < run.server_rss.size(); ++i) {
    EXPECT_GT(run.server_rss[i].bytes, 1 << 20);
    if (i > 0) {
      EXPECT_GE(run.server_rss[i].seconds, run.server_rss[i - 1].seconds);
    }
  }
  EXPECT_GE(run.server_rss.back().seconds, 0.3);
}

TEST_F(RunLoadTest, StopBeforeTheRunStartsNothing) {
  stop_ = true;
  LoadgenOptions options = Options("class:0");
  options.warmup = 4;
  const LoadRun run = Run(options);
  EXPECT_TRUE(run.interrupted);
  EXPECT_EQ(run.sent, 0);
  EXPECT_TRUE(run.records.empty());
  EXPECT_EQ(service_.calls(), 0);
}

TEST_F(RunLoadTest, StopCancelsCallsInFlight) {
  service_.hang = true;
  LoadgenOptions options = Options("class:0");
  options.concurrency = 2;
  options.duration = 600;  // only the stop ends this run
  std::thread stopper([&] {
    service_.WaitForInFlight(2);
    stop_ = true;
  });
  const LoadRun run = Run(options);
  stopper.join();
  EXPECT_TRUE(run.interrupted);
  EXPECT_EQ(run.sent, 2);
  ASSERT_EQ(run.records.size(), 2u);
  for (const CallRecord& r : run.records) EXPECT_EQ(r.code, grpc::StatusCode::CANCELLED);
  const LoadSummary s = Summarize(run);
  EXPECT_THAT(s.errors, ElementsAre(Pair("CANCELLED", 2)));
  EXPECT_EQ(s.latency.count, 0);
}

// --- connecting
// -----------------------------------------------------------------------------------

TEST(ConnectForLoadTest, AcceptsAServingServerAndOneWithoutHealth) {
  for (const bool health : {true, false}) {
    FakeImageGenerator service;
    InProcessServer server(&service, health);
    ASSERT_TRUE(server.ok());
    LoadgenOptions options;
    options.connection.server = server.address();
    EXPECT_TRUE(ConnectForLoad(options).ok()) << "health service: " << health;
  }
}

TEST(ConnectForLoadTest, RefusesANotServingServer) {
  FakeImageGenerator service;
  InProcessServer server(&service, /*health=*/true);
  ASSERT_TRUE(server.ok());
  server.health()->SetServingStatus(false);
  LoadgenOptions options;
  options.connection.server = server.address();
  const absl::Status status = ConnectForLoad(options).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(status.message()), HasSubstr("NOT_SERVING"));
}

TEST(ConnectForLoadTest, UnreachableServerIsUnavailable) {
  LoadgenOptions options;
  options.connection.server = "127.0.0.1:1";  // nothing listens there
  options.connect_timeout = 0.2;
  const absl::Status status = ConnectForLoad(options).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(status.message()), HasSubstr("unreachable"));
}

TEST(ConnectForLoadTest, MetricsEndpointMustAnswer) {
  FakeImageGenerator service;
  InProcessServer server(&service, /*health=*/true);
  ASSERT_TRUE(server.ok());
  LoadgenOptions options;
  options.connection.server = server.address();
  options.metrics = "127.0.0.1:1";  // nothing listens there
  const absl::Status status = ConnectForLoad(options).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(status.message()), StartsWith("--metrics: "));
}

TEST(ApplySoakDefaultsTest, AddsEveryKindAndEveryServedModel) {
  FakeImageGenerator service;
  service.models.add_models()->set_name("a");
  service.models.add_models()->set_name("b");
  InProcessServer server(&service, /*health=*/true);
  ASSERT_TRUE(server.ok());
  LoadgenOptions options;
  options.connection.server = server.address();
  options.mix_text = "n:1";
  options.mix = *ParseLoadMix(options.mix_text);
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = ConnectForLoad(options);
  ASSERT_TRUE(channel.ok()) << channel.status();
  ASSERT_TRUE(ApplySoakDefaults(*channel, &options).ok());
  EXPECT_EQ(options.mix_text,
            "n:1,kind:normal|client_cancel|cancel_rpc|short_deadline|abandon,model:a|b");
  EXPECT_THAT(options.mix.models, ElementsAre("a", "b"));
  EXPECT_EQ(options.mix.kinds.size(), std::size(kAllCallKinds));

  // What the mix names stays.
  options.mix_text = "kind:abandon,model:b";
  options.mix = *ParseLoadMix(options.mix_text);
  ASSERT_TRUE(ApplySoakDefaults(*channel, &options).ok());
  EXPECT_EQ(options.mix_text, "kind:abandon,model:b");
  EXPECT_THAT(options.mix.kinds, ElementsAre(CallKind::kAbandon));
}

TEST(ConnectForLoadTest, MissingCaFileIsNotFound) {
  LoadgenOptions options;
  options.connection.tls_ca_path = "/nonexistent/ca.pem";
  EXPECT_EQ(ConnectForLoad(options).status().code(), absl::StatusCode::kNotFound);
}

// --- the whole run
// ---------------------------------------------------------------------------------

TEST_F(RunLoadTest, RunLoadgenPrintsTheReportAndWritesItsJson) {
  LoadgenOptions options = Options("class:2");
  options.json = ::testing::TempDir() + "/loadgen_report.json";
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = ConnectForLoad(options);
  ASSERT_TRUE(channel.ok()) << channel.status();
  std::ostringstream out;
  ASSERT_TRUE(RunLoadgen(*channel, options, stop_, out, log_).ok());
  EXPECT_THAT(out.str(), StartsWith("calls: "));
  EXPECT_THAT(log_.str(), HasSubstr("closed loop, 3 in flight"));
  absl::StatusOr<std::string> text = ReadFile(options.json);
  ASSERT_TRUE(text.ok()) << text.status();
  const nlohmann::json json = nlohmann::json::parse(*text);
  EXPECT_EQ(json.at("config").at("mix"), "class:2");
  EXPECT_EQ(json.at("requests"), service_.calls());
  EXPECT_EQ(json.at("ok"), service_.calls());
  EXPECT_EQ(json.at("images"), service_.calls());
}

TEST_F(RunLoadTest, RunLoadgenReportsAnUnwritableJsonAfterTheText) {
  LoadgenOptions options = Options("class:2");
  options.json = "/nonexistent/dir/report.json";
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = ConnectForLoad(options);
  ASSERT_TRUE(channel.ok()) << channel.status();
  std::ostringstream out;
  const absl::Status status = RunLoadgen(*channel, options, stop_, out, log_);
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("cannot write /nonexistent/dir/report.json"));
  EXPECT_THAT(out.str(), StartsWith("calls: "));
}

}  // namespace
}  // namespace dartserve::client

// Summaries and reports of a load run (client/loadgen.h): percentiles, outcomes per call kind,
// lost calls, the server's RSS over time, as text and JSON.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <numeric>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/loadgen.h"
#include "client/terminal.h"
#include "nlohmann/json.hpp"

namespace dartserve::client {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

std::string Fixed(double value, int decimals) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "%.*f", decimals, value);
  return buffer;
}

// "CANCELLED 3, OK 1".
std::string CountsText(const std::map<std::string, int64_t>& counts) {
  return absl::StrJoin(counts, ", ", [](std::string* out, const auto& entry) {
    absl::StrAppend(out, entry.first, " ", entry.second);
  });
}

// One line per kind, in kAllCallKinds order, when a kind other than normal ran; else nothing.
std::string OutcomeLines(const LoadSummary& s) {
  if (s.outcomes.empty() || (s.outcomes.size() == 1 && s.outcomes.contains("normal"))) return "";
  std::string text;
  for (const CallKind kind : kAllCallKinds) {
    const auto it = s.outcomes.find(std::string(CallKindName(kind)));
    if (it == s.outcomes.end()) continue;
    const KindOutcome& o = it->second;
    absl::StrAppend(&text, "  ", it->first, ": ", o.calls, " calls (", CountsText(o.statuses), ")",
                    o.cancel_rpcs.empty()
                        ? ""
                        : absl::StrCat(", CancelGeneration (", CountsText(o.cancel_rpcs), ")"),
                    ", ", o.lost, " lost\n");
  }
  return text;
}

// The RSS samples, at most eight of them evenly spread, their maximum and second-half growth.
std::string RssLine(const LoadSummary& s) {
  if (s.server_rss.empty() && s.rss_scrape_errors == 0) return "";
  constexpr double kMiB = 1 << 20;
  constexpr size_t kShown = 8;
  const size_t n = s.server_rss.size();
  std::vector<std::string> points;
  for (size_t i = 0; i < std::min(n, kShown); ++i) {
    const RssSample& sample = s.server_rss[n <= kShown ? i : i * (n - 1) / (kShown - 1)];
    points.push_back(absl::StrCat(Fixed(sample.bytes / kMiB, 1), " at ",
                                  static_cast<int64_t>(sample.seconds), " s"));
  }
  return absl::StrCat(
      "server RSS (MiB): ", absl::StrJoin(points, ", "), "; max ", Fixed(s.rss_max_bytes / kMiB, 1),
      ", second half ", s.rss_second_half_growth_bytes >= 0 ? "+" : "",
      Fixed(s.rss_second_half_growth_bytes / kMiB, 1), " (", n, " samples",
      s.rss_scrape_errors > 0 ? absl::StrCat(", ", s.rss_scrape_errors, " scrapes failed") : "",
      ")\n");
}

}  // namespace

Distribution Describe(std::vector<double> samples) {
  Distribution d;
  if (samples.empty()) return d;
  std::sort(samples.begin(), samples.end());
  d.count = static_cast<int64_t>(samples.size());
  d.p50 = Percentile(samples, 0.50);
  d.p90 = Percentile(samples, 0.90);
  d.p95 = Percentile(samples, 0.95);
  d.p99 = Percentile(samples, 0.99);
  d.max = samples.back();
  d.mean = std::accumulate(samples.begin(), samples.end(), 0.0) / samples.size();
  return d;
}

bool IsLost(const CallRecord& record) {
  return record.code == grpc::StatusCode::OK && record.kind != CallKind::kAbandon &&
         record.images < record.asked_images;
}

LoadSummary Summarize(const LoadRun& run) {
  LoadSummary s;
  s.interrupted = run.interrupted;
  s.sent = run.sent;
  s.requests = static_cast<int64_t>(run.records.size());
  s.max_waiting_in_client = run.max_waiting;
  Clock::time_point last = run.start;
  std::vector<double> latency, accepted, first_preview;
  for (const CallRecord& r : run.records) {
    last = std::max(last, r.end);
    s.images += r.images;
    s.previews += r.previews;
    KindOutcome& outcome = s.outcomes[std::string(CallKindName(r.kind))];
    ++outcome.calls;
    ++outcome.statuses[StatusCodeName(r.code)];
    if (r.cancel_rpc) ++outcome.cancel_rpcs[StatusCodeName(*r.cancel_rpc)];
    if (IsLost(r)) {
      ++outcome.lost;
      ++s.lost;
    }
    if (r.code != grpc::StatusCode::OK) {
      ++s.errors[StatusCodeName(r.code)];
      continue;
    }
    ++s.ok;
    latency.push_back(r.latency);
    if (r.to_accepted >= 0) accepted.push_back(r.to_accepted);
    if (r.first_preview >= 0) first_preview.push_back(r.first_preview);
  }
  s.failed = s.requests - s.ok;
  s.seconds = std::max(Seconds(last - run.start), 1e-9);
  s.requests_per_second = s.requests / s.seconds;
  s.ok_per_second = s.ok / s.seconds;
  s.images_per_second = s.images / s.seconds;
  s.latency = Describe(std::move(latency));
  s.time_to_accepted = Describe(std::move(accepted));
  s.time_to_first_preview = Describe(std::move(first_preview));
  s.previews_per_call =
      s.requests > 0 ? static_cast<double>(s.previews) / static_cast<double>(s.requests) : 0.0;
  s.server_rss = run.server_rss;
  s.rss_scrape_errors = run.rss_scrape_errors;
  for (const RssSample& sample : s.server_rss)
    s.rss_max_bytes = std::max(s.rss_max_bytes, sample.bytes);
  if (!s.server_rss.empty()) {
    s.rss_second_half_growth_bytes =
        s.server_rss.back().bytes - s.server_rss[s.server_rss.size() / 2].bytes;
  }
  return s;
}

std::string ReportText(const LoadgenOptions& options, const LoadSummary& s) {
  std::string errors;
  for (const auto& [name, count] : s.errors) {
    absl::StrAppend(&errors, errors.empty() ? "" : ", ", name, " ", count);
  }
  auto f = [](double seconds) { return Fixed(seconds, 3); };
  std::string text =
      absl::StrCat("calls: ", s.sent, " sent, ", s.requests, " completed, ", s.ok, " ok, ",
                   s.failed, " failed", errors.empty() ? "" : absl::StrCat(" (", errors, ")"), ", ",
                   s.lost, " lost", s.interrupted ? " [interrupted]" : "", "\n");
  absl::StrAppend(&text, "throughput: ", Fixed(s.images_per_second, 2), " images/s, ",
                  Fixed(s.requests_per_second, 2), " requests/s over ", Fixed(s.seconds, 2), " s",
                  options.rate > 0 ? absl::StrCat(" (offered ", options.rate, "/s; at most ",
                                                  s.max_waiting_in_client, " waited in the client)")
                                   : "",
                  "\n");
  absl::StrAppend(&text, "latency (s): p50 ", f(s.latency.p50), "  p90 ", f(s.latency.p90),
                  "  p95 ", f(s.latency.p95), "  p99 ", f(s.latency.p99), "  max ",
                  f(s.latency.max), "  mean ", f(s.latency.mean), "\n");
  absl::StrAppend(&text, "time to accepted (s): p50 ", f(s.time_to_accepted.p50), "  p99 ",
                  f(s.time_to_accepted.p99), "\n");
  absl::StrAppend(&text, "time to first preview (s): p50 ", f(s.time_to_first_preview.p50),
                  "  p99 ", f(s.time_to_first_preview.p99), "  (", s.time_to_first_preview.count,
                  " calls with previews, ", Fixed(s.previews_per_call, 1), " previews per call)\n");
  absl::StrAppend(&text, OutcomeLines(s), RssLine(s));
  return text;
}

nlohmann::json ReportJson(const LoadgenOptions& options, const LoadSummary& s) {
  nlohmann::json outcomes = nlohmann::json::object();
  for (const auto& [kind, outcome] : s.outcomes) {
    outcomes[kind] = {{"calls", outcome.calls},
                      {"lost", outcome.lost},
                      {"statuses", outcome.statuses},
                      {"cancel_rpcs", outcome.cancel_rpcs}};
  }
  nlohmann::json rss = nlohmann::json::array();
  for (const RssSample& sample : s.server_rss) {
    rss.push_back({{"t_s", sample.seconds}, {"bytes", sample.bytes}});
  }
  return {{"config",
           {{"server", options.connection.server},
            {"tls", !options.connection.tls_ca_path.empty()},
            {"concurrency", options.concurrency},
            {"rate", options.rate},
            {"duration", options.duration},
            {"mix", options.mix_text},
            {"seed", options.seed},
            {"warmup", options.warmup},
            {"timeout", options.timeout},
            {"short_timeout", options.short_timeout},
            {"abandon_seconds", options.abandon_seconds},
            {"metrics", options.metrics},
            {"rss_every", options.rss_every},
            {"soak", options.soak}}},
          {"interrupted", s.interrupted},
          {"sent", s.sent},
          {"requests", s.requests},
          {"ok", s.ok},
          {"failed", s.failed},
          {"errors", s.errors},
          {"images", s.images},
          {"seconds", s.seconds},
          {"requests_per_second", s.requests_per_second},
          {"ok_per_second", s.ok_per_second},
          {"images_per_second", s.images_per_second},
          {"latency_p50_s", s.latency.p50},
          {"latency_p90_s", s.latency.p90},
          {"latency_p95_s", s.latency.p95},
          {"latency_p99_s", s.latency.p99},
          {"latency_max_s", s.latency.max},
          {"latency_mean_s", s.latency.mean},
          {"time_to_accepted_p50_s", s.time_to_accepted.p50},
          {"time_to_accepted_p99_s", s.time_to_accepted.p99},
          {"time_to_first_preview_p50_s", s.time_to_first_preview.p50},
          {"time_to_first_preview_p99_s", s.time_to_first_preview.p99},
          {"calls_with_previews", s.time_to_first_preview.count},
          {"previews_per_call", s.previews_per_call},
          {"max_waiting_in_client", s.max_waiting_in_client},
          {"lost", s.lost},
          {"outcomes", std::move(outcomes)},
          {"server_rss", std::move(rss)},
          {"server_rss_max_bytes", s.rss_max_bytes},
          {"server_rss_second_half_growth_bytes", s.rss_second_half_growth_bytes},
          {"rss_scrape_errors", s.rss_scrape_errors}};
}

}  // namespace dartserve::client

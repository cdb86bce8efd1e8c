// dartserve-loadgen: drives a dartserve server over gRPC and reports what its users see.
//
//   dartserve-loadgen --concurrency 32 --duration 30                     closed loop
//   dartserve-loadgen --rate 20 --concurrency 64 --duration 30           open loop (Poisson)
//   dartserve-loadgen --mix "class:0-9,guidance:1|2,preview_every:0|1" --json out/load.json
//
// Closed loop: `concurrency` requests in flight; each finished one is replaced at once.
// Open loop: arrivals at exponential gaps with mean 1/rate; at most `concurrency` in flight, and
// an arrival that finds them all busy waits for a free one (its latency counts from its arrival,
// so an overloaded server shows up as latency, not as a lower offered load).
// Per request: latency (arrival -> final status), time to Accepted, time to the first preview,
// and the final status code.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "client/terminal.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, server, "localhost:50051", "Server address host:port.");
ABSL_FLAG(std::string, token, "", "Bearer token sent with every call.");
ABSL_FLAG(std::string, tls_ca, "", "PEM root certificate(s): use TLS and trust these.");
ABSL_FLAG(int, concurrency, 8, "Requests in flight (closed loop), or the cap (open loop).");
ABSL_FLAG(double, rate, 0, "Open-loop arrivals per second (0: closed loop).");
ABSL_FLAG(double, duration, 30, "Seconds of measured load.");
ABSL_FLAG(int, warmup, 4, "Requests sent, and not measured, before the run.");
ABSL_FLAG(std::string, mix, "class:0-9", "Request mix (see client/terminal.h, ParseLoadMix).");
ABSL_FLAG(uint64_t, seed, 1, "Seed of the request mix and arrival times.");
ABSL_FLAG(double, timeout, 120, "Deadline of each call in seconds.");
ABSL_FLAG(std::string, json, "", "Write the results as JSON here.");

namespace dc = dartserve::client;
namespace v1 = dartserve::v1;
using Clock = std::chrono::steady_clock;

namespace {

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

struct Sample {
  double latency = 0, accepted = -1, first_preview = -1;
  int images = 0, previews = 0;
  grpc::StatusCode code = grpc::StatusCode::OK;
};

// One GenerateImage call, timed from `arrival`.
Sample RunOne(v1::ImageGenerator::Stub& stub, const dc::ConnectionOptions& connection,
              const v1::GenerateImageRequest& request, Clock::time_point arrival) {
  Sample s;
  grpc::ClientContext context;
  dc::PrepareContext(connection, absl::GetFlag(FLAGS_timeout), &context);
  auto reader = stub.GenerateImage(&context, request);
  v1::GenerateImageResponse m;
  while (reader->Read(&m)) {
    const double t = Seconds(Clock::now() - arrival);
    if (m.has_accepted()) s.accepted = t;
    if (m.has_progress() && !m.progress().preview_png().empty()) {
      if (s.first_preview < 0) s.first_preview = t;
      ++s.previews;
    }
    if (m.has_result()) ++s.images;
  }
  s.code = reader->Finish().error_code();
  s.latency = Seconds(Clock::now() - arrival);
  return s;
}

nlohmann::json Summary(const std::vector<Sample>& samples, double seconds) {
  std::vector<double> latency, ttfp, accepted;
  std::map<std::string, int> errors;
  int images = 0, ok = 0;
  for (const Sample& s : samples) {
    if (s.code == grpc::StatusCode::OK) {
      ++ok;
      latency.push_back(s.latency);
      if (s.first_preview >= 0) ttfp.push_back(s.first_preview);
      if (s.accepted >= 0) accepted.push_back(s.accepted);
    } else {
      ++errors[dc::StatusCodeName(s.code)];
    }
    images += s.images;
  }
  for (auto* v : {&latency, &ttfp, &accepted}) std::sort(v->begin(), v->end());
  return {{"requests", samples.size()},
          {"ok", ok},
          {"images", images},
          {"seconds", seconds},
          {"requests_per_second", samples.size() / seconds},
          {"images_per_second", images / seconds},
          {"latency_p50_s", dc::Percentile(latency, 0.50)},
          {"latency_p90_s", dc::Percentile(latency, 0.90)},
          {"latency_p95_s", dc::Percentile(latency, 0.95)},
          {"latency_p99_s", dc::Percentile(latency, 0.99)},
          {"latency_max_s", latency.empty() ? 0.0 : latency.back()},
          {"time_to_accepted_p50_s", dc::Percentile(accepted, 0.50)},
          {"time_to_first_preview_p50_s", dc::Percentile(ttfp, 0.50)},
          {"time_to_first_preview_p99_s", dc::Percentile(ttfp, 0.99)},
          {"errors", errors}};
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const dc::ConnectionOptions connection{.server = absl::GetFlag(FLAGS_server),
                                         .token = absl::GetFlag(FLAGS_token),
                                         .tls_ca_path = absl::GetFlag(FLAGS_tls_ca)};
  const int concurrency = absl::GetFlag(FLAGS_concurrency);
  const double rate = absl::GetFlag(FLAGS_rate), duration = absl::GetFlag(FLAGS_duration);
  if (concurrency < 1 || rate < 0 || duration <= 0) {
    std::cerr << "dartserve-loadgen: need --concurrency >= 1, --rate >= 0, --duration > 0\n";
    return 1;
  }
  absl::StatusOr<dc::LoadMix> mix = dc::ParseLoadMix(absl::GetFlag(FLAGS_mix));
  if (!mix.ok()) {
    std::cerr << "dartserve-loadgen: --mix: " << mix.status().message() << "\n";
    return 1;
  }
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = dc::CreateChannel(connection);
  if (!channel.ok()) {
    std::cerr << "dartserve-loadgen: " << channel.status().message() << "\n";
    return 1;
  }
  {
    grpc::ClientContext context;
    dc::PrepareContext(connection, 10, &context);
    grpc::health::v1::HealthCheckResponse health;
    const grpc::Status s = grpc::health::v1::Health::NewStub(*channel)->Check(
        &context, grpc::health::v1::HealthCheckRequest(), &health);
    if (!s.ok() || health.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
      std::cerr << "dartserve-loadgen: server " << connection.server << " is not serving ("
                << (s.ok() ? "NOT_SERVING" : dc::FormatStatus(s)) << ")\n";
      return 1;
    }
  }
  auto stub = v1::ImageGenerator::NewStub(*channel);
  std::mt19937_64 rng(absl::GetFlag(FLAGS_seed));
  for (int i = 0; i < absl::GetFlag(FLAGS_warmup); ++i) {
    RunOne(*stub, connection, dc::SampleRequest(*mix, rng), Clock::now());
  }

  // Arrivals: a queue of (request, arrival time) the workers take from.
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::pair<v1::GenerateImageRequest, Clock::time_point>> arrivals;
  bool arrivals_done = false;
  std::vector<Sample> samples;
  const Clock::time_point start = Clock::now(),
                          end = start + std::chrono::duration_cast<Clock::duration>(
                                            std::chrono::duration<double>(duration));
  std::vector<std::thread> workers;
  for (int w = 0; w < concurrency; ++w) {
    workers.emplace_back([&] {
      while (true) {
        std::pair<v1::GenerateImageRequest, Clock::time_point> next;
        {
          std::unique_lock<std::mutex> lock(mu);
          if (rate <= 0) {  // closed loop: a new request as soon as this worker is free
            if (Clock::now() >= end) return;
            next = {dc::SampleRequest(*mix, rng), Clock::now()};
          } else {
            cv.wait(lock, [&] { return arrivals_done || !arrivals.empty(); });
            if (arrivals.empty()) return;
            next = std::move(arrivals.front());
            arrivals.pop_front();
          }
        }
        const Sample s = RunOne(*stub, connection, next.first, next.second);
        std::lock_guard<std::mutex> lock(mu);
        samples.push_back(s);
      }
    });
  }
  if (rate > 0) {
    std::exponential_distribution<double> gap(rate);
    Clock::time_point next = start;
    while (next < end) {
      std::this_thread::sleep_until(next);  // pacing the open loop, not synchronisation
      {
        std::lock_guard<std::mutex> lock(mu);
        arrivals.emplace_back(dc::SampleRequest(*mix, rng), next);
      }
      cv.notify_one();
      next += std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(gap(rng)));
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      arrivals_done = true;
    }
    cv.notify_all();
  }
  for (std::thread& t : workers) t.join();
  const double seconds = Seconds(Clock::now() - start);

  nlohmann::json result = Summary(samples, seconds);
  std::cout << absl::StrFormat(
      "%s, %d in flight: %d requests (%d ok), %.2f req/s, %.2f images/s\n"
      "latency p50 %.3fs p90 %.3fs p95 %.3fs p99 %.3fs max %.3fs; first preview p50 %.3fs p99 "
      "%.3fs\n",
      rate > 0 ? absl::StrFormat("open loop at %.2f/s", rate) : std::string("closed loop"),
      concurrency, result["requests"].get<int>(), result["ok"].get<int>(),
      result["requests_per_second"].get<double>(), result["images_per_second"].get<double>(),
      result["latency_p50_s"].get<double>(), result["latency_p90_s"].get<double>(),
      result["latency_p95_s"].get<double>(), result["latency_p99_s"].get<double>(),
      result["latency_max_s"].get<double>(), result["time_to_first_preview_p50_s"].get<double>(),
      result["time_to_first_preview_p99_s"].get<double>());
  for (const auto& [code, count] : result["errors"].items()) {
    std::cout << "  errors " << code << ": " << count << "\n";
  }
  if (!absl::GetFlag(FLAGS_json).empty()) {
    result["config"] = {{"server", connection.server},
                        {"concurrency", concurrency},
                        {"rate", rate},
                        {"duration", duration},
                        {"mix", absl::GetFlag(FLAGS_mix)},
                        {"seed", absl::GetFlag(FLAGS_seed)}};
    std::ofstream(absl::GetFlag(FLAGS_json)) << result.dump(2) << "\n";
  }
  return 0;
}

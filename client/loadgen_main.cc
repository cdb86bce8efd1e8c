// dartserve-loadgen: drives a dartserve server with GenerateImage calls and reports what its users
// see: throughput, latency percentiles, time to first preview and errors.
//
//   dartserve-loadgen --concurrency 32 --duration 30                     closed loop
//   dartserve-loadgen --rate 20 --concurrency 64 --duration 30           open loop (Poisson)
//   dartserve-loadgen --mix "class:0-9,guidance:1|2,preview_every:0|1" --json out/load.json
//
// Two modes:
//   closed loop (--rate 0, the default): exactly --concurrency calls in flight; each finished one
//     is replaced at once. Measures capacity.
//   open loop (--rate R): calls arrive at exponential gaps with mean 1/R whatever the server
//     does. At most --concurrency are in flight; an arrival that finds them all busy waits in the
//     client for a free one, and its latency counts from its arrival, so an overloaded server
//     shows up as latency rather than as a lower offered load (no coordinated omission).
//
// Each call's request is drawn from --mix (syntax: client/terminal.h, ParseLoadMix) with a seed
// from --seed, so a run's request sequence is reproducible. --warmup N calls run first (closed
// loop) and are not measured. New calls stop arriving after --duration seconds; calls in flight
// or waiting then still run to their end (each bounded by --timeout) and count.
//
// Measured per call, from its arrival: latency (to the final status), time to Accepted, time to
// the first preview (first Progress with a non-empty preview_png), previews and Results
// received, final status code. Percentiles are nearest-rank over successful calls. images/s
// counts every Result received; requests/s counts every completed call; both over the measured
// phase's wall time (first arrival to the end of the last call).
//
// Calls use gRPC's callback API (ClientReadReactor): no thread per call, so 64 or more calls in
// flight cost little client CPU, and the client never decodes PNGs.
//
// Exit status: 0 when the run happened (even with failed calls), 1 for bad flags, an unwritable
// --json, or a server that is unreachable or not SERVING at start. Ctrl-C stops early: waiting
// arrivals are discarded, calls in flight are cancelled, and the report covers what completed.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "client/terminal.h"
#include "dartserve/v1/image_generator.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(int, concurrency, 8,
          "Calls in flight: exactly this many in closed loop, at most this many with --rate.");
ABSL_FLAG(double, rate, 0, "Open loop: Poisson arrivals, calls per second. 0: closed loop.");
ABSL_FLAG(double, duration, 30, "Seconds during which new measured calls start.");
ABSL_FLAG(std::string, mix, "class:0-9",
          "Request mix, e.g. \"class:0-9,guidance:1|2,preview_every:0|1\"; keys: class, "
          "guidance, preview_every, n, priority, model (client/terminal.h). Empty: the "
          "server's defaults for everything.");
ABSL_FLAG(uint64_t, seed, 1, "Seed of the request sequence and of the arrival times.");
ABSL_FLAG(std::string, json, "", "Also write the report as JSON to this path.");
ABSL_FLAG(int, warmup, 4, "Calls made before measuring (closed loop), not measured.");
ABSL_FLAG(double, timeout, 120, "Deadline of each call in seconds (0: none).");
ABSL_FLAG(double, connect_timeout, 10, "Seconds to wait for the server at start.");

namespace {

namespace dc = dartserve::client;
namespace v1 = dartserve::v1;
using Clock = std::chrono::steady_clock;

std::atomic<bool> g_interrupted{false};
void OnInterrupt(int) { g_interrupted.store(true); }

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

struct CallRecord {
  grpc::StatusCode code = grpc::StatusCode::OK;
  double latency = 0;         // arrival -> final status
  double to_accepted = -1;    // < 0: no Accepted
  double first_preview = -1;  // < 0: no preview
  int previews = 0;
  int images = 0;  // Results received
  Clock::time_point end;
};

class Runner;

// One GenerateImage call. Owns itself: deletes itself in OnDone after reporting to the runner.
class Call final : public grpc::ClientReadReactor<v1::GenerateImageResponse> {
 public:
  Call(Runner* runner, v1::GenerateImageRequest request, bool measured)
      : runner_(runner), request_(std::move(request)), measured_(measured) {}

  // Starts the call; times count from `arrival`. `this` may be deleted any time after (from a
  // gRPC thread).
  void Start(v1::ImageGenerator::Stub* stub, const dc::ConnectionOptions& connection,
             double timeout_seconds, Clock::time_point arrival) {
    dc::PrepareContext(connection, timeout_seconds, &context_);
    start_ = arrival;
    stub->async()->GenerateImage(&context_, &request_, this);
    StartRead(&response_);
    StartCall();
  }

  // Thread-safe; valid until OnDone has reported to the runner.
  void Cancel() { context_.TryCancel(); }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // the stream ended; OnDone follows
    const double t = Seconds(Clock::now() - start_);
    switch (response_.event_case()) {
      case v1::GenerateImageResponse::kAccepted:
        if (record_.to_accepted < 0) record_.to_accepted = t;
        break;
      case v1::GenerateImageResponse::kProgress:
        if (!response_.progress().preview_png().empty()) {
          if (record_.first_preview < 0) record_.first_preview = t;
          ++record_.previews;
        }
        break;
      case v1::GenerateImageResponse::kResult:
        ++record_.images;
        break;
      default:
        break;
    }
    StartRead(&response_);
  }

  void OnDone(const grpc::Status& status) override;

 private:
  Runner* runner_;
  v1::GenerateImageRequest request_;
  const bool measured_;
  grpc::ClientContext context_;
  v1::GenerateImageResponse response_;
  Clock::time_point start_;
  CallRecord record_;
};

// Starts calls and collects their records. Launch and the waits are called from the main thread
// only; Done runs on gRPC threads.
class Runner {
 public:
  Runner(v1::ImageGenerator::Stub* stub, dc::ConnectionOptions connection, double timeout,
         dc::LoadMix mix, uint64_t seed)
      : stub_(stub),
        connection_(std::move(connection)),
        timeout_(timeout),
        mix_(std::move(mix)),
        rng_(seed) {}

  void Launch(bool measured, Clock::time_point arrival) {
    auto* call = new Call(this, dc::SampleRequest(mix_, rng_), measured);
    {
      std::lock_guard lock(mu_);
      in_flight_.insert(call);
      if (measured) ++sent_;
    }
    call->Start(stub_, connection_, timeout_, arrival);
  }

  void Done(Call* call, bool measured, const CallRecord& record) {
    std::lock_guard lock(mu_);
    in_flight_.erase(call);
    if (measured) records_.push_back(record);
    cv_.notify_all();
  }

  size_t InFlight() {
    std::lock_guard lock(mu_);
    return in_flight_.size();
  }

  // Waits until fewer than `limit` calls are in flight or `until` passes; true in the first case.
  bool WaitBelow(size_t limit, Clock::time_point until) {
    std::unique_lock lock(mu_);
    return cv_.wait_until(lock, until, [&] { return in_flight_.size() < limit; });
  }

  void CancelAll() {
    std::lock_guard lock(mu_);
    for (Call* call : in_flight_) call->Cancel();
  }

  // Waits for every call to end; on Ctrl-C cancels them (once) and keeps waiting.
  void Drain() {
    bool cancelled = false;
    while (!WaitBelow(1, Clock::now() + std::chrono::milliseconds(100))) {
      if (g_interrupted.load() && !cancelled) {
        CancelAll();
        cancelled = true;
      }
    }
  }

  int64_t sent() {
    std::lock_guard lock(mu_);
    return sent_;
  }
  std::vector<CallRecord> TakeRecords() {
    std::lock_guard lock(mu_);
    return std::move(records_);
  }
  int64_t completed() {
    std::lock_guard lock(mu_);
    return static_cast<int64_t>(records_.size());
  }

 private:
  v1::ImageGenerator::Stub* const stub_;
  const dc::ConnectionOptions connection_;
  const double timeout_;
  const dc::LoadMix mix_;
  std::mt19937_64 rng_;  // main thread only

  std::mutex mu_;
  std::condition_variable cv_;
  std::set<Call*> in_flight_;
  std::vector<CallRecord> records_;
  int64_t sent_ = 0;
};

void Call::OnDone(const grpc::Status& status) {
  record_.code = status.error_code();
  record_.end = Clock::now();
  record_.latency = Seconds(record_.end - start_);
  runner_->Done(this, measured_, record_);
  delete this;
}

// Prints a one-line status to stderr every few seconds while a phase runs.
class Ticker {
 public:
  explicit Ticker(Runner* runner) : runner_(runner), start_(Clock::now()), next_(start_ + kEvery) {}
  void Tick() {
    const Clock::time_point now = Clock::now();
    if (now < next_) return;
    next_ = now + kEvery;
    std::cerr << "dartserve-loadgen: t=" << static_cast<int>(Seconds(now - start_)) << "s sent "
              << runner_->sent() << ", done " << runner_->completed() << ", in flight "
              << runner_->InFlight() << "\n";
  }

 private:
  static constexpr std::chrono::seconds kEvery{5};
  Runner* runner_;
  Clock::time_point start_, next_;
};

// Closed loop until `end` or `max_calls` calls have started (< 0: no limit).
void RunClosedLoop(Runner& runner, size_t concurrency, Clock::time_point end, int64_t max_calls,
                   bool measured) {
  Ticker ticker(&runner);
  for (int64_t started = 0; max_calls < 0 || started < max_calls;) {
    if (g_interrupted.load() || Clock::now() >= end) return;
    const Clock::time_point wake = std::min(end, Clock::now() + std::chrono::milliseconds(100));
    if (runner.WaitBelow(concurrency, wake)) {
      runner.Launch(measured, Clock::now());
      ++started;
    }
    if (measured) ticker.Tick();
  }
}

// Open loop: Poisson arrivals at `rate` per second until `end`, at most `cap` in flight, the
// rest waiting in arrival order. Returns when every arrival has started (or on Ctrl-C), with the
// largest number that waited at once.
int64_t RunOpenLoop(Runner& runner, double rate, size_t cap, Clock::time_point end, uint64_t seed) {
  Ticker ticker(&runner);
  std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ULL);  // independent of the request sequence
  std::exponential_distribution<double> gap(rate);
  std::deque<Clock::time_point> waiting;
  int64_t max_waiting = 0;
  Clock::time_point next = Clock::now();  // the first call arrives at once
  bool arrivals_done = false;
  while (!g_interrupted.load()) {
    const Clock::time_point now = Clock::now();
    for (; !arrivals_done && next <= now; next += std::chrono::duration_cast<Clock::duration>(
                                              std::chrono::duration<double>(gap(rng)))) {
      if (next >= end) {
        arrivals_done = true;
      } else {
        waiting.push_back(next);
      }
    }
    max_waiting = std::max(max_waiting, static_cast<int64_t>(waiting.size()));
    while (!waiting.empty() && runner.InFlight() < cap) {
      runner.Launch(/*measured=*/true, waiting.front());
      waiting.pop_front();
    }
    if (arrivals_done && waiting.empty()) break;
    ticker.Tick();
    // Sleep until the next arrival or, when calls wait, a free slot; at most 100 ms, so that
    // Ctrl-C is noticed promptly.
    Clock::time_point wake = now + std::chrono::milliseconds(100);
    if (!arrivals_done) wake = std::min(wake, next);
    if (waiting.empty()) {
      std::this_thread::sleep_until(wake);
    } else {
      runner.WaitBelow(cap, wake);
    }
  }
  return max_waiting;
}

std::string Fixed(double value, int decimals) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "%.*f", decimals, value);
  return buffer;
}

int BadFlag(absl::string_view message) {
  std::cerr << "dartserve-loadgen: " << message << "\n";
  return 1;
}

// Waits for the connection, then requires health SERVING (a server without the health service,
// UNIMPLEMENTED, is accepted).
absl::Status CheckServer(const std::shared_ptr<grpc::Channel>& channel,
                         const dc::ConnectionOptions& connection, double timeout) {
  const auto deadline = std::chrono::system_clock::now() +
                        std::chrono::duration_cast<std::chrono::system_clock::duration>(
                            std::chrono::duration<double>(timeout));
  if (!channel->WaitForConnected(deadline)) {
    return absl::UnavailableError(
        absl::StrCat("server ", connection.server, " unreachable within ", timeout, " s"));
  }
  auto health = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  dc::PrepareContext(connection, timeout, &context);
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status =
      health->Check(&context, grpc::health::v1::HealthCheckRequest(), &response);
  if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED) return absl::OkStatus();
  if (!status.ok()) {
    return absl::UnavailableError(absl::StrCat("health check: ", dc::FormatStatus(status)));
  }
  if (response.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
    return absl::UnavailableError(
        absl::StrCat("server is ",
                     grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status())));
  }
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "dartserve-loadgen [--server host:port] [--concurrency N] [--rate R] [--duration S] "
      "[--mix SPEC] [--warmup N] [--json PATH]");
  const std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() > 1) return BadFlag(absl::StrCat("unexpected argument '", args[1], "'"));

  const int concurrency = absl::GetFlag(FLAGS_concurrency);
  const double rate = absl::GetFlag(FLAGS_rate);
  const double duration = absl::GetFlag(FLAGS_duration);
  const int warmup = absl::GetFlag(FLAGS_warmup);
  const double timeout = absl::GetFlag(FLAGS_timeout);
  const uint64_t seed = absl::GetFlag(FLAGS_seed);
  const std::string mix_text = absl::GetFlag(FLAGS_mix);
  if (concurrency < 1) return BadFlag("--concurrency must be >= 1");
  if (!(rate >= 0)) return BadFlag("--rate must be >= 0");
  if (!(duration > 0)) return BadFlag("--duration must be > 0");
  if (warmup < 0) return BadFlag("--warmup must be >= 0");
  if (!(timeout >= 0)) return BadFlag("--timeout must be >= 0");
  absl::StatusOr<dc::LoadMix> mix = dc::ParseLoadMix(mix_text);
  if (!mix.ok()) return BadFlag(mix.status().message());

  const dc::ConnectionOptions connection = dc::ConnectionFromFlags();
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = dc::CreateChannel(connection);
  if (!channel.ok()) return BadFlag(channel.status().message());
  if (absl::Status s = CheckServer(*channel, connection, absl::GetFlag(FLAGS_connect_timeout));
      !s.ok()) {
    return BadFlag(s.message());
  }

  struct sigaction action = {};
  action.sa_handler = OnInterrupt;
  action.sa_flags = SA_RESETHAND;  // a second Ctrl-C kills the process
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);

  auto stub = v1::ImageGenerator::NewStub(*channel);
  Runner runner(stub.get(), connection, timeout, *mix, seed);
  const std::string mode =
      rate > 0 ? absl::StrCat("open loop, ", rate, " calls/s, at most ", concurrency, " in flight")
               : absl::StrCat("closed loop, ", concurrency, " in flight");
  std::cerr << "dartserve-loadgen: " << connection.server << ", " << mode << ", " << duration
            << " s, mix \"" << mix_text << "\""
            << (warmup ? absl::StrCat(", warm-up ", warmup) : "") << "\n";

  if (warmup > 0) {
    RunClosedLoop(runner, static_cast<size_t>(concurrency), Clock::time_point::max(), warmup,
                  /*measured=*/false);
    runner.Drain();
  }
  const Clock::time_point start = Clock::now();
  const Clock::time_point end =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(duration));
  int64_t max_waiting = 0;
  if (rate > 0) {
    max_waiting = RunOpenLoop(runner, rate, static_cast<size_t>(concurrency), end, seed);
  } else {
    RunClosedLoop(runner, static_cast<size_t>(concurrency), end, -1, /*measured=*/true);
  }
  runner.Drain();
  const bool interrupted = g_interrupted.load();

  // --- report ---------------------------------------------------------------------------------
  const std::vector<CallRecord> records = runner.TakeRecords();
  Clock::time_point last = start;
  int64_t ok = 0, images = 0, previews = 0;
  std::map<std::string, int64_t> errors;
  std::vector<double> latency, accepted, ttfp;
  for (const CallRecord& r : records) {
    last = std::max(last, r.end);
    images += r.images;
    previews += r.previews;
    if (r.code == grpc::StatusCode::OK) {
      ++ok;
      latency.push_back(r.latency);
      if (r.to_accepted >= 0) accepted.push_back(r.to_accepted);
      if (r.first_preview >= 0) ttfp.push_back(r.first_preview);
    } else {
      ++errors[dc::StatusCodeName(r.code)];
    }
  }
  for (auto* v : {&latency, &accepted, &ttfp}) std::sort(v->begin(), v->end());
  const double seconds = std::max(Seconds(last - start), 1e-9);
  const int64_t completed = static_cast<int64_t>(records.size());
  const double latency_mean =
      latency.empty() ? 0 : std::accumulate(latency.begin(), latency.end(), 0.0) / latency.size();

  // Flat keys, so that reports diff and tabulate easily (docs/bench/grpc_*.json).
  nlohmann::json report = {
      {"config",
       {{"server", connection.server},
        {"tls", !connection.tls_ca_path.empty()},
        {"concurrency", concurrency},
        {"rate", rate},
        {"duration", duration},
        {"mix", mix_text},
        {"seed", seed},
        {"warmup", warmup},
        {"timeout", timeout}}},
      {"interrupted", interrupted},
      {"sent", runner.sent()},
      {"requests", completed},
      {"ok", ok},
      {"failed", completed - ok},
      {"errors", errors},
      {"images", images},
      {"seconds", seconds},
      {"requests_per_second", completed / seconds},
      {"ok_per_second", ok / seconds},
      {"images_per_second", images / seconds},
      {"latency_p50_s", dc::Percentile(latency, 0.50)},
      {"latency_p90_s", dc::Percentile(latency, 0.90)},
      {"latency_p95_s", dc::Percentile(latency, 0.95)},
      {"latency_p99_s", dc::Percentile(latency, 0.99)},
      {"latency_max_s", latency.empty() ? 0.0 : latency.back()},
      {"latency_mean_s", latency_mean},
      {"time_to_accepted_p50_s", dc::Percentile(accepted, 0.50)},
      {"time_to_accepted_p99_s", dc::Percentile(accepted, 0.99)},
      {"time_to_first_preview_p50_s", dc::Percentile(ttfp, 0.50)},
      {"time_to_first_preview_p99_s", dc::Percentile(ttfp, 0.99)},
      {"calls_with_previews", static_cast<int64_t>(ttfp.size())},
      {"previews_per_call", completed ? static_cast<double>(previews) / completed : 0.0},
      {"max_waiting_in_client", max_waiting}};

  std::string error_text;
  for (const auto& [name, count] : errors) {
    absl::StrAppend(&error_text, error_text.empty() ? "" : ", ", name, " ", count);
  }
  auto f = [&](const char* key) { return Fixed(report.at(key).get<double>(), 3); };
  std::cout << "calls: " << runner.sent() << " sent, " << completed << " completed, " << ok
            << " ok, " << completed - ok << " failed"
            << (error_text.empty() ? "" : absl::StrCat(" (", error_text, ")"))
            << (interrupted ? " [interrupted]" : "") << "\n"
            << "throughput: " << Fixed(images / seconds, 2) << " images/s, "
            << Fixed(completed / seconds, 2) << " requests/s over " << Fixed(seconds, 2) << " s"
            << (rate > 0 ? absl::StrCat(" (offered ", rate, "/s; at most ", max_waiting,
                                        " waited in the client)")
                         : "")
            << "\n"
            << "latency (s): p50 " << f("latency_p50_s") << "  p90 " << f("latency_p90_s")
            << "  p95 " << f("latency_p95_s") << "  p99 " << f("latency_p99_s") << "  max "
            << f("latency_max_s") << "  mean " << f("latency_mean_s") << "\n"
            << "time to accepted (s): p50 " << f("time_to_accepted_p50_s") << "  p99 "
            << f("time_to_accepted_p99_s") << "\n"
            << "time to first preview (s): p50 " << f("time_to_first_preview_p50_s") << "  p99 "
            << f("time_to_first_preview_p99_s") << "  (" << ttfp.size() << " calls with previews, "
            << Fixed(report.at("previews_per_call").get<double>(), 1) << " previews per call)\n";

  if (const std::string path = absl::GetFlag(FLAGS_json); !path.empty()) {
    std::ofstream file(path);
    file << report.dump(2) << "\n";
    if (!file) {
      std::cerr << "dartserve-loadgen: cannot write " << path << "\n";
      return 1;
    }
  }
  return 0;
}

// The load generator behind dartserve-loadgen: it drives a dartserve server with GenerateImage
// calls and reports what the server's users see: throughput, latency percentiles, time to
// first preview and errors.
//
// Two modes:
//   closed loop (rate 0): exactly `concurrency` calls in flight; each finished one is replaced
//     at once. Measures capacity.
//   open loop (rate R > 0): calls arrive at exponential gaps with mean 1/R whatever the server
//     does. At most `concurrency` are in flight; an arrival that finds them all busy waits in
//     the client for a free one, and its latency counts from its arrival, so an overloaded
//     server shows up as latency rather than as a lower offered load (no coordinated omission).
//
// Each call's request is drawn from the mix (syntax: client/terminal.h, ParseLoadMix) with a
// seed from `seed`, so a run's request sequence is reproducible. `warmup` calls run first
// (closed loop) and are not measured. New calls stop arriving after `duration_seconds`; calls
// in flight or waiting then still run to their end (each bounded by `timeout_seconds`) and
// count.
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
// The pieces are separate so that each can be tested on its own (tests/client/loadgen_test.cc):
// ConnectForLoad (channel and health check), RunLoad (the calls), Summarize (the numbers),
// ReportText and ReportJson (their presentation), and RunLoadgen, which strings the last four
// together for the binary.
#ifndef DARTSERVE_CLIENT_LOADGEN_H_
#define DARTSERVE_CLIENT_LOADGEN_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/terminal.h"
#include "grpcpp/grpcpp.h"
#include "nlohmann/json.hpp"

namespace dartserve::client {

// What one load run does. Each field is the dartserve-loadgen flag of the same name.
struct LoadgenOptions {
  ConnectionOptions connection;
  // Calls in flight: exactly this many in closed loop, at most this many in open loop. >= 1.
  int concurrency = 8;
  // Open loop: Poisson arrivals, calls per second. 0: closed loop. >= 0.
  double rate = 0;
  // Seconds during which new measured calls arrive. > 0.
  double duration = 30;
  // The request mix as the user wrote it (echoed in the report) and as parsed from it.
  std::string mix_text;
  LoadMix mix;
  // Seed of the request sequence and of the arrival times.
  uint64_t seed = 1;
  // Calls made before measuring (closed loop), not measured. >= 0.
  int warmup = 4;
  // Deadline of each call in seconds; 0: none. >= 0.
  double timeout = 120;
  // Seconds to wait for the server at start.
  double connect_timeout = 10;
  // Also write the report as JSON to this path; empty: do not.
  std::string json;
};

// INVALID_ARGUMENT, naming the flag, when a field is out of the range its comment states.
absl::Status ValidateLoadgenOptions(const LoadgenOptions& options);

// Creates the channel (client/terminal.h, CreateChannel), waits up to `connect_timeout` for it to
// connect, then requires grpc.health.v1 to report SERVING; a server without the health service
// (UNIMPLEMENTED) is accepted. Errors: those of CreateChannel, and UNAVAILABLE for a server that
// is unreachable, fails the health check or is not SERVING.
absl::StatusOr<std::shared_ptr<grpc::Channel>> ConnectForLoad(const LoadgenOptions& options);

// One measured call. Times are seconds from the call's arrival.
struct CallRecord {
  grpc::StatusCode code = grpc::StatusCode::OK;
  double latency = 0;                         // to the final status
  double to_accepted = -1;                    // < 0: no Accepted received
  double first_preview = -1;                  // < 0: no preview received
  int previews = 0;                           // Progress messages with a preview
  int images = 0;                             // Results received
  std::chrono::steady_clock::time_point end;  // when the final status arrived
};

// What RunLoad observed.
struct LoadRun {
  // Start of the measured phase (the first arrival).
  std::chrono::steady_clock::time_point start;
  // Measured calls that started.
  int64_t sent = 0;
  // Every measured call, in completion order: RunLoad returns only once every call it started
  // has ended (at worst by its deadline or by cancellation), so there are `sent` of them.
  std::vector<CallRecord> records;
  // Open loop: the largest number of arrivals that waited in the client at once; 0 otherwise.
  int64_t max_waiting = 0;
  // Whether `stop` was set before the run ended.
  bool interrupted = false;
};

// Runs the warm-up and then the measured phase of `options` (which must be valid) over
// `channel`, and returns when every call has ended. Setting `stop` (from any thread or a signal
// handler) ends the run early: no new calls start, waiting arrivals are discarded, calls in
// flight are cancelled. Writes a progress line to `log` every few seconds of the measured
// phase. Blocks the calling thread; the calls run on gRPC's threads.
LoadRun RunLoad(const std::shared_ptr<grpc::Channel>& channel, const LoadgenOptions& options,
                const std::atomic<bool>& stop, std::ostream& log);

// Nearest-rank percentiles (client/terminal.h, Percentile), maximum and mean of some samples;
// all 0 when there are none.
struct Distribution {
  int64_t count = 0;
  double p50 = 0;
  double p90 = 0;
  double p95 = 0;
  double p99 = 0;
  double max = 0;
  double mean = 0;
};
Distribution Describe(std::vector<double> samples);

// The numbers of a run.
struct LoadSummary {
  bool interrupted = false;
  int64_t sent = 0;
  int64_t requests = 0;  // completed calls, successful or not
  int64_t ok = 0;
  int64_t failed = 0;
  std::map<std::string, int64_t> errors;  // failed calls by status-code name
  int64_t images = 0;                     // Results received, failed calls included
  int64_t previews = 0;                   // previews received, failed calls included
  // Wall time of the measured phase: from its start to the end of the last call, at least 1 ns
  // so that the rates below are finite.
  double seconds = 0;
  double requests_per_second = 0;
  double ok_per_second = 0;
  double images_per_second = 0;
  // Over successful calls only: a failed call's latency says nothing about the service it asked
  // for (a rejection is fast, a timeout is the deadline). time_to_first_preview.count is the
  // number of successful calls that received a preview.
  Distribution latency;
  Distribution time_to_accepted;
  Distribution time_to_first_preview;
  double previews_per_call = 0;  // previews / requests; 0 without requests
  int64_t max_waiting_in_client = 0;
};
LoadSummary Summarize(const LoadRun& run);

// The report as the binary prints it: five lines of text, each ending in '\n'.
std::string ReportText(const LoadgenOptions& options, const LoadSummary& summary);

// The report as JSON: a "config" object echoing `options`, then flat keys (e.g.
// "latency_p99_s"), so that reports diff and tabulate easily (docs/bench/grpc_*.json).
nlohmann::json ReportJson(const LoadgenOptions& options, const LoadSummary& summary);

// RunLoad, then the report: text to `out`, progress lines to `log`, and JSON to `options.json`
// when set. OK when the run happened, even with failed calls; an error only when the JSON
// report cannot be written (after the text report is out).
absl::Status RunLoadgen(const std::shared_ptr<grpc::Channel>& channel,
                        const LoadgenOptions& options, const std::atomic<bool>& stop,
                        std::ostream& out, std::ostream& log);

}  // namespace dartserve::client

#endif  // DARTSERVE_CLIENT_LOADGEN_H_

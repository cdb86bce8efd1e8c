// The load generator behind dartserve-loadgen: it drives a dartserve server with GenerateImage
// calls and reports what the server's users see: throughput, latency percentiles, time to
// first preview and errors; and, for soak runs, every call's outcome by the way the client
// treated it, the calls the server lost, and the server's memory over time.
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
// (closed loop, kind normal) and are not measured. New calls stop arriving after `duration`;
// calls in flight or waiting then still run to their end (each bounded by its deadline) and
// count.
//
// Call kinds (the mix's `kind` key, drawn per call from its own stream of `seed`, so the request
// sequence does not depend on the kinds). A kind that acts mid-stream does so after a point drawn
// uniformly from the call's Progress messages (Accepted's total_steps x num_images), from right
// after Accepted to after the last Progress:
//   normal          reads to the end; expects OK with every image.
//   client_cancel   cancels its own call (ClientContext::TryCancel) and reads on; CANCELLED.
//   cancel_rpc      sends CancelGeneration(its request_id, "loadgen-<run>-<n>") on the same
//                   channel and reads on; CANCELLED, and the CancelGeneration call OK (NOT_FOUND
//                   when the call had ended on the server first).
//   short_deadline  reads to the end under a deadline drawn from [short_timeout / 10,
//                   short_timeout]; DEADLINE_EXCEEDED, or OK when the server was quicker.
//   abandon         stops reading, holds the unread stream for a time drawn from
//                   [0, abandon_seconds] (the server's writes back up meanwhile), then drops it
//                   (TryCancel); CANCELLED.
// Any kind may also end otherwise (a full queue, or OK when the server finished first); the
// report counts final statuses per kind. A call is *lost* (IsLost) when it ended OK without
// every image it asked for: every kind but abandon reads its stream to the end, so an OK there
// promises all the Results. Every call ends (RunLoad waits for it) within its deadline, so with
// `timeout` > 0 a server that drops a call shows as DEADLINE_EXCEEDED of a normal call.
//
// With `metrics` set, the server's resident memory (process_resident_memory_bytes on its
// Prometheus endpoint, client/prometheus_scrape.h) is sampled every `rss_every` seconds on a
// thread of its own, from the start of the measured phase to its end.
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
// ConnectForLoad (channel and health check), ApplySoakDefaults (--soak), RunLoad (the calls),
// Summarize (the numbers), ReportText and ReportJson (their presentation; these three in
// loadgen_report.cc), and RunLoadgen, which strings the last four together for the binary.
#ifndef DARTSERVE_CLIENT_LOADGEN_H_
#define DARTSERVE_CLIENT_LOADGEN_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
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
  // The longest deadline of a short_deadline call, in seconds. > 0.
  double short_timeout = 1;
  // The longest an abandon call holds its unread stream, in seconds. >= 0.
  double abandon_seconds = 2;
  // host:port of the server's Prometheus endpoint, whose RSS is then sampled; empty: none.
  std::string metrics;
  // Seconds between RSS samples. > 0.
  double rss_every = 5;
  // A soak run: ApplySoakDefaults completes the mix, and `metrics` is required.
  bool soak = false;
};

// INVALID_ARGUMENT, naming the flag, when a field is out of the range its comment states.
absl::Status ValidateLoadgenOptions(const LoadgenOptions& options);

// Creates the channel (client/terminal.h, CreateChannel), waits up to `connect_timeout` for it to
// connect, then requires grpc.health.v1 to report SERVING; a server without the health service
// (UNIMPLEMENTED) is accepted. With `metrics` set, also scrapes the server's RSS once. Errors:
// those of CreateChannel, UNAVAILABLE for a server that is unreachable, fails the health check
// or is not SERVING, and ScrapeSample's (prefixed "--metrics: ") for the metrics endpoint.
absl::StatusOr<std::shared_ptr<grpc::Channel>> ConnectForLoad(const LoadgenOptions& options);

// What --soak adds to the mix: every call kind when it names none, and every model the server
// serves (ListModels) when it names none. Appends what it adds to `options->mix_text`, so the
// report echoes the mix that ran. Errors: ListModels' failure as UNAVAILABLE.
absl::Status ApplySoakDefaults(const std::shared_ptr<grpc::Channel>& channel,
                               LoadgenOptions* options);

// One measured call. Times are seconds from the call's arrival.
struct CallRecord {
  grpc::StatusCode code = grpc::StatusCode::OK;
  double latency = 0;                         // to the final status
  double to_accepted = -1;                    // < 0: no Accepted received
  double first_preview = -1;                  // < 0: no preview received
  int previews = 0;                           // Progress messages with a preview
  int images = 0;                             // Results received
  std::chrono::steady_clock::time_point end;  // when the final status arrived
  CallKind kind = CallKind::kNormal;
  int asked_images = 0;  // images the request asked for; 0: unknown (never lost)
  // cancel_rpc: the CancelGeneration call's status; unset when the call ended before sending it.
  std::optional<grpc::StatusCode> cancel_rpc;
};

// Whether the call ended OK short of the images it asked for, while reading its stream to the
// end (every kind but abandon does).
bool IsLost(const CallRecord& record);

// One sample of the server's resident memory.
struct RssSample {
  double seconds = 0;  // from the start of the measured phase
  double bytes = 0;
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
  // With LoadgenOptions::metrics: the samples, in time order, and the scrapes that failed.
  std::vector<RssSample> server_rss;
  int64_t rss_scrape_errors = 0;
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

// The calls of one kind.
struct KindOutcome {
  int64_t calls = 0;
  int64_t lost = 0;
  std::map<std::string, int64_t> statuses;     // by final status-code name, OK included
  std::map<std::string, int64_t> cancel_rpcs;  // cancel_rpc: CancelGeneration calls by status
};

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
  int64_t lost = 0;                             // IsLost calls
  std::map<std::string, KindOutcome> outcomes;  // by CallKindName, kinds that ran only
  // The server's RSS: every sample, the largest, and the growth over the second half of the
  // samples (the last minus the middle one; a leak grows it, a level curve keeps it near 0).
  std::vector<RssSample> server_rss;
  int64_t rss_scrape_errors = 0;
  double rss_max_bytes = 0;
  double rss_second_half_growth_bytes = 0;
};
LoadSummary Summarize(const LoadRun& run);

// The report as the binary prints it, each line ending in '\n': five lines (calls, throughput,
// latency, time to accepted, time to first preview); when calls of another kind than normal
// ran, one line per kind with its final statuses; with RSS samples, one line of them (at most
// eight, evenly spread) with their maximum and second-half growth.
std::string ReportText(const LoadgenOptions& options, const LoadSummary& summary);

// The report as JSON: a "config" object echoing `options`, then flat keys (e.g.
// "latency_p99_s"), so that reports diff and tabulate easily (docs/bench/grpc_*.json), and the
// two tables: "outcomes" ({kind: {calls, lost, statuses, cancel_rpcs}}) and "server_rss"
// ([{t_s, bytes}]).
nlohmann::json ReportJson(const LoadgenOptions& options, const LoadSummary& summary);

// RunLoad, then the report: text to `out`, progress lines to `log`, and JSON to `options.json`
// when set. OK when the run happened, even with failed calls; an error only when the JSON
// report cannot be written, or DATA_LOSS when calls were lost (both after the reports are out).
absl::Status RunLoadgen(const std::shared_ptr<grpc::Channel>& channel,
                        const LoadgenOptions& options, const std::atomic<bool>& stop,
                        std::ostream& out, std::ostream& log);

}  // namespace dartserve::client

#endif  // DARTSERVE_CLIENT_LOADGEN_H_

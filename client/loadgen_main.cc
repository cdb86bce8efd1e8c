// dartserve-loadgen: drives a dartserve server with GenerateImage calls and reports what its users
// see: throughput, latency percentiles, time to first preview and errors (client/loadgen.h says
// what each mode does and what each number means).
//
//   dartserve-loadgen --concurrency 32 --duration 30                     closed loop
//   dartserve-loadgen --rate 20 --concurrency 64 --duration 30           open loop (Poisson)
//   dartserve-loadgen --mix "class:0-9,guidance:1|2,preview_every:0|1" --json out/load.json
//
// Exit status: 0 when the run happened (even with failed calls), 1 for bad flags, an unwritable
// --json, or a server that is unreachable or not SERVING at start. Ctrl-C stops early: waiting
// arrivals are discarded, calls in flight are cancelled, and the report covers what completed.
#include <signal.h>

#include <atomic>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "client/loadgen.h"
#include "client/terminal.h"

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

// Set by the first Ctrl-C; RunLoadgen polls it. A lock-free atomic is async-signal-safe.
std::atomic<bool> g_interrupted{false};
void OnInterrupt(int) { g_interrupted.store(true); }

void StopOnInterrupt() {
  struct sigaction action = {};
  action.sa_handler = OnInterrupt;
  action.sa_flags = SA_RESETHAND;  // a second Ctrl-C kills the process
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
}

int Fail(absl::string_view message) {
  std::cerr << "dartserve-loadgen: " << message << "\n";
  return 1;
}

absl::StatusOr<dc::LoadgenOptions> OptionsFromFlags() {
  dc::LoadgenOptions options;
  options.connection = dc::ConnectionFromFlags();
  options.concurrency = absl::GetFlag(FLAGS_concurrency);
  options.rate = absl::GetFlag(FLAGS_rate);
  options.duration = absl::GetFlag(FLAGS_duration);
  options.mix_text = absl::GetFlag(FLAGS_mix);
  options.seed = absl::GetFlag(FLAGS_seed);
  options.warmup = absl::GetFlag(FLAGS_warmup);
  options.timeout = absl::GetFlag(FLAGS_timeout);
  options.connect_timeout = absl::GetFlag(FLAGS_connect_timeout);
  options.json = absl::GetFlag(FLAGS_json);
  if (absl::Status s = dc::ValidateLoadgenOptions(options); !s.ok()) return s;
  absl::StatusOr<dc::LoadMix> mix = dc::ParseLoadMix(options.mix_text);
  if (!mix.ok()) return mix.status();
  options.mix = *std::move(mix);
  return options;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "dartserve-loadgen [--server host:port] [--concurrency N] [--rate R] [--duration S] "
      "[--mix SPEC] [--warmup N] [--json PATH]");
  const std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() > 1) return Fail(absl::StrCat("unexpected argument '", args[1], "'"));
  const absl::StatusOr<dc::LoadgenOptions> options = OptionsFromFlags();
  if (!options.ok()) return Fail(options.status().message());
  // Ctrl-C while connecting still kills the process: the handler goes in only once there is a
  // run to stop and a report to print.
  const absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = dc::ConnectForLoad(*options);
  if (!channel.ok()) return Fail(channel.status().message());
  StopOnInterrupt();
  const absl::Status status =
      dc::RunLoadgen(*channel, *options, g_interrupted, std::cout, std::cerr);
  return status.ok() ? 0 : Fail(status.message());
}

// dartserve-loadgen: drives a dartserve server with GenerateImage calls and reports what its users
// see: throughput, latency percentiles, time to first preview and errors (client/loadgen.h says
// what each mode does and what each number means).
//
//   dartserve-loadgen --concurrency 32 --duration 30                     closed loop
//   dartserve-loadgen --rate 20 --concurrency 64 --duration 30           open loop (Poisson)
//   dartserve-loadgen --mix "class:0-9,guidance:1|2,preview_every:0|1" --json out/load.json
//   dartserve-loadgen --soak --metrics localhost:9464 --duration 1800    every call kind, every
//                                                                        model, the server's RSS
//
// Exit status: 0 when the run happened (even with failed calls), 1 for bad flags, an unwritable
// --json, a server that is unreachable or not SERVING at start (or a --metrics endpoint without
// the server's RSS), or lost calls (ended OK without their images). Ctrl-C stops early: waiting
// arrivals are discarded, calls in flight are cancelled, and the report covers what completed.
#include <signal.h>

#include <atomic>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
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
          "guidance, preview_every, preview_kind, n, priority, model, kind (client/terminal.h). "
          "Empty: the server's defaults for everything. With --soak the default is empty.");
ABSL_FLAG(uint64_t, seed, 1, "Seed of the request sequence and of the arrival times.");
ABSL_FLAG(std::string, json, "", "Also write the report as JSON to this path.");
ABSL_FLAG(int, warmup, 4, "Calls made before measuring (closed loop), not measured.");
ABSL_FLAG(double, timeout, 120, "Deadline of each call in seconds (0: none).");
ABSL_FLAG(double, connect_timeout, 10, "Seconds to wait for the server at start.");
ABSL_FLAG(bool, soak, false,
          "Soak run: a --mix without kind: or model: gets every call kind (normal, "
          "client_cancel, cancel_rpc, short_deadline, abandon) and every model the server "
          "serves; needs --metrics. Exits 1 if any call is lost.");
ABSL_FLAG(double, short_timeout, 1,
          "Calls of kind short_deadline get a deadline from [short_timeout / 10, short_timeout] "
          "seconds.");
ABSL_FLAG(double, abandon_seconds, 2,
          "Calls of kind abandon stop reading and drop their stream up to this many seconds "
          "later.");
ABSL_FLAG(std::string, metrics, "",
          "host:port of the server's Prometheus endpoint (dartserve --metrics_port): its RSS is "
          "sampled every --rss_every seconds and reported. Empty: not sampled.");
ABSL_FLAG(double, rss_every, 5, "Seconds between samples of the server's RSS.");

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
  // A class suits only class-conditional models, and a soak runs every model.
  const absl::CommandLineFlag* mix_flag = absl::FindCommandLineFlag("mix");
  if (absl::GetFlag(FLAGS_soak) && mix_flag->CurrentValue() == mix_flag->DefaultValue()) {
    options.mix_text = "";
  }
  options.seed = absl::GetFlag(FLAGS_seed);
  options.warmup = absl::GetFlag(FLAGS_warmup);
  options.timeout = absl::GetFlag(FLAGS_timeout);
  options.connect_timeout = absl::GetFlag(FLAGS_connect_timeout);
  options.json = absl::GetFlag(FLAGS_json);
  options.soak = absl::GetFlag(FLAGS_soak);
  options.short_timeout = absl::GetFlag(FLAGS_short_timeout);
  options.abandon_seconds = absl::GetFlag(FLAGS_abandon_seconds);
  options.metrics = absl::GetFlag(FLAGS_metrics);
  options.rss_every = absl::GetFlag(FLAGS_rss_every);
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
      "[--mix SPEC] [--warmup N] [--json PATH] [--soak] [--metrics host:port]");
  const std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() > 1) return Fail(absl::StrCat("unexpected argument '", args[1], "'"));
  absl::StatusOr<dc::LoadgenOptions> options = OptionsFromFlags();
  if (!options.ok()) return Fail(options.status().message());
  // Ctrl-C while connecting still kills the process: the handler goes in only once there is a
  // run to stop and a report to print.
  const absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = dc::ConnectForLoad(*options);
  if (!channel.ok()) return Fail(channel.status().message());
  if (options->soak) {
    if (absl::Status s = dc::ApplySoakDefaults(*channel, &*options); !s.ok()) {
      return Fail(s.message());
    }
  }
  StopOnInterrupt();
  const absl::Status status =
      dc::RunLoadgen(*channel, *options, g_interrupted, std::cout, std::cerr);
  return status.ok() ? 0 : Fail(status.message());
}

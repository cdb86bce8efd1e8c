// dartserve: the gRPC image-generation server, with an HTTP front end (JSON API, OpenAI-compatible
// images endpoint, web page) on --http_port.
//
//   dartserve --port 50051 --http_port 8080 --metrics_port 9464   # the default --model list
//
// Loads each model (safetensors + config.json, optional classes.txt with one class name per line)
// as --replicas engines (or one per --devices entry), starts gRPC with health NOT_SERVING, warms
// every model up, then reports SERVING. SIGTERM or SIGINT: stop accepting, let in-flight requests
// finish within --grace_seconds, fail the rest with UNAVAILABLE, exit 0.
#include <signal.h>

#include <iostream>
#include <optional>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "common/file_io.h"
#include "common/malloc_policy.h"
#include "model/engine_factory.h"
#include "server/server.h"

// The default is the shipped set, the one list of it: scripts/run.sh relies on it, and the deploy
// tests check that the images and the Kubernetes flags serve the same models.
ABSL_FLAG(std::vector<std::string>, model,
          (std::vector<std::string>{
              "fmnist-dart-fm=weights/fmnist-dart-fm", "fmnist-dart=weights/fmnist-dart",
              "shapes-dart=weights/shapes-dart", "scenes64-dart=weights/scenes64-dart",
              "emoji-dart=weights/emoji-dart"}),
          "Models to serve, NAME=DIR, comma-separated (DIR relative to the working directory); "
          "the first is the default.");
ABSL_FLAG(std::string, host, "0.0.0.0", "Address to listen on (gRPC and metrics).");
ABSL_FLAG(int, port, 50051, "gRPC port (0: pick a free one and print it).");
ABSL_FLAG(bool, reuse_port, false,
          "Let several dartserve processes listen on one --port (SO_REUSEPORT; the kernel spreads "
          "connections over them). Off: a port another process holds is an error.");
ABSL_FLAG(int, http_port, -1,
          "HTTP port of the JSON API, the OpenAI-compatible images endpoint and the web page "
          "(0: pick one; -1: off). Same --auth_token_file, TLS and --max_request_kb as gRPC.");
ABSL_FLAG(int, http_threads, 64,
          "HTTP requests served at once (each streamed generation holds one for its length).");
ABSL_FLAG(int, metrics_port, 9464, "Prometheus metrics HTTP port (0: pick one; -1: off).");
ABSL_FLAG(float, guidance, 0.0f,
          "Guidance scale for requests that give none, on every conditional model (0: each "
          "model's own: its checkpoint's serving.json, else 2).");
ABSL_FLAG(int, threads, 2,
          "Torch intra-op threads of each replica's compute lane, which runs that replica of every "
          "model.");
ABSL_FLAG(int, replicas, 1,
          "Engines per model on this machine's CPU, each with its own worker thread, --threads "
          "torch threads and --kv_budget_mb; requests go to the least-loaded one. Ignored with "
          "--devices.");
ABSL_FLAG(std::vector<std::string>, devices, {},
          "Torch devices, comma-separated (cuda:0,cuda:1): one replica of every model per device. "
          "Empty: --replicas replicas on the CPU.");
ABSL_FLAG(int, max_queued, 256, "Waiting images per model before RESOURCE_EXHAUSTED.");
ABSL_FLAG(int, max_batch, 32, "Images denoised together per step.");
ABSL_FLAG(int64_t, kv_budget_mb, 1024, "KV cache memory per replica (MiB).");
ABSL_FLAG(std::string, auth_token_file, "",
          "File holding a bearer token; when set, every call must send it.");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain (TLS on when set with --tls_key).");
ABSL_FLAG(std::string, tls_key, "", "PEM private key.");
ABSL_FLAG(double, grace_seconds, 30, "On SIGTERM, time in-flight requests get to finish.");
ABSL_FLAG(int, max_request_kb, 1024, "Largest accepted request message (KiB).");
ABSL_FLAG(double, malloc_trim_seconds, 60,
          "Every this many seconds, hand the malloc arenas' free pages back to the system "
          "(malloc_trim); 0: never. Without it RSS keeps rising under churn (docs/reliability.md, "
          "Soak).");

namespace ds = dartserve::server;
namespace dm = dartserve::model;

namespace {

// The replicas the flags ask for, with one compute lane each, which every model's replica i shares
// (model/compute_lane.h: one OpenMP pool per lane).
dm::ReplicaOptions ReplicasFromFlags() {
  const float guidance = absl::GetFlag(FLAGS_guidance);
  dm::ReplicaOptions replicas{
      .devices = absl::GetFlag(FLAGS_devices),
      .replicas = absl::GetFlag(FLAGS_replicas),
      .default_guidance = guidance != 0 ? std::optional<float>(guidance) : std::nullopt};
  replicas.lanes = dm::MakeLanes(replicas);
  return replicas;
}

absl::StatusOr<ds::ModelSpec> LoadModel(const std::string& name, const std::string& dir,
                                        const dm::ReplicaOptions& replicas) {
  absl::StatusOr<std::vector<std::unique_ptr<dm::Engine>>> engines = dm::LoadEngines(dir, replicas);
  if (!engines.ok()) {
    return absl::Status(engines.status().code(),
                        absl::StrCat("--model ", name, ": ", engines.status().message()));
  }
  ds::ModelSpec spec{.name = name, .engines = *std::move(engines)};
  spec.scheduler.max_queued = absl::GetFlag(FLAGS_max_queued);
  spec.scheduler.max_batch_requests = absl::GetFlag(FLAGS_max_batch);
  spec.scheduler.kv_budget_bytes = absl::GetFlag(FLAGS_kv_budget_mb) << 20;
  return spec;
}

int Fail(const absl::Status& status) {
  std::cerr << "dartserve: " << status.message() << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  if (absl::Status s = dartserve::TuneMallocForTensors(); !s.ok()) return Fail(s);

  // Block the stop signals in every thread; the main thread waits for them with sigwait.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);  // before any thread exists
  dm::SetTorchThreads(absl::GetFlag(FLAGS_threads));   // each lane's thread gets this many
  const dm::ReplicaOptions replicas = ReplicasFromFlags();
  std::vector<ds::ModelSpec> models;
  for (const std::string& entry : absl::GetFlag(FLAGS_model)) {
    std::vector<std::string> parts = absl::StrSplit(entry, absl::MaxSplits('=', 1));
    if (parts.size() != 2 || parts[0].empty() || parts[1].empty()) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("--model: expected NAME=DIR, got '", entry, "'")));
    }
    absl::StatusOr<ds::ModelSpec> spec = LoadModel(parts[0], parts[1], replicas);
    if (!spec.ok()) return Fail(spec.status());
    models.push_back(*std::move(spec));
  }

  ds::ServerOptions options;
  const std::string host = absl::GetFlag(FLAGS_host);
  options.address = absl::StrCat(host, ":", absl::GetFlag(FLAGS_port));
  options.reuse_port = absl::GetFlag(FLAGS_reuse_port);
  options.metrics_address = absl::GetFlag(FLAGS_metrics_port) < 0
                                ? ""
                                : absl::StrCat(host, ":", absl::GetFlag(FLAGS_metrics_port));
  options.http_address = absl::GetFlag(FLAGS_http_port) < 0
                             ? ""
                             : absl::StrCat(host, ":", absl::GetFlag(FLAGS_http_port));
  options.http_threads = absl::GetFlag(FLAGS_http_threads);
  options.max_receive_message_bytes = absl::GetFlag(FLAGS_max_request_kb) << 10;
  options.service.version = "0.1.0";
  options.lanes = replicas.lanes;
  if (const std::string path = absl::GetFlag(FLAGS_auth_token_file); !path.empty()) {
    absl::StatusOr<std::string> token = dartserve::ReadFile(path);
    if (!token.ok()) return Fail(token.status());
    options.service.auth_token = std::string(absl::StripAsciiWhitespace(*token));
    if (options.service.auth_token.empty()) {
      return Fail(absl::InvalidArgumentError("--auth_token_file: the file is empty"));
    }
  }
  if (!absl::GetFlag(FLAGS_tls_cert).empty() || !absl::GetFlag(FLAGS_tls_key).empty()) {
    absl::StatusOr<std::string> cert = dartserve::ReadFile(absl::GetFlag(FLAGS_tls_cert));
    absl::StatusOr<std::string> key = dartserve::ReadFile(absl::GetFlag(FLAGS_tls_key));
    if (!cert.ok()) return Fail(cert.status());
    if (!key.ok()) return Fail(key.status());
    options.tls_cert_pem = *cert;
    options.tls_key_pem = *key;
  }

  absl::StatusOr<std::unique_ptr<ds::Server>> server =
      ds::Server::Start(std::move(options), std::move(models));
  if (!server.ok()) return Fail(server.status());
  const auto where = [&](int port) {
    return port != 0 ? absl::StrCat(host, ":", port) : std::string("(off)");
  };
  // Tools read the ports from this line: its start stays "gRPC on H:P, metrics on H:P".
  std::cout << "dartserve: gRPC on " << host << ":" << (*server)->port() << ", metrics on "
            << where((*server)->metrics_port()) << ", HTTP on " << where((*server)->http_port())
            << "; warming up" << std::endl;
  if (absl::Status s = (*server)->WarmUp(); !s.ok()) return Fail(s);
  std::cout << "dartserve: serving (health SERVING)" << std::endl;

  const double trim_seconds = absl::GetFlag(FLAGS_malloc_trim_seconds);
  std::optional<dartserve::MallocTrimmer> trimmer;
  if (trim_seconds > 0) trimmer.emplace(absl::Seconds(trim_seconds));

  int signal = 0;
  sigwait(&stop_signals, &signal);
  const double grace = absl::GetFlag(FLAGS_grace_seconds);
  std::cout << "dartserve: " << (signal == SIGTERM ? "SIGTERM" : "SIGINT") << ": draining (grace "
            << grace << " s)" << std::endl;
  (*server)->Shutdown(absl::Seconds(grace));
  std::cout << "dartserve: stopped" << std::endl;
  return 0;
}

// dartserve: the gRPC image-generation server.
//
//   dartserve --port 50051 --metrics_port 9464   # serves the default --model list (below)
//
// Loads each model (safetensors + config.json, optional classes.txt with one class name per line),
// starts gRPC with health NOT_SERVING, warms every model up, then reports SERVING. SIGTERM or
// SIGINT: stop accepting, let in-flight requests finish within --grace_seconds, fail the rest with
// UNAVAILABLE, exit 0.
#include <signal.h>
#include <torch/torch.h>

#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "model/checkpoint.h"
#include "model/dart_engine.h"
#include "server/server.h"

ABSL_FLAG(std::vector<std::string>, model,
          (std::vector<std::string>{"fmnist-dart-fm=weights/fmnist-dart-fm",
                                    "fmnist-dart=weights/fmnist-dart",
                                    "shapes-dart=weights/shapes-dart"}),
          "Models to serve, NAME=DIR, comma-separated; the first is the default.");
ABSL_FLAG(std::string, host, "0.0.0.0", "Address to listen on (gRPC and metrics).");
ABSL_FLAG(int, port, 50051, "gRPC port (0: pick a free one and print it).");
ABSL_FLAG(int, metrics_port, 9464, "Prometheus metrics HTTP port (0: pick one; -1: off).");
ABSL_FLAG(float, guidance, 2.0f, "Default guidance scale for requests that give none.");
ABSL_FLAG(int, threads, 2, "Torch intra-op threads per model.");
ABSL_FLAG(int, max_queued, 256, "Waiting images per model before RESOURCE_EXHAUSTED.");
ABSL_FLAG(int, max_batch, 32, "Images denoised together per step.");
ABSL_FLAG(int64_t, kv_budget_mb, 1024, "KV cache memory per model (MiB).");
ABSL_FLAG(std::string, auth_token_file, "",
          "File holding a bearer token; when set, every call must send it.");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain (TLS on when set with --tls_key).");
ABSL_FLAG(std::string, tls_key, "", "PEM private key.");
ABSL_FLAG(double, grace_seconds, 30, "On SIGTERM, time in-flight requests get to finish.");
ABSL_FLAG(int, max_request_kb, 1024, "Largest accepted request message (KiB).");

namespace ds = dartserve::server;
namespace dm = dartserve::model;

namespace {

absl::StatusOr<std::string> ReadText(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

absl::StatusOr<ds::ModelSpec> LoadModel(const std::string& name, const std::string& dir) {
  absl::StatusOr<dm::Dart> model = dm::LoadCheckpoint(dir);
  if (!model.ok()) return model.status();
  const dm::ModelConfig& c = (*model)->config();
  ds::ModelSpec spec;
  spec.info.name = name;
  spec.info.conditioning = c.conditioning == dm::Conditioning::kClass  ? "class"
                           : c.conditioning == dm::Conditioning::kText ? "text"
                                                                       : "unconditional";
  spec.info.num_classes = c.conditioning == dm::Conditioning::kClass ? c.num_classes : 0;
  spec.info.image_size = c.image_size;
  spec.info.channels = c.channels;
  spec.info.steps = c.num_steps;
  spec.info.default_guidance =
      spec.info.conditioning == "unconditional" ? 1.0f : absl::GetFlag(FLAGS_guidance);
  for (const torch::Tensor& p : (*model)->parameters()) spec.info.parameters += p.numel();
  if (absl::StatusOr<std::string> names = ReadText(dir + "/classes.txt"); names.ok()) {
    for (absl::string_view line : absl::StrSplit(*names, '\n', absl::SkipWhitespace())) {
      spec.info.class_names.emplace_back(absl::StripAsciiWhitespace(line));
    }
    if (static_cast<int>(spec.info.class_names.size()) != spec.info.num_classes) {
      return absl::InvalidArgumentError(
          absl::StrCat(dir, "/classes.txt: ", spec.info.class_names.size(), " names for ",
                       spec.info.num_classes, " classes"));
    }
  }
  spec.engine = std::make_unique<dm::DartEngine>(*std::move(model));
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

  // Block the stop signals in every thread; the main thread waits for them with sigwait.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);  // before any thread exists
  torch::set_num_threads(absl::GetFlag(FLAGS_threads));

  std::vector<ds::ModelSpec> models;
  for (const std::string& entry : absl::GetFlag(FLAGS_model)) {
    std::vector<std::string> parts = absl::StrSplit(entry, absl::MaxSplits('=', 1));
    if (parts.size() != 2 || parts[0].empty() || parts[1].empty()) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("--model: expected NAME=DIR, got '", entry, "'")));
    }
    absl::StatusOr<ds::ModelSpec> spec = LoadModel(parts[0], parts[1]);
    if (!spec.ok()) return Fail(spec.status());
    models.push_back(*std::move(spec));
  }

  ds::ServerOptions options;
  const std::string host = absl::GetFlag(FLAGS_host);
  options.address = absl::StrCat(host, ":", absl::GetFlag(FLAGS_port));
  options.metrics_address = absl::GetFlag(FLAGS_metrics_port) < 0
                                ? ""
                                : absl::StrCat(host, ":", absl::GetFlag(FLAGS_metrics_port));
  options.max_receive_message_bytes = absl::GetFlag(FLAGS_max_request_kb) << 10;
  options.service.version = "0.1.0";
  if (const std::string path = absl::GetFlag(FLAGS_auth_token_file); !path.empty()) {
    absl::StatusOr<std::string> token = ReadText(path);
    if (!token.ok()) return Fail(token.status());
    options.service.auth_token = std::string(absl::StripAsciiWhitespace(*token));
    if (options.service.auth_token.empty()) {
      return Fail(absl::InvalidArgumentError("--auth_token_file: the file is empty"));
    }
  }
  if (!absl::GetFlag(FLAGS_tls_cert).empty() || !absl::GetFlag(FLAGS_tls_key).empty()) {
    absl::StatusOr<std::string> cert = ReadText(absl::GetFlag(FLAGS_tls_cert));
    absl::StatusOr<std::string> key = ReadText(absl::GetFlag(FLAGS_tls_key));
    if (!cert.ok()) return Fail(cert.status());
    if (!key.ok()) return Fail(key.status());
    options.tls_cert_pem = *cert;
    options.tls_key_pem = *key;
  }

  absl::StatusOr<std::unique_ptr<ds::Server>> server =
      ds::Server::Start(std::move(options), std::move(models));
  if (!server.ok()) return Fail(server.status());
  std::cout << "dartserve: gRPC on " << host << ":" << (*server)->port() << ", metrics on "
            << ((*server)->metrics_port() ? absl::StrCat(host, ":", (*server)->metrics_port())
                                          : std::string("(off)"))
            << "; warming up" << std::endl;
  if (absl::Status s = (*server)->WarmUp(); !s.ok()) return Fail(s);
  std::cout << "dartserve: serving (health SERVING)" << std::endl;

  int signal = 0;
  sigwait(&stop_signals, &signal);
  const double grace = absl::GetFlag(FLAGS_grace_seconds);
  std::cout << "dartserve: " << (signal == SIGTERM ? "SIGTERM" : "SIGINT") << ": draining (grace "
            << grace << " s)" << std::endl;
  (*server)->Shutdown(absl::Seconds(grace));
  std::cout << "dartserve: stopped" << std::endl;
  return 0;
}

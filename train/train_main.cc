// dartserve-train: train a DART model, or the autoencoder of a latent DART model (a config whose
// "model" says "kind": "autoencoder"), from a config JSON into an output folder.
//
//   dartserve-train --config train/configs/fmnist-dart.json --out runs/fmnist-dart
//
// Re-running the same command resumes from the last checkpoint in --out (exactly: the same steps,
// batches and noise as an uninterrupted run). SIGINT/SIGTERM finish the current step, checkpoint
// and exit, so a run can be stopped at any moment. The servable EMA checkpoint is --out/ema.
#include <atomic>
#include <csignal>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "common/file_io.h"
#include "common/malloc_policy.h"
#include "model/safetensors.h"
#include "train/autoencoder_trainer.h"
#include "train/trainer.h"

ABSL_FLAG(std::string, config, "", "Training config JSON (required).");
ABSL_FLAG(std::string, out, "",
          "Output folder: checkpoints, EMA weights, sample grids (required).");
ABSL_FLAG(int64_t, max_steps, -1, "Stop after this many steps in this invocation (-1: no limit).");
ABSL_FLAG(int, threads, 2, "Torch intra-op threads.");

namespace {
std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop.store(true); }

int Fail(absl::string_view message) {
  std::cerr << "dartserve-train: " << message << "\n";
  return 1;
}
}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Train a DART model or an autoencoder: dartserve-train --config FILE --out DIR");
  absl::ParseCommandLine(argc, argv);
  if (absl::Status s = dartserve::TuneMallocForTensors(); !s.ok()) {
    std::cerr << "dartserve-train: " << s.message() << "\n";
    return 1;
  }
  if (absl::GetFlag(FLAGS_config).empty() || absl::GetFlag(FLAGS_out).empty()) {
    return Fail("--config and --out are required");
  }
  torch::set_num_threads(std::max(1, absl::GetFlag(FLAGS_threads)));

  absl::StatusOr<std::string> text = dartserve::ReadFile(absl::GetFlag(FLAGS_config));
  if (!text.ok()) return Fail(text.status().message());
  absl::StatusOr<dartserve::train::TrainConfig> config =
      dartserve::train::TrainConfigFromJson(*text);
  if (!config.ok())
    return Fail(absl::StrCat(absl::GetFlag(FLAGS_config), ": ", config.status().message()));

  absl::StatusOr<dartserve::data::InMemoryDataset> data =
      dartserve::train::LoadTrainingData(*config);
  if (!data.ok()) return Fail(data.status().message());

  // The config's "model" says what to train: DART, or the autoencoder latent DART builds on.
  absl::StatusOr<std::unique_ptr<dartserve::train::TrainingRun>> run;
  if (config->autoencoder.has_value()) {
    run = dartserve::train::AutoencoderTrainer::Create(*config, *std::move(data),
                                                       absl::GetFlag(FLAGS_out));
  } else {
    run = dartserve::train::Trainer::Create(*config, *std::move(data), absl::GetFlag(FLAGS_out));
  }
  if (!run.ok()) return Fail(run.status().message());
  std::cout << "dartserve-train: "
            << ((*run)->step() > 0 ? "resuming at step " : "starting at step ") << (*run)->step()
            << ", output " << absl::GetFlag(FLAGS_out) << std::endl;

  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  if (absl::Status s =
          dartserve::train::RunTraining(**run, *config, g_stop, absl::GetFlag(FLAGS_max_steps));
      !s.ok()) {
    return Fail(s.message());
  }
  std::cout << "dartserve-train: checkpoint at step " << (*run)->step() << " in "
            << absl::GetFlag(FLAGS_out) << std::endl;
  return 0;
}

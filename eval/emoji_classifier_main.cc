// dartserve-emoji-classifier: trains the emoji evaluator's concept-and-style classifier
// (eval/emoji_classifier.h) on the real training-split images and measures it on the real
// held-out pairs.
//
//   dartserve-emoji-classifier --data data/cache/emoji/images64 --out weights/emoji-classifier
//   dartserve-emoji-classifier --notrain            # score the real images with a saved one
//   dartserve-emoji-classifier --max_steps 20       # throughput check: train 20 steps, save
//   nothing
//
// Training is deterministic for a given --seed and --threads.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_format.h"
#include "common/file_io.h"
#include "common/malloc_policy.h"
#include "data/emoji.h"
#include "eval/emoji_classifier.h"

ABSL_FLAG(std::string, data, "data/cache/emoji/images64", "The emoji data folder (index.tsv).");
ABSL_FLAG(std::string, out, dartserve::eval::kEmojiClassifierDir,
          "Classifier folder: written by training, read with --notrain.");
ABSL_FLAG(bool, train, true, "Train into --out (--notrain: load it and score the real images).");
ABSL_FLAG(int, epochs, dartserve::eval::EmojiClassifierTraining{}.epochs, "Training epochs.");
ABSL_FLAG(int64_t, max_steps, 0, "> 0: train this many steps, report images/s and stop.");
ABSL_FLAG(uint64_t, seed, 0, "Training seed.");
ABSL_FLAG(int, stem_stride, dartserve::eval::EmojiClassifierConfig{}.stem_stride,
          "Stem stride (2: every later layer runs at half the resolution).");
ABSL_FLAG(int, blocks_per_stage, dartserve::eval::EmojiClassifierConfig{}.blocks_per_stage,
          "Residual blocks after each stage's downsampling.");
ABSL_FLAG(int, threads, 1, "Torch intra-op threads (training is deterministic per count).");

namespace dd = dartserve::data;
namespace de = dartserve::eval;

namespace {

int Fail(absl::string_view message) {
  std::cerr << "dartserve-emoji-classifier: " << message << "\n";
  return 1;
}

std::string Line(const char* what, const de::EmojiAccuracy& a) {
  return absl::StrFormat("%-22s %5d images  concept top-1 %.4f  top-5 %.4f  style %.4f", what,
                         a.images, a.concept_top1, a.concept_top5, a.style);
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Train the emoji evaluator's classifier: dartserve-emoji-classifier --data DIR --out DIR");
  absl::ParseCommandLine(argc, argv);
  if (absl::Status s = dartserve::TuneMallocForTensors(); !s.ok()) return Fail(s.message());
  torch::set_num_threads(std::max(1, absl::GetFlag(FLAGS_threads)));
  const std::string data_dir = absl::GetFlag(FLAGS_data), out = absl::GetFlag(FLAGS_out);

  auto train = dd::LoadEmojiDataset(data_dir, dd::EmojiSplit::kTrain, 1);
  if (!train.ok()) return Fail(train.status().message());
  auto held_out = dd::LoadEmojiDataset(data_dir, dd::EmojiSplit::kHeldOut, 1);
  if (!held_out.ok()) return Fail(held_out.status().message());
  std::cout << absl::StrFormat("data: %d training images, %d held-out, %d concepts\n",
                               train->data.size(), held_out->data.size(), train->data.num_classes);

  if (!absl::GetFlag(FLAGS_train)) {
    auto folder = de::LoadEmojiClassifier(out);
    if (!folder.ok()) return Fail(folder.status().message());
    std::cout << Line("held-out pairs (real)", de::MeasureEmojiAccuracy(folder->model, *held_out))
              << "\n"
              << Line("training images", de::MeasureEmojiAccuracy(folder->model, *train)) << "\n"
              << absl::StrFormat(
                     "stored: held-out top-1 %.4f top-5 %.4f style %.4f; FID floor %.3f\n",
                     folder->metrics.held_out.concept_top1, folder->metrics.held_out.concept_top5,
                     folder->metrics.held_out.style, folder->metrics.fid_floor);
    return 0;
  }

  de::EmojiClassifierTraining options;
  options.epochs = absl::GetFlag(FLAGS_epochs);
  options.max_steps = absl::GetFlag(FLAGS_max_steps);
  options.seed = absl::GetFlag(FLAGS_seed);
  options.on_epoch = [&](int epoch, double loss, double images_per_second) {
    std::cout << absl::StrFormat("epoch %d/%d  loss %.4f  %.1f images/s\n", epoch + 1,
                                 options.epochs, loss, images_per_second)
              << std::flush;
  };
  const auto start = std::chrono::steady_clock::now();
  const de::EmojiClassifierConfig config{.stem_stride = absl::GetFlag(FLAGS_stem_stride),
                                         .blocks_per_stage = absl::GetFlag(FLAGS_blocks_per_stage)};
  de::EmojiClassifier model = de::TrainEmojiClassifier(config, *train, options);
  de::EmojiClassifierMetrics metrics;
  metrics.train_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  metrics.epochs = options.epochs;
  metrics.threads = torch::get_num_threads();
  if (options.max_steps > 0) {
    std::cout << absl::StrFormat("%d steps in %.1f s (throughput check; nothing saved)\n",
                                 options.max_steps, metrics.train_seconds);
    return 0;
  }
  metrics.held_out = de::MeasureEmojiAccuracy(model, *held_out);
  metrics.train = de::MeasureEmojiAccuracy(model, *train);
  const torch::Tensor real =
      train->data.Batch(torch::arange(train->data.size(), torch::kLong)).first;
  const de::RealFeatureSummary summary = de::SummarizeRealFeatures(model, real, options.seed);
  metrics.fid_floor = summary.fid_floor;
  auto index_tsv = dartserve::ReadFile(data_dir + "/index.tsv");
  if (!index_tsv.ok()) return Fail(index_tsv.status().message());
  if (absl::Status s = de::SaveEmojiClassifier(out, model, metrics, *index_tsv, summary.stats);
      !s.ok()) {
    return Fail(s.message());
  }
  std::cout << absl::StrFormat("trained in %.1f s\n", metrics.train_seconds)
            << Line("held-out pairs (real)", metrics.held_out) << "\n"
            << Line("training images", metrics.train) << "\n"
            << absl::StrFormat("FID floor (real train halves) %.3f\n-> %s\n", metrics.fid_floor,
                               out);
  return 0;
}

// dartserve-shapes-classifier: trains the learned shape classifier of the prompt-adherence
// evaluator (eval/attribute_classifier.h) and sanity-checks the evaluator on reference images.
//
//   dartserve-shapes-classifier                  # train into weights/shapes-classifier, then score
//   dartserve-shapes-classifier --notrain        # score with the shipped classifier only
//
// Scoring renders the two default prompt sets (FixedPromptSet(100, 1234, false / true)) exactly
// as asked and evaluates them: a perfect model's images, so every attribute should score 1.
// --report_json writes both reports as {"in_distribution": ..., "held_out": ...}.
#include <algorithm>
#include <chrono>
#include <iostream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/file_io.h"
#include "common/malloc_policy.h"
#include "eval/attribute_classifier.h"
#include "eval/prompt_eval.h"
#include "model/safetensors.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, out, dartserve::eval::kShapeClassifierDir,
          "Classifier folder: written by training, read for scoring.");
ABSL_FLAG(bool, train, true, "Train the classifier into --out (else load it from there).");
ABSL_FLAG(bool, score_reference, true, "Score the reference renderings of the prompt sets.");
ABSL_FLAG(uint64_t, seed, dartserve::eval::ShapeClassifierTraining{}.training.seed,
          "Training seed.");
ABSL_FLAG(int64_t, train_scenes, dartserve::eval::ShapeClassifierTraining{}.train_scenes,
          "Scenes to take training masks from.");
ABSL_FLAG(int, epochs, dartserve::eval::ShapeClassifierTraining{}.training.epochs,
          "Training epochs.");
ABSL_FLAG(std::string, report_json, "", "Write the reference reports here (optional).");
ABSL_FLAG(int, threads, 1, "Torch intra-op threads (training is deterministic per count).");

namespace dd = dartserve::data;
namespace de = dartserve::eval;

namespace {
int Fail(absl::string_view message) {
  std::cerr << "dartserve-shapes-classifier: " << message << "\n";
  return 1;
}
}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Train and check the shapes-world shape classifier: dartserve-shapes-classifier [--out DIR]");
  absl::ParseCommandLine(argc, argv);
  if (absl::Status s = dartserve::TuneMallocForTensors(); !s.ok()) {
    std::cerr << "dartserve-shapes-classifier: " << s.message() << "\n";
    return 1;
  }
  torch::set_num_threads(std::max(1, absl::GetFlag(FLAGS_threads)));
  const std::string dir = absl::GetFlag(FLAGS_out);

  de::Classifier model{nullptr};
  if (absl::GetFlag(FLAGS_train)) {
    de::ShapeClassifierTraining options;
    options.train_scenes = absl::GetFlag(FLAGS_train_scenes);
    options.training.epochs = absl::GetFlag(FLAGS_epochs);
    options.training.seed = absl::GetFlag(FLAGS_seed);
    const auto start = std::chrono::steady_clock::now();
    de::TrainedShapeClassifier trained = de::TrainShapeClassifier(options);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    model = trained.model;
    // Clean masks from yet another seed: what the classifier sees on a perfect model's images.
    const dd::InMemoryDataset clean =
        de::MakeShapeMaskDataset(2000, options.training.seed + 2000006, {.augment = false});
    const double clean_accuracy = de::ShapeAccuracy(model, clean);
    std::cout << absl::StrFormat(
        "trained in %.1f s: held-out accuracy %.4f on degraded masks, %.4f on clean masks\n",
        seconds, trained.test_accuracy, clean_accuracy);
    if (absl::Status s = de::SaveShapeClassifier(dir, model, trained.test_accuracy); !s.ok()) {
      return Fail(s.message());
    }
    std::cout << "wrote " << dir << "\n";
  } else {
    double accuracy = 0;
    absl::StatusOr<de::Classifier> loaded = de::LoadShapeClassifier(dir, &accuracy);
    if (!loaded.ok()) return Fail(loaded.status().message());
    model = *loaded;
    std::cout << absl::StrFormat("loaded %s: held-out accuracy %.4f\n", dir, accuracy);
  }

  if (!absl::GetFlag(FLAGS_score_reference)) return 0;
  const de::ShapeClassifier learned = de::LearnedShapeClassifier(model);
  nlohmann::json reports = nlohmann::json::object();
  for (const bool held_out : {false, true}) {
    const std::vector<dd::Prompt> prompts = dd::FixedPromptSet(100, 1234, held_out);
    const std::vector<dd::ShapeImage> images = de::ReferenceImages(prompts);
    const char* name = held_out ? "held_out" : "in_distribution";
    absl::StatusOr<de::PromptEvalReport> report = de::EvaluatePrompts(prompts, images, learned);
    absl::StatusOr<de::PromptEvalReport> geometric = de::EvaluatePrompts(prompts, images);
    if (!report.ok()) return Fail(report.status().message());
    if (!geometric.ok()) return Fail(geometric.status().message());
    std::cout << "reference " << name << ", learned:   " << de::SummaryLine(*report) << "\n"
              << "reference " << name << ", geometric: " << de::SummaryLine(*geometric) << "\n";
    reports[name] = nlohmann::json::parse(de::ReportToJson(*report));
  }
  if (const std::string path = absl::GetFlag(FLAGS_report_json); !path.empty()) {
    if (absl::Status s = dartserve::WriteFileAtomically(path, reports.dump(2) + "\n"); !s.ok()) {
      return Fail(s.message());
    }
    std::cout << "wrote " << path << "\n";
  }
  return 0;
}

// dartserve-eval: sample quality of a checkpoint.
//
//   dartserve-eval --train_classifier                      # once: trains weights/fmnist-classifier
//   dartserve-eval --checkpoint weights/fmnist-dart --per_class 1000 --out out/eval
//   dartserve-eval --checkpoint weights/shapes-dart --guidance 2 --out out/eval-text
//   dartserve-eval --autoencoder runs/scenes64-autoencoder/ema --out out/eval-ae
//   dartserve-eval --task emoji --checkpoint runs/emoji-dart/ema --guidance 2 --out out/eval-emoji
//
// Class models (Fashion-MNIST): conditional accuracy, FID on the classifier's penultimate
// features against the test split (with the real-train-vs-test FID as the floor) and generation
// throughput; writes report.json and grid.png (10 samples per class) to --out.
// Text models (the procedural shapes): prompt adherence on the fixed prompt sets, seen and
// held-out combinations apart (per attribute and all correct); writes report.json (both sets,
// every image's checks) and seen_grid.png / held_out_grid.png (the first 40 prompts, one row per
// 8) to --out.
// Text models of 64x64 images (the scenes world, latent models): the same on the four
// PromptSet64 sets (seen, held_out, relation, count), checked against what each prompt states
// (eval/scene64_eval.h); report.json and <set>_grid.png.
// Emoji text models (--task emoji): concept (top-1, top-5) and style accuracy of one image per
// prompt on the seen, held_out and concept_only sets (eval/emoji_eval.h), judged by the emoji
// classifier (--emoji_classifier, made by dartserve-emoji-classifier), and the seen set's FID
// against the real training images; report.json and <set>_grid.png.
// Autoencoders (--autoencoder): reconstruction PSNR on --scenes held-out 64x64 scenes, the latent
// previews' PSNR and the decoder's cost, and how often the prompt evaluator reads the same scene
// from a reconstruction as from its original; writes autoencoder_report.json to --out. With
// --task emoji instead: the emoji classifier's concept and style accuracy on the real images of
// --emoji_data and on their reconstructions (what a latent model's samples can reach at best).
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "common/file_io.h"
#include "common/malloc_policy.h"
#include "data/scenes64.h"
#include "eval/attribute_classifier.h"
#include "eval/autoencoder_eval.h"
#include "eval/emoji_classifier.h"
#include "eval/emoji_eval.h"
#include "eval/eval.h"
#include "eval/scene64_eval.h"
#include "eval/text64_eval.h"
#include "model/checkpoint.h"
#include "model/image.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, checkpoint, "weights/fmnist-dart-fm", "DART checkpoint folder to evaluate.");
ABSL_FLAG(std::string, classifier, "weights/fmnist-classifier", "Classifier folder.");
ABSL_FLAG(bool, train_classifier, false, "Train the classifier into --classifier and exit.");
ABSL_FLAG(int, classifier_epochs, 4, "Epochs for --train_classifier.");
ABSL_FLAG(int, per_class, 1000, "Samples per class.");
ABSL_FLAG(double, guidance, 1.0, "Classifier-free guidance scale.");
ABSL_FLAG(double, temperature, 1.0, "Sampling temperature.");
ABSL_FLAG(uint64_t, seed, 0, "Base seed.");
ABSL_FLAG(int, batch, 100, "Requests stepped together.");
ABSL_FLAG(int, floor_samples, 10000, "Real training images for the real-vs-real FID floor.");
ABSL_FLAG(std::string, out, "out/eval", "Output folder for report.json and grid.png.");
ABSL_FLAG(int, threads, 2, "Torch intra-op threads.");
ABSL_FLAG(int, flow_steps, 0, "Flow-head models: ODE steps per DART step (0: the config's).");
ABSL_FLAG(std::string, shapes_classifier, dartserve::eval::kShapeClassifierDir,
          "Text models: the shape classifier folder.");
ABSL_FLAG(int, prompts, 100, "Text models: prompts in each fixed set.");
ABSL_FLAG(int, per_prompt, 1, "Text models: samples per prompt.");
ABSL_FLAG(uint64_t, prompt_seed, 1234, "Text models: seed of the fixed prompt sets.");
ABSL_FLAG(std::string, autoencoder, "",
          "Evaluate this autoencoder folder instead of a DART checkpoint.");
ABSL_FLAG(int, scenes, 1000, "Autoencoders: held-out 64x64 scenes to reconstruct.");
ABSL_FLAG(std::string, emoji_data, "data/cache/emoji/images64",
          "Autoencoders with --task emoji: the prepared emoji images to reconstruct.");
ABSL_FLAG(std::string, task, "auto",
          "What to evaluate: auto (from the checkpoint's conditioning and size) or emoji.");
ABSL_FLAG(std::string, emoji_classifier, dartserve::eval::kEmojiClassifierDir,
          "--task emoji: the emoji classifier folder (dartserve-emoji-classifier).");

namespace dd = dartserve::data;
namespace de = dartserve::eval;
namespace dm = dartserve::model;

namespace {
int Fail(absl::string_view message) {
  std::cerr << "dartserve-eval: " << message << "\n";
  return 1;
}

// What report.json records of a text evaluation's settings.
nlohmann::json TextSettings(const de::TextEvalOptions& options) {
  return {{"checkpoint", absl::GetFlag(FLAGS_checkpoint)},
          {"prompts", absl::GetFlag(FLAGS_prompts)},
          {"prompt_seed", absl::GetFlag(FLAGS_prompt_seed)},
          {"per_prompt", options.per_prompt},
          {"guidance_scale", options.guidance_scale},
          {"temperature", options.temperature},
          {"flow_steps", options.flow_steps},
          {"threads", torch::get_num_threads()}};
}

de::TextEvalOptions TextOptions() {
  return {.per_prompt = absl::GetFlag(FLAGS_per_prompt),
          .guidance_scale = static_cast<float>(absl::GetFlag(FLAGS_guidance)),
          .temperature = static_cast<float>(absl::GetFlag(FLAGS_temperature)),
          .seed = absl::GetFlag(FLAGS_seed),
          .batch = absl::GetFlag(FLAGS_batch),
          .flow_steps = absl::GetFlag(FLAGS_flow_steps)};
}

// The first 40 prompts' images (per_prompt each), 8 per row, `scale` times enlarged, as
// <out>/<name>_grid.png.
absl::Status WriteGrid(const std::string& out, const std::string& name, const torch::Tensor& images,
                       int per_prompt, int scale) {
  const int64_t shown = std::min<int64_t>(40 * per_prompt, images.size(0));
  auto png = dm::ImageToPng(
      dm::UpscaleNearest(dm::MakeGrid(images.narrow(0, 0, shown).unbind(0), 8), scale));
  if (!png.ok()) return png.status();
  return dartserve::WriteFileAtomically(out + "/" + name + "_grid.png", *png);
}

// One prompt set's evaluation (a TextEvalReport or Text64EvalReport): its adherence and speed
// into `j`, its grid into `out`, its summary line on stdout.
template <typename Report>
absl::Status RecordSet(nlohmann::json& j, const std::string& out, const std::string& name,
                       const Report& report, int per_prompt, int scale) {
  j[name] = nlohmann::json::parse(de::ReportToJson(report.adherence));
  j[name + "_images_per_second"] = report.images_per_second;
  if (absl::Status s = WriteGrid(out, name, report.images, per_prompt, scale); !s.ok()) return s;
  std::cout << name << ": " << de::SummaryLine(report.adherence)
            << absl::StrFormat("  %.1f images/s\n", report.images_per_second);
  return absl::OkStatus();
}

int EvaluateText(dm::Dart model) {
  auto classifier = de::LoadShapeClassifier(absl::GetFlag(FLAGS_shapes_classifier));
  if (!classifier.ok()) return Fail(classifier.status().message());
  const de::ShapeClassifier shapes = de::LearnedShapeClassifier(*classifier);
  const de::TextEvalOptions options = TextOptions();
  const std::string out = absl::GetFlag(FLAGS_out);
  std::filesystem::create_directories(out);
  nlohmann::json j = TextSettings(options);
  for (const bool held_out : {false, true}) {
    const std::string name = held_out ? "held_out" : "seen";
    const std::vector<dd::Prompt> prompts = dd::FixedPromptSet(
        absl::GetFlag(FLAGS_prompts), absl::GetFlag(FLAGS_prompt_seed), held_out);
    auto report = de::EvaluateTextModel(model, prompts, shapes, options);
    if (!report.ok()) return Fail(report.status().message());
    if (absl::Status s = RecordSet(j, out, name, *report, options.per_prompt, /*scale=*/2);
        !s.ok()) {
      return Fail(s.message());
    }
  }
  std::ofstream(out + "/report.json") << j.dump(2) << "\n";
  std::cout << "-> " << out << "\n";
  return 0;
}

// A text model of the 64x64 scenes world: the four PromptSet64 sets.
int EvaluateText64(dm::Dart model) {
  const de::TextEvalOptions options = TextOptions();
  const std::string out = absl::GetFlag(FLAGS_out);
  std::filesystem::create_directories(out);
  nlohmann::json j = TextSettings(options);
  constexpr std::pair<dd::PromptSet64, const char*> kSets[] = {
      {dd::PromptSet64::kSeen, "seen"},
      {dd::PromptSet64::kHeldOut, "held_out"},
      {dd::PromptSet64::kRelation, "relation"},
      {dd::PromptSet64::kCount, "count"}};
  for (const auto& [set, name] : kSets) {
    const std::vector<dd::CaptionedScene64> prompts =
        dd::FixedPromptSet64(set, absl::GetFlag(FLAGS_prompts), absl::GetFlag(FLAGS_prompt_seed));
    auto report = de::EvaluateTextModel64(model, prompts, options);
    if (!report.ok()) return Fail(report.status().message());
    if (absl::Status s = RecordSet(j, out, name, *report, options.per_prompt, /*scale=*/1);
        !s.ok()) {
      return Fail(s.message());
    }
  }
  std::ofstream(out + "/report.json") << j.dump(2) << "\n";
  std::cout << "-> " << out << "\n";
  return 0;
}

// Writes `j` as --out/`file`; 0, or 1 after saying why not.
int WriteJsonReport(const std::string& file, const nlohmann::json& j) {
  const std::string out = absl::GetFlag(FLAGS_out);
  std::filesystem::create_directories(out);
  if (absl::Status s = dartserve::WriteFileAtomically(out + "/" + file, j.dump(2) + "\n");
      !s.ok()) {
    return Fail(s.message());
  }
  return 0;
}

// An emoji text model: the seen, held_out and concept_only sets judged by the emoji classifier.
int EvaluateEmoji() {
  auto model = dm::LoadCheckpoint(absl::GetFlag(FLAGS_checkpoint));
  if (!model.ok()) return Fail(model.status().message());
  auto classifier = de::LoadEmojiClassifier(absl::GetFlag(FLAGS_emoji_classifier));
  if (!classifier.ok()) return Fail(classifier.status().message());
  const de::TextEvalOptions options = TextOptions();
  auto report = de::EvaluateEmojiModel(*model, *classifier, absl::GetFlag(FLAGS_prompts),
                                       absl::GetFlag(FLAGS_prompt_seed), options);
  if (!report.ok()) return Fail(report.status().message());
  const std::string out = absl::GetFlag(FLAGS_out);
  std::filesystem::create_directories(out);
  nlohmann::json j = TextSettings(options);
  j["task"] = "emoji";
  j["emoji_classifier"] = absl::GetFlag(FLAGS_emoji_classifier);
  j.update(nlohmann::json::parse(de::EmojiReportToJson(*report)));
  for (const de::EmojiSetReport& set : report->sets) {
    if (absl::Status s = WriteGrid(out, set.name, set.images, options.per_prompt, /*scale=*/1);
        !s.ok()) {
      return Fail(s.message());
    }
    std::cout << set.name << ": " << de::EmojiSummaryLine(set, report->classifier.fid_floor)
              << absl::StrFormat("  %.1f images/s\n", set.images_per_second);
  }
  if (int failed = WriteJsonReport("report.json", j); failed != 0) return failed;
  std::cout << "-> " << out << "\n";
  return 0;
}

// --autoencoder with --task emoji: the emoji classifier's readings of real images (training
// split, then held-out pairs) and of their reconstructions.
int EvaluateEmojiAutoencoder(dm::Autoencoder& model) {
  auto classifier = de::LoadEmojiClassifier(absl::GetFlag(FLAGS_emoji_classifier));
  if (!classifier.ok()) return Fail(classifier.status().message());
  nlohmann::json j = {{"autoencoder", absl::GetFlag(FLAGS_autoencoder)},
                      {"emoji_data", absl::GetFlag(FLAGS_emoji_data)},
                      {"emoji_classifier", absl::GetFlag(FLAGS_emoji_classifier)}};
  for (const auto& [name, split] : {std::pair{"train", dd::EmojiSplit::kTrain},
                                    std::pair{"held_out", dd::EmojiSplit::kHeldOut}}) {
    auto data = dd::LoadEmojiDataset(absl::GetFlag(FLAGS_emoji_data), split);
    if (!data.ok()) return Fail(data.status().message());
    auto r = de::ScoreEmojiReconstructions(model, *classifier, *data, absl::GetFlag(FLAGS_batch));
    if (!r.ok()) return Fail(r.status().message());
    for (const auto& [kind, a] :
         {std::pair{"originals", r->originals}, std::pair{"reconstructions", r->reconstructions}}) {
      j[name][kind] = {{"images", a.images},
                       {"concept_top1", a.concept_top1},
                       {"concept_top5", a.concept_top5},
                       {"style", a.style}};
      std::cout << absl::StrFormat("%s %s: concept top-1 %.3f  top-5 %.3f  style %.3f  (%d)\n",
                                   name, kind, a.concept_top1, a.concept_top5, a.style, a.images);
    }
  }
  return WriteJsonReport("autoencoder_report.json", j);
}

int EvaluateAutoencoderFlag() {
  absl::StatusOr<dm::Autoencoder> model = dm::LoadAutoencoder(absl::GetFlag(FLAGS_autoencoder));
  if (!model.ok()) return Fail(model.status().message());
  if (absl::GetFlag(FLAGS_task) == "emoji") return EvaluateEmojiAutoencoder(*model);
  const dd::Scenes64Dataset scenes =
      dd::MakeScenes64Dataset(absl::GetFlag(FLAGS_scenes), de::kHeldOutScenesSeed);
  std::vector<dd::CaptionSpec> specs;
  for (const dd::CaptionedScene64& item : scenes.items) specs.push_back(item.spec);
  absl::StatusOr<de::AutoencoderReport> r =
      de::EvaluateAutoencoder(*model, scenes.data.images, absl::GetFlag(FLAGS_batch), specs);
  if (!r.ok()) return Fail(r.status().message());
  const nlohmann::json j = {{"autoencoder", absl::GetFlag(FLAGS_autoencoder)},
                            {"scenes", r->images},
                            {"scene_seed", de::kHeldOutScenesSeed},
                            {"mean_psnr_db", r->mean_psnr_db},
                            {"min_psnr_db", r->min_psnr_db},
                            {"pooled_psnr_db", r->pooled_psnr_db},
                            {"mean_abs_error_levels", r->mean_abs_error},
                            {"preview_psnr_db", r->preview_psnr_db},
                            {"decode_ms_per_image", r->decode_ms_per_image},
                            {"same_reading", r->same_reading},
                            {"differing_scenes", r->differing_scenes},
                            {"originals_all_correct", r->originals_all_correct},
                            {"reconstructions_all_correct", r->reconstructions_all_correct},
                            {"threads", torch::get_num_threads()}};
  if (int failed = WriteJsonReport("autoencoder_report.json", j); failed != 0) return failed;
  std::cout << absl::StrFormat(
      "PSNR %.2f dB (mean over %d scenes; worst %.2f, pooled %.2f); latent preview %.2f dB; "
      "decode %.2f ms/image\n",
      r->mean_psnr_db, r->images, r->min_psnr_db, r->pooled_psnr_db, r->preview_psnr_db,
      r->decode_ms_per_image);
  std::cout << absl::StrFormat(
      "readings: reconstruction reads as its original %.4f (%d differ); all-correct against the "
      "caption: originals %.4f, reconstructions %.4f\n",
      r->same_reading, r->differing_scenes.size(), r->originals_all_correct,
      r->reconstructions_all_correct);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  if (absl::Status s = dartserve::TuneMallocForTensors(); !s.ok()) {
    std::cerr << "dartserve-eval: " << s.message() << "\n";
    return 1;
  }
  torch::set_num_threads(std::max(1, absl::GetFlag(FLAGS_threads)));
  if (!absl::GetFlag(FLAGS_autoencoder).empty()) return EvaluateAutoencoderFlag();
  const std::string task = absl::GetFlag(FLAGS_task);
  if (task == "emoji") return EvaluateEmoji();
  if (task != "auto") return Fail("--task: expected auto or emoji");
  if (!absl::GetFlag(FLAGS_train_classifier)) {
    auto model = dm::LoadCheckpoint(absl::GetFlag(FLAGS_checkpoint));
    if (!model.ok()) return Fail(model.status().message());
    const dm::ModelConfig& config = (*model)->config();
    if (config.conditioning == dm::Conditioning::kText) {
      return config.pixel_size() == dd::kScene64Size ? EvaluateText64(*model)
                                                     : EvaluateText(*model);
    }
  }
  auto train = dd::LoadFashionMnist("train");
  if (!train.ok()) return Fail(train.status().message());
  auto test = dd::LoadFashionMnist("test");
  if (!test.ok()) return Fail(test.status().message());

  if (absl::GetFlag(FLAGS_train_classifier)) {
    double acc = 0;
    de::Classifier clf = de::TrainClassifier(
        *train, *test, {.epochs = absl::GetFlag(FLAGS_classifier_epochs)}, &acc);
    if (absl::Status s = de::SaveClassifier(absl::GetFlag(FLAGS_classifier), clf, acc); !s.ok()) {
      return Fail(s.message());
    }
    std::cout << absl::StrFormat("classifier test accuracy %.4f -> %s\n", acc,
                                 absl::GetFlag(FLAGS_classifier));
    return 0;
  }

  double clf_acc = 0;
  auto clf = de::LoadClassifier(absl::GetFlag(FLAGS_classifier), &clf_acc);
  if (!clf.ok()) return Fail(clf.status().message());
  auto model = dm::LoadCheckpoint(absl::GetFlag(FLAGS_checkpoint));
  if (!model.ok()) return Fail(model.status().message());

  const auto [test_x, test_y] = test->Batch(torch::arange(test->size(), torch::kLong));
  const torch::Tensor test_features = de::ExtractFeatures(*clf, test_x);
  const int64_t floor_n = std::min<int64_t>(absl::GetFlag(FLAGS_floor_samples), train->size());
  const torch::Tensor train_x = train->Batch(torch::arange(floor_n, torch::kLong)).first;
  const double fid_floor = de::FrechetDistance(de::ExtractFeatures(*clf, train_x), test_features);

  const de::EvalOptions options{.per_class = absl::GetFlag(FLAGS_per_class),
                                .guidance_scale = static_cast<float>(absl::GetFlag(FLAGS_guidance)),
                                .temperature = static_cast<float>(absl::GetFlag(FLAGS_temperature)),
                                .seed = absl::GetFlag(FLAGS_seed),
                                .batch = absl::GetFlag(FLAGS_batch),
                                .flow_steps = absl::GetFlag(FLAGS_flow_steps)};
  auto report = de::EvaluateClassModel(*model, *clf, test_features, options);
  if (!report.ok()) return Fail(report.status().message());

  const std::string out = absl::GetFlag(FLAGS_out);
  std::filesystem::create_directories(out);
  std::vector<torch::Tensor> grid;
  const int per_class = options.per_class;
  for (int c = 0; c < (*model)->config().num_classes; ++c) {
    for (int i = 0; i < std::min(10, per_class); ++i)
      grid.push_back(report->images[c * per_class + i]);
  }
  auto png = dm::ImageToPng(dm::UpscaleNearest(dm::MakeGrid(grid, std::min(10, per_class)), 2));
  if (!png.ok()) return Fail(png.status().message());
  if (absl::Status s = dartserve::WriteFileAtomically(out + "/grid.png", *png); !s.ok())
    return Fail(s.message());

  const nlohmann::json j = {{"checkpoint", absl::GetFlag(FLAGS_checkpoint)},
                            {"classifier_test_accuracy", clf_acc},
                            {"per_class", per_class},
                            {"num_images", report->num_images},
                            {"guidance_scale", options.guidance_scale},
                            {"temperature", options.temperature},
                            {"flow_steps", options.flow_steps},
                            {"conditional_accuracy", report->conditional_accuracy},
                            {"per_class_accuracy", report->per_class_accuracy},
                            {"fid", report->fid},
                            {"fid_floor_train_vs_test", fid_floor},
                            {"floor_samples", floor_n},
                            {"generation_seconds", report->generation_seconds},
                            {"images_per_second", report->images_per_second},
                            {"threads", torch::get_num_threads()}};
  std::ofstream(out + "/report.json") << j.dump(2) << "\n";
  std::cout << absl::StrFormat(
      "%d images  conditional accuracy %.4f  FID %.3f (floor %.3f)  %.1f images/s  -> %s\n",
      report->num_images, report->conditional_accuracy, report->fid, fid_floor,
      report->images_per_second, out);
  return 0;
}

#include "eval/emoji_eval.h"

#include <algorithm>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"

namespace dartserve::eval {

using ::dartserve::data::EmojiEntry;
using ::dartserve::data::EmojiIndex;

namespace {

constexpr EmojiPromptSet kSets[] = {EmojiPromptSet::kSeen, EmojiPromptSet::kHeldOut,
                                    EmojiPromptSet::kConceptOnly};

// The first `n` of `items` after a Fisher-Yates shuffle on mt19937_64 with plain modulo (the
// same order from every standard library, unlike std::shuffle).
std::vector<int> FirstShuffled(std::vector<int> items, int n, uint64_t seed) {
  data::StableShuffle(items, seed);
  items.resize(std::min<size_t>(items.size(), static_cast<size_t>(std::max(0, n))));
  return items;
}

nlohmann::json AccuracyJson(const EmojiAccuracy& a) {
  return {{"images", a.images},
          {"concept_top1", a.concept_top1},
          {"concept_top5", a.concept_top5},
          {"style_accuracy", a.style}};
}

}  // namespace

const char* EmojiPromptSetName(EmojiPromptSet set) {
  switch (set) {
    case EmojiPromptSet::kSeen:
      return "seen";
    case EmojiPromptSet::kHeldOut:
      return "held_out";
    case EmojiPromptSet::kConceptOnly:
      return "concept_only";
  }
  return "?";
}

std::vector<EmojiPrompt> MakeEmojiPromptSet(const EmojiIndex& index, EmojiPromptSet set, int n,
                                            uint64_t seed) {
  const std::vector<EmojiEntry>& entries = index.entries;
  std::vector<EmojiPrompt> out;
  // Each set shuffles with its own stream, so no set's order is another's.
  const uint64_t set_seed = seed * 0x9e3779b97f4a7c15ULL + static_cast<uint64_t>(set) + 1;
  if (set == EmojiPromptSet::kConceptOnly) {
    std::vector<int> first_entry(index.concepts.size(), -1);
    for (int i = 0; i < static_cast<int>(entries.size()); ++i) {
      if (first_entry[entries[i].concept_id] < 0) first_entry[entries[i].concept_id] = i;
    }
    std::vector<int> concepts;
    for (int c = 0; c < static_cast<int>(first_entry.size()); ++c) {
      if (first_entry[c] >= 0) concepts.push_back(c);
    }
    for (const int c : FirstShuffled(concepts, n, set_seed)) {
      const EmojiEntry& e = entries[first_entry[c]];
      out.push_back({.text = data::EmojiConceptPrompt(e), .concept_id = c, .style_id = -1});
    }
    return out;
  }
  const bool held_out = set == EmojiPromptSet::kHeldOut;
  std::vector<int> candidates;
  for (int i = 0; i < static_cast<int>(entries.size()); ++i) {
    if (entries[i].held_out == held_out) candidates.push_back(i);
  }
  for (const int i : FirstShuffled(candidates, n, set_seed)) {
    const EmojiEntry& e = entries[i];
    out.push_back(
        {.text = data::EmojiStylePrompt(e), .concept_id = e.concept_id, .style_id = e.style_id});
  }
  return out;
}

absl::StatusOr<EmojiSetReport> ScoreEmojiSet(EmojiClassifierFolder& classifier,
                                             const std::vector<EmojiPrompt>& prompts,
                                             const torch::Tensor& images, int per_prompt,
                                             bool fid) {
  const int size = classifier.model->config().image_size;
  const int64_t n = static_cast<int64_t>(prompts.size()) * per_prompt;
  if (per_prompt < 1 || n == 0 || images.dim() != 4 || images.size(0) != n || images.size(1) != 3 ||
      images.size(2) != size || images.size(3) != size) {
    return absl::InvalidArgumentError(absl::StrCat("emoji scoring needs ", n, " RGB images of ",
                                                   size, "x", size, " (", prompts.size(),
                                                   " prompts x ", per_prompt, ")"));
  }
  std::vector<int64_t> concepts, styles;
  for (const EmojiPrompt& p : prompts) {
    for (int j = 0; j < per_prompt; ++j) {
      concepts.push_back(p.concept_id);
      styles.push_back(p.style_id);
    }
  }
  const torch::Tensor x = images.to(torch::kCPU, torch::kFloat);
  const EmojiPredictions predicted = PredictEmoji(classifier.model, x);
  const torch::Tensor concept_labels = torch::tensor(concepts, torch::kLong);
  EmojiSetReport report;
  report.prompts = prompts;
  report.accuracy = ScoreEmoji(predicted, concept_labels, torch::tensor(styles, torch::kLong));
  const torch::Tensor in_top5 = (predicted.concept_top5 == concept_labels.view({-1, 1})).any(1);
  for (int64_t i = 0; i < n; ++i) {
    report.predicted_concept.push_back(predicted.concept_top5[i][0].item<int64_t>());
    report.predicted_style.push_back(predicted.style[i].item<int64_t>());
    report.concept_in_top5.push_back(in_top5[i].item<bool>());
  }
  // FID needs at least two images for a covariance.
  if (fid && n > 1) {
    report.fid =
        FrechetDistance(ComputeFeatureStats(EmojiFeatures(classifier.model, x)), classifier.real);
  }
  return report;
}

absl::StatusOr<EmojiEvalReport> EvaluateEmojiModel(model::Dart model,
                                                   EmojiClassifierFolder& classifier,
                                                   int prompts_per_set, uint64_t prompt_seed,
                                                   const TextEvalOptions& options) {
  if (absl::Status s = CheckTextModel(
          model->config(), classifier.model->config().image_size,
          absl::StrCat(classifier.model->config().image_size, "x",
                       classifier.model->config().image_size, " RGB images (emoji)"));
      !s.ok()) {
    return s;
  }
  EmojiEvalReport report;
  report.classifier = classifier.metrics;
  for (const EmojiPromptSet set : kSets) {
    const std::vector<EmojiPrompt> prompts =
        MakeEmojiPromptSet(classifier.index, set, prompts_per_set, prompt_seed);
    std::vector<std::string> texts;
    for (const EmojiPrompt& p : prompts) texts.push_back(p.text);
    absl::StatusOr<TimedImages> generated = SamplePrompts(model, texts, options);
    if (!generated.ok()) return generated.status();
    absl::StatusOr<EmojiSetReport> scored =
        ScoreEmojiSet(classifier, prompts, generated->images, options.per_prompt,
                      /*fid=*/set == EmojiPromptSet::kSeen);
    if (!scored.ok()) return scored.status();
    scored->name = EmojiPromptSetName(set);
    scored->images = generated->images.to(torch::kCPU);
    scored->generation_seconds = generated->seconds;
    scored->images_per_second = scored->images.size(0) / std::max(1e-9, generated->seconds);
    report.sets.push_back(*std::move(scored));
  }
  return report;
}

std::string EmojiReportToJson(const EmojiEvalReport& report) {
  const EmojiClassifierMetrics& c = report.classifier;
  nlohmann::json j = {{"classifier",
                       {{"held_out_real", AccuracyJson(c.held_out)},
                        {"train_real", AccuracyJson(c.train)},
                        {"fid_floor", c.fid_floor}}}};
  for (const EmojiSetReport& set : report.sets) {
    nlohmann::json images = nlohmann::json::array();
    const size_t per_prompt =
        set.prompts.empty() ? 1 : set.predicted_concept.size() / set.prompts.size();
    for (size_t i = 0; i < set.predicted_concept.size(); ++i) {
      const EmojiPrompt& p = set.prompts[i / per_prompt];
      images.push_back({{"prompt", p.text},
                        {"concept", p.concept_id},
                        {"style", p.style_id},
                        {"predicted_concept", set.predicted_concept[i]},
                        {"predicted_style", set.predicted_style[i]},
                        {"concept_in_top5", static_cast<bool>(set.concept_in_top5[i])}});
    }
    j[set.name] = AccuracyJson(set.accuracy);
    j[set.name]["prompts"] = set.prompts.size();
    if (set.fid >= 0) {
      j[set.name]["fid"] = set.fid;
      j[set.name]["fid_floor"] = c.fid_floor;
    }
    j[set.name]["generation_seconds"] = set.generation_seconds;
    j[set.name]["images_per_second"] = set.images_per_second;
    j[set.name]["images"] = std::move(images);
  }
  return j.dump(2);
}

absl::StatusOr<EmojiReconstructionReport> ScoreEmojiReconstructions(
    model::Autoencoder& autoencoder, EmojiClassifierFolder& classifier,
    const data::EmojiDataset& data, int batch) {
  const int64_t n = data.data.size();
  if (n == 0 || batch < 1) {
    return absl::InvalidArgumentError("reconstructions: an empty dataset or a batch < 1");
  }
  torch::NoGradGuard no_grad;
  const auto [images, concepts] = data.data.Batch(torch::arange(n, torch::kLong));
  std::vector<torch::Tensor> decoded;
  try {
    for (int64_t i = 0; i < n; i += batch) {
      const torch::Tensor x = images.slice(0, i, std::min(n, i + batch)).to(autoencoder->options());
      const torch::Tensor y = autoencoder->Decode(autoencoder->Encode(x).mean).clamp(-1, 1);
      // 8-bit, as a served image is: the classifier sees what a client would.
      decoded.push_back(((y + 1) * 127.5).round().div(127.5).sub(1).to(torch::kCPU, torch::kFloat));
    }
    const torch::Tensor styles = EmojiStyleLabels(data);
    return EmojiReconstructionReport{
        .originals = ScoreEmoji(PredictEmoji(classifier.model, images), concepts, styles),
        .reconstructions =
            ScoreEmoji(PredictEmoji(classifier.model, torch::cat(decoded)), concepts, styles)};
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("reconstructions: ", e.what_without_backtrace()));
  }
}

std::string EmojiSummaryLine(const EmojiSetReport& set, double fid_floor) {
  std::string line = absl::StrFormat("concept top-1 %.3f  top-5 %.3f", set.accuracy.concept_top1,
                                     set.accuracy.concept_top5);
  if (set.accuracy.style >= 0) absl::StrAppendFormat(&line, "  style %.3f", set.accuracy.style);
  if (set.fid >= 0) absl::StrAppendFormat(&line, "  FID %.3f (floor %.3f)", set.fid, fid_floor);
  absl::StrAppendFormat(&line, "  (%d images)", set.accuracy.images);
  return line;
}

}  // namespace dartserve::eval

// Prompt adherence and FID of an emoji text-to-image model (data/emoji.h), judged by the emoji
// classifier (eval/emoji_classifier.h) instead of CLIP: generate one image per prompt and ask the
// classifier whether it shows the prompt's concept (top-1, top-5) and style.
//
// Three fixed prompt sets, built from the classifier folder's index.tsv (so no image data is
// needed) with a fixed seed:
//   seen          distinct training-split (concept, style) pairs, "<label>, <style> style"
//   held_out      distinct held-out pairs (never trained on), the same wording
//   concept_only  distinct concepts, "<label>"; the style is the model's choice and not scored
// FID: the seen set's generated images' classifier features against the real training images'
// Gaussian stored in the classifier folder, next to the folder's real-vs-real floor.
//
// Thread-compatibility: free functions; the classifier folder is only read (eval mode, no
// autograd), but generation drives the model, which must not be used elsewhere meanwhile.
#ifndef DARTSERVE_EVAL_EMOJI_EVAL_H_
#define DARTSERVE_EVAL_EMOJI_EVAL_H_

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/emoji.h"
#include "eval/emoji_classifier.h"
#include "eval/eval.h"
#include "model/autoencoder.h"
#include "model/dart.h"

namespace dartserve::eval {

enum class EmojiPromptSet { kSeen, kHeldOut, kConceptOnly };
// "seen", "held_out", "concept_only".
const char* EmojiPromptSetName(EmojiPromptSet set);

struct EmojiPrompt {
  std::string text;
  int concept_id = 0;
  int style_id = -1;  // -1: the prompt names no style (concept_only)
};

// Up to `n` prompts of `set` (fewer when the index has fewer candidates), a fixed function of
// `index`, `n` and `seed`: seen and held_out take distinct entries of their split; concept_only
// takes distinct concepts, each named by its first entry's label.
std::vector<EmojiPrompt> MakeEmojiPromptSet(const data::EmojiIndex& index, EmojiPromptSet set,
                                            int n, uint64_t seed);

struct EmojiSetReport {
  std::string name;
  std::vector<EmojiPrompt> prompts;
  EmojiAccuracy accuracy;                  // style -1 for concept_only
  std::vector<int64_t> predicted_concept;  // per image, prompt-major
  std::vector<int64_t> predicted_style;
  std::vector<bool> concept_in_top5;
  double fid = -1;       // seen set only, else -1
  torch::Tensor images;  // [N, 3, 64, 64] in [-1, 1], prompt-major (per_prompt each)
  double generation_seconds = 0;
  double images_per_second = 0;
};

// Scores already generated `images` ([prompts.size() * per_prompt, 3, S, S] in [-1, 1],
// prompt-major) against `prompts`; with `fid`, also FID against classifier.real. Fills every
// field of the report but name, images and timing. INVALID_ARGUMENT when the counts or the image
// geometry do not fit.
absl::StatusOr<EmojiSetReport> ScoreEmojiSet(EmojiClassifierFolder& classifier,
                                             const std::vector<EmojiPrompt>& prompts,
                                             const torch::Tensor& images, int per_prompt, bool fid);

struct EmojiEvalReport {
  std::vector<EmojiSetReport> sets;   // seen, held_out, concept_only
  EmojiClassifierMetrics classifier;  // the folder's own numbers (real-image ceiling, FID floor)
};

// Generates options.per_prompt images of every prompt of the three sets (prompts_per_set each,
// built with prompt_seed; sample j of prompt i with seed options.seed + i * per_prompt + j) and
// scores them. INVALID_ARGUMENT for a model that is not a text model of 64x64 RGB images (or
// whatever size the classifier reads).
absl::StatusOr<EmojiEvalReport> EvaluateEmojiModel(model::Dart model,
                                                   EmojiClassifierFolder& classifier,
                                                   int prompts_per_set, uint64_t prompt_seed,
                                                   const TextEvalOptions& options);

// How much of what the classifier reads survives the autoencoder a latent model draws through:
// its readings of `data`'s images and of their reconstructions (the posterior mean decoded,
// clamped and rounded to 8 bits, as served), in batches of `batch`. A model on these latents can
// draw no finer than the reconstructions, so their accuracy bounds what generation can score.
// INVALID_ARGUMENT for an empty dataset, a batch < 1, or images the autoencoder or the
// classifier cannot take.
struct EmojiReconstructionReport {
  EmojiAccuracy originals;
  EmojiAccuracy reconstructions;
};
absl::StatusOr<EmojiReconstructionReport> ScoreEmojiReconstructions(
    model::Autoencoder& autoencoder, EmojiClassifierFolder& classifier,
    const data::EmojiDataset& data, int batch);

// The report as JSON (every set's scores and per-image results, the classifier's numbers).
std::string EmojiReportToJson(const EmojiEvalReport& report);
// One line per set: "concept top-1 0.512  top-5 0.780  style 0.905  FID 12.3 (floor 1.2)".
std::string EmojiSummaryLine(const EmojiSetReport& set, double fid_floor);

}  // namespace dartserve::eval

#endif  // DARTSERVE_EVAL_EMOJI_EVAL_H_

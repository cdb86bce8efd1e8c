// The emoji evaluator's judge (eval/emoji_eval.h): a small CNN that reads a 64x64 RGB emoji's
// concept (one of ~1.7k) and style (one of data/emoji_prep.h's seven), and whose pooled features
// are the space the evaluator's FID is measured in. It is trained on the real images of the
// training split only, so the held-out (concept, style) pairs are as new to it as they are to the
// generator, and its accuracy on them is the ceiling a generated held-out image can be judged
// against.
//
// Network: conv3x3 stem, then one stage per entry of stage_channels, each a stride-2 conv3x3
// followed by blocks_per_stage residual blocks (conv3x3-GN-ReLU-conv3x3-GN, plus the input),
// every conv followed by GroupNorm and ReLU; global average pool -> features -> two linear heads
// (concept logits, style logits). GroupNorm rather than BatchNorm: no running statistics, so the
// network is the same function in training and evaluation, and its folder holds parameters only
// (model/checkpoint.h's LoadWeights reads parameters, not buffers).
//
// Folder (SaveEmojiClassifier / LoadEmojiClassifier):
//   classifier.json           the config, the measured accuracies and the real-vs-real FID floor
//   classifier.safetensors    the parameters (f32)
//   index.tsv                 a copy of the training data's index, so evaluation (the prompt sets)
//                             needs no image data
//   real_features.safetensors "mean" [F] and "covariance" [F, F] (f32) of the features of every
//                             real training-split image: FID's reference Gaussian
//
// Thread-compatibility: an EmojiClassifier is a torch module; concurrent forward passes in eval
// mode without autograd only read it. Training is deterministic for a given seed and torch thread
// count.
#ifndef DARTSERVE_EVAL_EMOJI_CLASSIFIER_H_
#define DARTSERVE_EVAL_EMOJI_CLASSIFIER_H_

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "data/emoji.h"
#include "eval/classifier.h"

namespace dartserve::eval {

// The shipped classifier folder, relative to the repository root.
inline constexpr char kEmojiClassifierDir[] = "weights/emoji-classifier";

struct EmojiClassifierConfig {
  int image_size = 64;
  int stem_channels = 32;
  int stem_stride = 2;  // 1 doubles the resolution every later layer runs at (4x the cost)
  std::vector<int> stage_channels = {64, 128, 256};
  int blocks_per_stage = 1;
  int groups = 8;  // GroupNorm groups; must divide every channel count
  int num_concepts = 0;
  int num_styles = 7;

  int feature_dim() const { return stage_channels.back(); }
};

class EmojiClassifierImpl : public torch::nn::Module {
 public:
  // INVALID_ARGUMENT-worthy configs (groups not dividing a width, no stages, no concepts) throw
  // c10::Error; callers that take a config from a file check it first (LoadEmojiClassifier does).
  explicit EmojiClassifierImpl(const EmojiClassifierConfig& config);

  // Pooled features [B, feature_dim] of images [B, 3, S, S] in [-1, 1].
  torch::Tensor Features(const torch::Tensor& x);
  // {concept logits [B, num_concepts], style logits [B, num_styles]}.
  std::pair<torch::Tensor, torch::Tensor> forward(const torch::Tensor& x);

  const EmojiClassifierConfig& config() const { return config_; }

 private:
  EmojiClassifierConfig config_;
  torch::nn::Sequential trunk_{nullptr};
  torch::nn::Linear concept_head_{nullptr}, style_head_{nullptr};
};
TORCH_MODULE(EmojiClassifier);

struct EmojiAugmentation {
  bool enabled = true;
  double max_shift = 4;  // pixels, uniform in [-max_shift, max_shift] per axis
  double min_scale = 0.85, max_scale = 1.1;
  double brightness = 0.06;  // added, uniform in [-brightness, brightness]
  double contrast = 0.15;    // distance from white scaled by 1 +- contrast (white stays white)
};

// A random geometric and photometric variant of each image of `x` ([B, 3, S, S] in [-1, 1]):
// shift and scale about the centre with white filling what comes in from outside, then the
// colour jitter. No flips (some emoji are not mirror-symmetric: arrows, text). Draws from `gen`.
torch::Tensor AugmentEmoji(const torch::Tensor& x, const EmojiAugmentation& options,
                           torch::Generator& gen);

struct EmojiClassifierTraining {
  int epochs = 28;  // ~16 min on one thread of a 2-core machine (~200-300 images/s)
  int batch_size = 64;
  double lr = 2e-3;
  double min_lr = 2e-5;
  double weight_decay = 0.05;  // AdamW, on conv and linear weights only
  int warmup_steps = 200;
  double label_smoothing = 0.1;
  EmojiAugmentation augmentation;
  int64_t max_steps = 0;  // > 0: stop after this many steps (throughput checks, tests)
  uint64_t seed = 0;
  // Called after each epoch (and after max_steps) with the epoch, its mean loss and images/s.
  std::function<void(int epoch, double loss, double images_per_second)> on_epoch;
};

// Trains a new classifier of `config` (num_concepts is taken from the data when 0) on every row
// of `train`, cross-entropy on both heads, AdamW with linear warm-up and cosine decay. Returns it
// in eval mode.
EmojiClassifier TrainEmojiClassifier(EmojiClassifierConfig config, const data::EmojiDataset& train,
                                     const EmojiClassifierTraining& options);

// Style id of every row of `data` ([N] int64).
torch::Tensor EmojiStyleLabels(const data::EmojiDataset& data);

struct EmojiPredictions {
  torch::Tensor concept_top5;  // [N, min(5, num_concepts)] int64, best first
  torch::Tensor style;         // [N] int64
};
// Batched, without autograd; images [N, 3, S, S] in [-1, 1].
EmojiPredictions PredictEmoji(EmojiClassifier& model, const torch::Tensor& images);
// Pooled features, batched: [N, F] double.
torch::Tensor EmojiFeatures(EmojiClassifier& model, const torch::Tensor& images);

struct EmojiAccuracy {
  int64_t images = 0;
  double concept_top1 = 0;
  double concept_top5 = 0;
  double style = -1;  // -1 when no image had a style to score
};
// Scores `predictions` against `concepts` and `styles` ([N] int64 each); a style label < 0 leaves
// that image out of the style accuracy.
EmojiAccuracy ScoreEmoji(const EmojiPredictions& predictions, const torch::Tensor& concepts,
                         const torch::Tensor& styles);
// Un-augmented accuracy on every row of `data`.
EmojiAccuracy MeasureEmojiAccuracy(EmojiClassifier& model, const data::EmojiDataset& data);

// What classifier.json records about a trained classifier.
struct EmojiClassifierMetrics {
  EmojiAccuracy held_out;  // real held-out pairs (an unseen style of a seen concept)
  EmojiAccuracy train;     // the training images, un-augmented
  double fid_floor = -1;   // FID between two disjoint random halves of the real training features
  int epochs = 0;
  double train_seconds = 0;
  int threads = 1;
};

// The real training images' reference Gaussian and the FID floor: FrechetDistance between the
// features of two disjoint halves of `images` (a random permutation from `seed`).
struct RealFeatureSummary {
  FeatureStats stats;
  double fid_floor = 0;
};
RealFeatureSummary SummarizeRealFeatures(EmojiClassifier& model, const torch::Tensor& images,
                                         uint64_t seed);

// A loaded classifier folder.
struct EmojiClassifierFolder {
  EmojiClassifier model{nullptr};  // eval mode, CPU
  EmojiClassifierMetrics metrics;
  data::EmojiIndex index;  // from the folder's index.tsv
  FeatureStats real;       // from real_features.safetensors
};

// Writes the folder (see the file comment); `index_tsv` is the text of the data's index.tsv.
absl::Status SaveEmojiClassifier(const std::string& dir, EmojiClassifier& model,
                                 const EmojiClassifierMetrics& metrics,
                                 const std::string& index_tsv, const FeatureStats& real);
// Reads it back. NOT_FOUND for a missing file (naming it); INVALID_ARGUMENT naming the file for a
// malformed one, weights that do not fit the config, or an index whose concept count differs
// from the classifier's.
absl::StatusOr<EmojiClassifierFolder> LoadEmojiClassifier(const std::string& dir);

}  // namespace dartserve::eval

#endif  // DARTSERVE_EVAL_EMOJI_CLASSIFIER_H_

// ModelConfig: everything that defines a DART model's shape and its training/sampling maths.
//
// A config is plain data; it is read from and written to the checkpoint's `config.json`.
// `Validate()` is the single place that decides whether a config is usable, and its error names
// the offending field, so a bad checkpoint fails with one clear line.
#ifndef DARTSERVE_MODEL_CONFIG_H_
#define DARTSERVE_MODEL_CONFIG_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/model_info.h"

namespace dartserve::model {

enum class OutputHead { kMean, kFlow };
enum class Variant { kDart, kDartAr };
enum class Schedule { kCosine };
// Loss weight per block (docs/model.md, "Schedule and loss"). kClampedSnr is the default.
enum class LossWeight { kClampedSnr, kUniform, kPaperSum };
// ODE solver of the flow head (docs/model.md, "Flow head").
enum class FlowSolver { kEuler, kHeun };

// The value of `autoencoder` in a checkpoint's config.json: the checkpoint's own subfolder.
inline constexpr char kCheckpointAutoencoder[] = "autoencoder";
// Channels of the images an autoencoder makes: autoencoders are RGB (model/autoencoder.h).
inline constexpr int kAutoencoderImageChannels = 3;

struct ModelConfig {
  // Image geometry. Pixels are in [-1, 1]; tokens are patch_size^2 * channels values each. For a
  // latent model (below) these describe the latent grid, so every token and KV size stays as it
  // is: image_size is the latent size and channels the latent channels.
  int image_size = 28;
  int channels = 1;
  int patch_size = 4;

  // Latent DART (docs/model.md, "Latent DART"): when set, the model denoises the normalized
  // latents of this autoencoder (model/autoencoder.h) instead of pixels. Where the autoencoder's
  // folder is: in a training config, a path (relative to the working directory), such as
  // runs/scenes64-autoencoder/ema; in a checkpoint's config.json always kCheckpointAutoencoder,
  // the checkpoint's own subfolder, so a checkpoint folder is servable on its own. Empty: a pixel
  // model. Both fields are written to config.json only when set, so pixel checkpoints stay as
  // they were.
  std::string autoencoder;
  // The autoencoder's downsample factor f: one latent cell covers f x f pixels. Stated here, and
  // checked against the autoencoder whenever one is loaded, so that the config alone says what
  // image size the model makes. 0 for pixel models.
  int autoencoder_downsample = 0;

  // Denoising steps T: the sequence holds T blocks [x_T | ... | x_1].
  int num_steps = 16;
  Schedule schedule = Schedule::kCosine;
  // SNR shift s: SNR'(t) = SNR(t) / s^2 (1 = plain cosine). Must be > 0.
  double snr_shift = 1.0;
  LossWeight loss_weight = LossWeight::kClampedSnr;
  double loss_weight_min = 0.1;  // Floors clamped-SNR weights so block x_T gets gradient.
  double loss_weight_max = 5.0;

  // Transformer.
  int width = 256;
  int depth = 6;
  int heads = 4;
  double mlp_ratio = 8.0 / 3.0;  // SwiGLU hidden = round_up(mlp_ratio * width, 32).
  double rope_theta = 100.0;     // Base of the 2-D rotary frequencies (grids are small).
  // Adds a learned embedding per raster position to every input token. RoPE alone tells tokens
  // only where they are relative to each other; a prompt that says "at the top left" needs the
  // absolute place. Off by default (the class models were trained without it).
  bool absolute_positions = false;

  // Conditioning. For kClass, class ids are [0, num_classes) and id num_classes is the null class
  // used for the unconditional branch of classifier-free guidance.
  Conditioning conditioning = Conditioning::kClass;
  int num_classes = 10;
  double cond_dropout = 0.1;  // Training-time probability of replacing the condition with null.

  // Text encoder (conditioning = text; model/text/text_encoder.h): a small bidirectional
  // transformer over the prompt's token ids. These fields are read from any config but written only
  // for text models, so class and unconditional checkpoints stay as they were.
  int text_vocab_size = 0;   // The tokenizer's vocabulary size; no default, it must be set.
  int text_max_tokens = 32;  // Longest prompt in ids, BOS and EOS included.
  int text_width = 128;
  int text_depth = 2;
  int text_heads = 4;

  OutputHead head = OutputHead::kMean;
  Variant variant = Variant::kDart;

  // Flow head (head = flow; docs/model.md, "Flow head"): a per-token MLP that samples each token's
  // x_0 patch by integrating a rectified-flow velocity from noise (s = 0) to data (s = 1),
  // conditioned on the backbone's output for that token. The mean head stays as an auxiliary (its
  // loss weight is flow_mean_weight) and gives cheap previews.
  int flow_width = 128;
  int flow_depth = 3;
  int flow_steps = 4;  // ODE steps per DART step when sampling
  FlowSolver flow_solver = FlowSolver::kEuler;
  int flow_times = 4;  // flow times drawn per token in training (amortises the backbone pass)
  double flow_mean_weight = 1.0;

  // Derived quantities.
  bool latent() const { return !autoencoder.empty(); }
  // The images the model makes: the latent grid times f and the autoencoder's channels for a
  // latent model, else image_size and channels. For reporting (DescribeModel) and for checking
  // data; the token maths uses image_size and channels.
  int pixel_size() const { return latent() ? image_size * autoencoder_downsample : image_size; }
  int pixel_channels() const { return latent() ? kAutoencoderImageChannels : channels; }
  int grid() const { return image_size / patch_size; }
  int tokens_per_block() const { return grid() * grid(); }  // K
  int token_dim() const { return patch_size * patch_size * channels; }
  bool autoregressive() const { return variant == Variant::kDartAr; }
  // Blocks in the teacher-forced sequence: T, or T + 1 for dart_ar (the clean x_0 block last).
  int num_blocks() const { return num_steps + (autoregressive() ? 1 : 0); }
  // Tokens in the teacher-forced sequence and the KV cache: T * K, or (T + 1) * K - 1 for dart_ar
  // (the last x_0 token is predicted, never fed back).
  int sequence_length() const {
    return num_blocks() * tokens_per_block() - (autoregressive() ? 1 : 0);
  }
  // Model calls (Sampler::Step) per image: T, or T * K for dart_ar (one per predicted token).
  int generation_steps() const {
    return autoregressive() ? num_steps * tokens_per_block() : num_steps;
  }
  // Tokens each generation step predicts: K, or 1 for dart_ar.
  int tokens_per_step() const { return autoregressive() ? 1 : tokens_per_block(); }
  int head_dim() const { return width / heads; }
  int mlp_hidden() const;
  int text_head_dim() const { return text_width / text_heads; }
  int text_mlp_hidden() const;  // round_up(mlp_ratio * text_width, 32), as mlp_hidden()
  int null_class() const { return num_classes; }
  bool flow() const { return head == OutputHead::kFlow; }
  // Bytes of K/V cache for one branch (one row) of one request at its peak (all T blocks), fp32,
  // including its condition_bytes_per_row().
  int64_t kv_bytes_per_row() const;
  // The condition's part of it (model/dart.h, Condition): every block's AdaLN-Zero modulation and,
  // for text models, every layer's cross-attention K/V of the padded prompt. Held with or without
  // the image KV cache.
  int64_t condition_bytes_per_row() const;

  // OK, or INVALID_ARGUMENT naming the field and the accepted range.
  absl::Status Validate() const;

  // A small model for tests: 8x8 gray images, patch 2 (K = 16), T = 4, width 32, depth 2.
  static ModelConfig Tiny();
};

// Multiply-add FLOPs (2 per MAC) to generate one image with the KV cache: per-token linear layers
// plus attention over the growing context, plus the flow head's evaluations; doubled when guided
// (two rows). AdaLN and the embedding lookups are per row and negligible.
double FlopsPerImage(const ModelConfig& config, bool guided);

// JSON (de)serialisation. Parsing validates; unknown keys are rejected so typos do not silently
// fall back to defaults.
absl::StatusOr<ModelConfig> ModelConfigFromJson(const std::string& json);
std::string ModelConfigToJson(const ModelConfig& config);

}  // namespace dartserve::model

#endif  // DARTSERVE_MODEL_CONFIG_H_

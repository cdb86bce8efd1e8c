// A small convolutional KL autoencoder (docs/model.md, "Autoencoder"): latent DART denoises its
// latents instead of pixels. In the spirit of the Stable Diffusion VAE at small scale: ResNet
// blocks with GroupNorm and SiLU, stride-2 downsampling, nearest-neighbour upsampling, and a
// diagonal Gaussian posterior regularised towards N(0, I) by a small KL weight.
//
// Besides the weights, a trained autoencoder carries a calibration, computed from data after
// training and stored in its config.json (not in model.safetensors; docs/model.md says why):
//  - a per-channel latent shift and scale, so DART sees zero-mean, unit-variance latents
//    (Normalize / Denormalize);
//  - a linear latent-to-RGB preview map, so a preview of a latent costs one 1x1 convolution
//    instead of the decoder (PreviewRgb).
//
// Layouts: images are [B, channels, H, W] floats in [-1, 1], H and W multiples of the downsample
// factor f (image_size x image_size is the size it was trained at); latents are
// [B, latent_channels, H / f, W / f].
// Thread-compatibility: a module may be used by one thread at a time; a const config is safe to
// share.
#ifndef DARTSERVE_MODEL_AUTOENCODER_H_
#define DARTSERVE_MODEL_AUTOENCODER_H_

#include <torch/torch.h>

#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/safetensors.h"

namespace dartserve::model {

// The value of "kind" in an autoencoder's config.json. DART configs have no "kind".
inline constexpr char kAutoencoderKind[] = "autoencoder";

struct AutoencoderConfig {
  int image_size = 64;  // the training resolution (square)
  int channels = 3;     // RGB only: the preview map is latent -> RGB
  int latent_channels = 4;

  // Level l has base_width * width_mults[l] channels; every level but the last halves the
  // resolution, so the downsample factor f is 2^(levels - 1): 3 levels give f = 4, 4 give f = 8.
  int base_width = 64;
  std::vector<int> width_mults = {1, 2, 2};
  int num_res_blocks = 1;  // ResNet blocks per level, in the encoder and in the decoder
  // The decoder's level l has decoder_base_width * width_mults[l] channels (0: base_width). A
  // narrower decoder than encoder makes serving cheaper (the encoder only runs in training); it
  // can be trained for a frozen encoder, keeping its latents and calibration (docs/model.md).
  int decoder_base_width = 0;
  int norm_groups = 32;  // GroupNorm groups; must divide every level's width

  // Weight of the KL term relative to the per-image *summed* pixel loss, as in Stable Diffusion
  // (ComputeAutoencoderLoss divides it by the pixel count to keep that meaning with mean losses).
  double kl_weight = 1e-6;

  // Calibration (MeasureLatentStats, FitModelPreviewMap). Empty means uncalibrated: shift 0,
  // scale 1, preview map 0; the Resolved*() accessors fill those defaults in.
  std::vector<double> latent_shift;    // [latent_channels]
  std::vector<double> latent_scale;    // [latent_channels], each > 0
  std::vector<double> preview_weight;  // [latent_channels * 3], row-major: [i * 3 + k] maps
                                       // normalized latent channel i to RGB channel k
  std::vector<double> preview_bias;    // [3]

  int num_levels() const { return static_cast<int>(width_mults.size()); }
  int downsample_factor() const { return 1 << (num_levels() - 1); }  // f
  int latent_size() const { return image_size / downsample_factor(); }
  int level_width(int level) const { return base_width * width_mults[level]; }
  int decoder_level_width(int level) const {
    return (decoder_base_width > 0 ? decoder_base_width : base_width) * width_mults[level];
  }
  // The encoder's architecture and the latents it makes agree (everything but the decoder's
  // width, kl_weight and the calibration): a decoder trained for one encoder fits the other.
  bool SameEncoder(const AutoencoderConfig& other) const;
  std::vector<double> ResolvedShift() const;
  std::vector<double> ResolvedScale() const;
  std::vector<double> ResolvedPreviewWeight() const;
  std::vector<double> ResolvedPreviewBias() const;

  // OK, or INVALID_ARGUMENT naming the first offending field and its accepted range.
  absl::Status Validate() const;

  // 16x16 RGB, c = 4, f = 4 (widths 16, 32, 32), one block per level, 8 groups: fast on a CPU.
  static AutoencoderConfig Tiny();
};

// JSON with "kind": "autoencoder" first. Parsing rejects unknown keys, a missing or different
// kind (so a DART config.json is refused by name), and anything Validate() rejects.
absl::StatusOr<AutoencoderConfig> AutoencoderConfigFromJson(const std::string& json);
std::string AutoencoderConfigToJson(const AutoencoderConfig& config);

// The posterior q(z | x) = N(mean, exp(logvar)), per latent element; [B, c, h, w] each.
struct Posterior {
  torch::Tensor mean;
  torch::Tensor logvar;  // clamped to [-30, 20] (as Stable Diffusion) so exp() stays finite
};

// KL(q || N(0, I)) per image, summed over latent elements: [B], in nats. Zero exactly when
// mean = 0 and logvar = 0.
torch::Tensor KlDivergence(const Posterior& posterior);

// A latent-to-RGB linear map: rgb_k = bias_k + sum_i weight[i * 3 + k] * latent_i.
struct PreviewMap {
  std::vector<double> weight;  // [c * 3]
  std::vector<double> bias;    // [3]
};

enum class PreviewUpsample { kNearest, kBilinear };

// ResNet block: GroupNorm, SiLU, 3x3 conv, GroupNorm, SiLU, 3x3 conv, plus the input (through a
// 1x1 conv when the widths differ). [B, in, H, W] -> [B, out, H, W].
class AeResBlockImpl : public torch::nn::Module {
 public:
  AeResBlockImpl(int in_width, int out_width, int groups);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  torch::nn::GroupNorm norm1_{nullptr}, norm2_{nullptr};
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr}, skip_{nullptr};  // skip: null if same width
};
TORCH_MODULE(AeResBlock);

// Images [B, channels, H, W] -> [B, 2 * latent_channels, H / f, W / f] (mean, then logvar).
class AeEncoderImpl : public torch::nn::Module {
 public:
  explicit AeEncoderImpl(const AutoencoderConfig& config);
  torch::Tensor forward(const torch::Tensor& images);

 private:
  int res_blocks_;
  torch::nn::Conv2d conv_in_{nullptr}, conv_out_{nullptr};
  std::vector<AeResBlock> blocks_;        // level-major: num_res_blocks per level
  std::vector<torch::nn::Conv2d> downs_;  // stride 2, after every level but the last
  AeResBlock mid_{nullptr};
  torch::nn::GroupNorm norm_out_{nullptr};
};
TORCH_MODULE(AeEncoder);

// Latents [B, latent_channels, h, w] -> images [B, channels, h * f, w * f], unclamped.
class AeDecoderImpl : public torch::nn::Module {
 public:
  explicit AeDecoderImpl(const AutoencoderConfig& config);
  torch::Tensor forward(const torch::Tensor& latents);

 private:
  int res_blocks_;
  torch::nn::Conv2d conv_in_{nullptr}, conv_out_{nullptr};
  AeResBlock mid_{nullptr};
  std::vector<AeResBlock> blocks_;      // from the deepest level up: num_res_blocks per level
  std::vector<torch::nn::Conv2d> ups_;  // after nearest x2, before every level but the first
  torch::nn::GroupNorm norm_out_{nullptr};
};
TORCH_MODULE(AeDecoder);

class AutoencoderImpl : public torch::nn::Module {
 public:
  // `config` must be valid (AutoencoderConfig::Validate).
  explicit AutoencoderImpl(const AutoencoderConfig& config);

  const AutoencoderConfig& config() const { return config_; }
  torch::TensorOptions options() const;  // dtype and device of the weights

  // images [B, channels, H, W] in [-1, 1] (H, W multiples of f) -> the posterior over raw
  // latents. Throws c10::Error on a wrong shape.
  Posterior Encode(const torch::Tensor& images);
  // mean + exp(logvar / 2) * eps; eps is drawn on the CPU from `generator` (so a result does not
  // depend on the device or on batch mates' draws) and moved to the posterior's device.
  torch::Tensor Sample(const Posterior& posterior, torch::Generator& generator) const;
  // Raw latents [B, c, h, w] -> images [B, channels, h * f, w * f], unclamped (callers clamp).
  torch::Tensor Decode(const torch::Tensor& latents);

  // Raw latents <-> the unit-variance latents DART sees: (z - shift) / scale and x * scale +
  // shift, per channel, with the stored calibration (identity when uncalibrated).
  torch::Tensor Normalize(const torch::Tensor& latents) const;
  torch::Tensor Denormalize(const torch::Tensor& normalized) const;

  // *Normalized* latents [B, c, h, w] (what DART predicts) -> a linear RGB estimate [B, 3, h, w]
  // of the image box-averaged to h x w, unclamped. Zero until a preview map is stored.
  torch::Tensor PreviewRgb(const torch::Tensor& normalized) const;
  // PreviewRgb upsampled by f to [B, 3, h * f, w * f] (image_size for image_size latents).
  torch::Tensor PreviewImage(const torch::Tensor& normalized,
                             PreviewUpsample mode = PreviewUpsample::kNearest) const;

  // Store a calibration into the config. INVALID_ARGUMENT (naming the field) when sizes do not
  // match latent_channels or a value is not finite (or a scale not > 0); the model is unchanged.
  absl::Status SetLatentStats(std::vector<double> shift, std::vector<double> scale);
  absl::Status SetPreviewMap(PreviewMap map);

  AeEncoder& encoder() { return encoder_; }
  AeDecoder& decoder() { return decoder_; }

 private:
  absl::Status SetConfig(AutoencoderConfig config);

  AutoencoderConfig config_;
  AeEncoder encoder_{nullptr};
  AeDecoder decoder_{nullptr};
};
TORCH_MODULE(Autoencoder);

struct AutoencoderLoss {
  torch::Tensor loss;     // scalar, differentiable: l1 + l2 + kl_term
  torch::Tensor l1;       // detached: mean |x - decode(z)| over pixel values
  torch::Tensor l2;       // detached: mean (x - decode(z))^2
  torch::Tensor kl;       // detached: mean over images of KlDivergence (nats per image)
  torch::Tensor kl_term;  // detached: kl_weight * kl / (channels * H * W), as added to loss
};

// One training step's loss on images [B, channels, H, W] in [-1, 1]: z is sampled from the
// posterior with `generator` (so a step is reproducible) and decoded.
AutoencoderLoss ComputeAutoencoderLoss(Autoencoder& model, const torch::Tensor& images,
                                       torch::Generator& generator);

// Calibration. Batches are [B, channels, H, W] in [-1, 1], on any device (moved to the model's).
// Errors: INVALID_ARGUMENT for no batches or a wrongly shaped batch (naming its index); INTERNAL
// for a LibTorch failure. On error the model is unchanged.
//
// Stores the per-channel mean and std of the posterior means over all batches and positions as
// latent_shift and latent_scale (a std below 1e-5, a dead channel, is floored there). Run it
// before FitModelPreviewMap, which fits on normalized latents.
absl::Status MeasureLatentStats(Autoencoder& model, std::span<const torch::Tensor> image_batches);
// Least squares with a bias: latents [N, c, h, w] -> images [N, 3, h, w] (the images already
// box-downsampled to h x w). Normal equations in float64 with a ridge of 1e-5 times the mean
// latent energy on the weights (not the bias): a (c + 1)^2 system, deterministic on every device,
// and solvable when a channel is dead or constant. INVALID_ARGUMENT on mismatched shapes.
absl::StatusOr<PreviewMap> FitPreviewMap(const torch::Tensor& latents, const torch::Tensor& images);
// FitPreviewMap on the model's normalized posterior means against the batches box-averaged by f,
// stored with SetPreviewMap.
absl::Status FitModelPreviewMap(Autoencoder& model, std::span<const torch::Tensor> image_batches);

// Checkpoint folder: config.json (AutoencoderConfigToJson, calibration included) and
// model.safetensors, each written atomically (`dir` is created). Loading is as strict as DART's
// LoadCheckpoint: errors are prefixed with the offending file, and a missing, unexpected or
// wrongly shaped tensor, or a config.json that is not an autoencoder's, is an error naming it.
// The loaded model is in eval mode on the CPU.
absl::Status SaveAutoencoder(const std::string& dir, Autoencoder& model, DType dtype = DType::kF32);
absl::StatusOr<Autoencoder> LoadAutoencoder(const std::string& dir);

}  // namespace dartserve::model

#endif  // DARTSERVE_MODEL_AUTOENCODER_H_

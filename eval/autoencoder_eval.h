// Reconstruction quality of an autoencoder (model/autoencoder.h): PSNR of decode(encode(x)) against
// x, on 8-bit images as a client would receive them, and the cost of the decoder.
#ifndef DARTSERVE_EVAL_AUTOENCODER_EVAL_H_
#define DARTSERVE_EVAL_AUTOENCODER_EVAL_H_

#include <torch/torch.h>

#include <cstdint>

#include "absl/status/statusor.h"
#include "model/autoencoder.h"

namespace dartserve::eval {

// Seed of the held-out 64x64 scenes the autoencoder is scored on. The trainer draws its scenes
// from the config's seed (0 in train/configs), so these are scenes it never saw.
inline constexpr uint64_t kHeldOutScenesSeed = 0x5eed64;

struct AutoencoderReport {
  int64_t images = 0;
  // PSNR in dB of the 8-bit reconstruction (the posterior mean decoded, clamped and rounded)
  // against the 8-bit original: the mean of per-image PSNRs, the worst image, and the PSNR of the
  // pooled mean squared error.
  double mean_psnr_db = 0;
  double min_psnr_db = 0;
  double pooled_psnr_db = 0;
  double mean_abs_error = 0;  // in 8-bit levels
  // PSNR of the latent preview (PreviewImage, bilinear) against the original: how faithful the
  // near-free previews are.
  double preview_psnr_db = 0;
  double decode_ms_per_image = 0;  // Decode alone, batches of `batch`
};

// Scores `model` on `images` ([N, C, H, W] uint8, the model's size), `batch` at a time.
// INVALID_ARGUMENT for images of another shape; INTERNAL for a LibTorch failure.
absl::StatusOr<AutoencoderReport> EvaluateAutoencoder(model::Autoencoder& model,
                                                      const torch::Tensor& images, int batch = 100);

}  // namespace dartserve::eval

#endif  // DARTSERVE_EVAL_AUTOENCODER_EVAL_H_

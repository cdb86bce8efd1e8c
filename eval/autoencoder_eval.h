// Reconstruction quality of an autoencoder (model/autoencoder.h): PSNR of decode(encode(x)) against
// x, on 8-bit images as a client would receive them, and the cost of the decoder. For the 64x64
// scenes also whether the prompt evaluator (eval/scene64_eval.h) reads the same scene from a
// reconstruction as from its original: the target is >= 99%, since a latent model can be no more
// faithful to a prompt than its decoder is to the latents.
#ifndef DARTSERVE_EVAL_AUTOENCODER_EVAL_H_
#define DARTSERVE_EVAL_AUTOENCODER_EVAL_H_

#include <torch/torch.h>

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "data/scenes64.h"
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

  // Only when scored with specs (else 0 and empty): every original and its 8-bit reconstruction
  // analysed (AnalyzeImage) and read against the original's caption spec.
  int64_t read_scenes = 0;
  // Fraction whose reconstruction reads as the original (SameReading: background, object count,
  // each object's colour, shape, size and position), and the scenes where it does not.
  double same_reading = 0;
  std::vector<int64_t> differing_scenes;
  // Fractions read as all-correct (CheckScene64) against their spec: the originals (1 unless
  // the evaluator misreads a clean render) and the reconstructions.
  double originals_all_correct = 0;
  double reconstructions_all_correct = 0;
};

// Scores `model` on `images` ([N, C, H, W] uint8, the model's size), `batch` at a time. With
// `specs` (one per image, what its caption states; the images then must be 64x64 scenes) the
// readings are compared too. INVALID_ARGUMENT for images of another shape or a specs count other
// than N; INTERNAL for a LibTorch failure.
absl::StatusOr<AutoencoderReport> EvaluateAutoencoder(
    model::Autoencoder& model, const torch::Tensor& images, int batch = 100,
    std::span<const data::CaptionSpec> specs = {});

}  // namespace dartserve::eval

#endif  // DARTSERVE_EVAL_AUTOENCODER_EVAL_H_

#include "eval/autoencoder_eval.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <exception>
#include <limits>

#include "absl/strings/str_cat.h"
#include "eval/prompt_eval.h"
#include "eval/scene64_eval.h"
#include "eval/shape_analysis.h"

namespace dartserve::eval {
namespace {

// [-1, 1] floats -> 8-bit levels as floats (what a PNG of the image holds).
torch::Tensor ToLevels(const torch::Tensor& x) { return ((x.clamp(-1, 1) + 1) * 127.5).round(); }

double Psnr(double mse) {
  return mse <= 0 ? std::numeric_limits<double>::infinity() : 10 * std::log10(255.0 * 255.0 / mse);
}

// Reads originals[k] and reconstructions[k] against specs[first + k] into the report's counts.
absl::Status ReadScenes(const torch::Tensor& originals, const torch::Tensor& reconstructions,
                        std::span<const data::CaptionSpec> specs, int64_t first,
                        AutoencoderReport& r, int64_t& originals_right,
                        int64_t& reconstructions_right) {
  absl::StatusOr<std::vector<data::SceneImage64>> a = SceneImages64FromTensor(originals);
  if (!a.ok()) return a.status();
  absl::StatusOr<std::vector<data::SceneImage64>> b = SceneImages64FromTensor(reconstructions);
  if (!b.ok()) return b.status();
  for (size_t k = 0; k < a->size(); ++k) {
    const Analysis original = AnalyzeImage((*a)[k]);
    const Analysis reconstruction = AnalyzeImage((*b)[k]);
    const data::CaptionSpec& spec = specs[first + k];
    ++r.read_scenes;
    if (!SameReading(original, reconstruction)) r.differing_scenes.push_back(first + k);
    originals_right += CheckScene64(original, spec).all;
    reconstructions_right += CheckScene64(reconstruction, spec).all;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<AutoencoderReport> EvaluateAutoencoder(model::Autoencoder& model,
                                                      const torch::Tensor& images, int batch,
                                                      std::span<const data::CaptionSpec> specs) {
  const model::AutoencoderConfig& c = model->config();
  if (images.dim() != 4 || images.size(1) != c.channels || images.size(2) != c.image_size ||
      images.size(3) != c.image_size || images.scalar_type() != torch::kUInt8) {
    return absl::InvalidArgumentError(absl::StrCat("images: must be uint8 [N, ", c.channels, ", ",
                                                   c.image_size, ", ", c.image_size, "]"));
  }
  if (!specs.empty()) {
    if (static_cast<int64_t>(specs.size()) != images.size(0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("specs: ", specs.size(), " for ", images.size(0), " images"));
    }
    if (c.image_size != data::kScene64Size || c.channels != data::kShapeChannels) {
      return absl::InvalidArgumentError("specs: only 64x64 RGB scenes can be read");
    }
  }
  AutoencoderReport r;
  r.images = images.size(0);
  try {
    torch::NoGradGuard no_grad;
    model->eval();
    int64_t originals_right = 0, reconstructions_right = 0;
    double psnr_sum = 0, preview_se = 0, se = 0, ae = 0, decode_s = 0;
    r.min_psnr_db = std::numeric_limits<double>::infinity();
    for (int64_t i = 0; i < r.images; i += batch) {
      const torch::Tensor levels =
          images.slice(0, i, std::min(r.images, i + batch)).to(torch::kFloat);
      const torch::Tensor x = levels / 127.5 - 1;
      const model::Posterior posterior = model->Encode(x.to(model->options()));
      const auto start = std::chrono::steady_clock::now();
      const torch::Tensor decoded = model->Decode(posterior.mean);
      decode_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const torch::Tensor recon_levels = ToLevels(decoded.to(torch::kCPU));
      const torch::Tensor diff = recon_levels - levels;
      if (!specs.empty()) {
        if (absl::Status s =
                ReadScenes(images.slice(0, i, i + levels.size(0)), recon_levels.to(torch::kUInt8),
                           specs, i, r, originals_right, reconstructions_right);
            !s.ok()) {
          return s;
        }
      }
      const torch::Tensor per_image = diff.square().mean({1, 2, 3}).to(torch::kDouble);
      for (int64_t k = 0; k < per_image.size(0); ++k) {
        const double p = Psnr(per_image[k].item<double>());
        psnr_sum += p;
        r.min_psnr_db = std::min(r.min_psnr_db, p);
      }
      se += diff.square().sum().item<double>();
      ae += diff.abs().sum().item<double>();
      const torch::Tensor preview =
          model->PreviewImage(model->Normalize(posterior.mean), model::PreviewUpsample::kBilinear);
      preview_se += (ToLevels(preview.to(torch::kCPU)) - levels).square().sum().item<double>();
    }
    const double values = static_cast<double>(images.numel());
    r.mean_psnr_db = psnr_sum / r.images;
    r.pooled_psnr_db = Psnr(se / values);
    r.mean_abs_error = ae / values;
    r.preview_psnr_db = Psnr(preview_se / values);
    r.decode_ms_per_image = 1000 * decode_s / r.images;
    if (r.read_scenes > 0) {
      const double n = static_cast<double>(r.read_scenes);
      r.same_reading = (n - static_cast<double>(r.differing_scenes.size())) / n;
      r.originals_all_correct = originals_right / n;
      r.reconstructions_all_correct = reconstructions_right / n;
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("evaluating the autoencoder: ", e.what()));
  }
  return r;
}

}  // namespace dartserve::eval

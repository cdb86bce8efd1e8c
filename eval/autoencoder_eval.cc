#include "eval/autoencoder_eval.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <exception>
#include <limits>

#include "absl/strings/str_cat.h"

namespace dartserve::eval {
namespace {

// [-1, 1] floats -> 8-bit levels as floats (what a PNG of the image holds).
torch::Tensor ToLevels(const torch::Tensor& x) { return ((x.clamp(-1, 1) + 1) * 127.5).round(); }

double Psnr(double mse) {
  return mse <= 0 ? std::numeric_limits<double>::infinity() : 10 * std::log10(255.0 * 255.0 / mse);
}

}  // namespace

absl::StatusOr<AutoencoderReport> EvaluateAutoencoder(model::Autoencoder& model,
                                                      const torch::Tensor& images, int batch) {
  const model::AutoencoderConfig& c = model->config();
  if (images.dim() != 4 || images.size(1) != c.channels || images.size(2) != c.image_size ||
      images.size(3) != c.image_size || images.scalar_type() != torch::kUInt8) {
    return absl::InvalidArgumentError(absl::StrCat("images: must be uint8 [N, ", c.channels, ", ",
                                                   c.image_size, ", ", c.image_size, "]"));
  }
  AutoencoderReport r;
  r.images = images.size(0);
  try {
    torch::NoGradGuard no_grad;
    model->eval();
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
      const torch::Tensor diff = ToLevels(decoded.to(torch::kCPU)) - levels;
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
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("evaluating the autoencoder: ", e.what()));
  }
  return r;
}

}  // namespace dartserve::eval

#include "model/autoencoder.h"

#include <algorithm>
#include <cmath>
#include <exception>
#include <filesystem>
#include <functional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/file_io.h"
#include "model/checkpoint.h"
#include "nlohmann/json.hpp"

namespace dartserve::model {
namespace nn = torch::nn;
namespace F = torch::nn::functional;
namespace {

// Ordered, so config.json reads in declaration order with "kind" first.
using Json = nlohmann::ordered_json;

// Stable Diffusion's bounds: beyond them exp(logvar) under- or overflows in fp32 for no benefit.
constexpr double kLogvarMin = -30.0;
constexpr double kLogvarMax = 20.0;
// A dead latent channel has (near) zero spread; flooring its scale keeps Normalize finite, and
// Denormalize then squashes whatever DART puts there back to the constant the decoder expects.
constexpr double kMinScale = 1e-5;
// Relative ridge of the preview fit (see FitPreviewMap in the header).
constexpr double kPreviewRidge = 1e-5;

// ---- config.json helpers (the same conventions as model/config.cc) ----

absl::Status Check(bool ok, const std::string& field, const std::string& requirement) {
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", requirement));
}

absl::Status ParseInt(const Json& j, const std::string& field, int* out) {
  if (!j.is_number_integer()) return Check(false, field, "must be an integer");
  const int64_t v = j.get<int64_t>();
  if (v < -(1LL << 30) || v > (1LL << 30)) return Check(false, field, "out of range");
  *out = static_cast<int>(v);
  return absl::OkStatus();
}

absl::Status ParseDouble(const Json& j, const std::string& field, double* out) {
  if (!j.is_number()) return Check(false, field, "must be a number");
  *out = j.get<double>();
  return absl::OkStatus();
}

// A JSON array of T, each element read by `parse` (which names it field[i]).
template <typename T>
absl::Status ParseList(const Json& j, const std::string& field,
                       absl::Status (*parse)(const Json&, const std::string&, T*),
                       std::vector<T>* out) {
  if (!j.is_array() || j.size() > 4096) return Check(false, field, "must be an array (<= 4096)");
  std::vector<T> values(j.size());
  for (size_t i = 0; i < j.size(); ++i) {
    if (absl::Status s = parse(j[i], absl::StrCat(field, "[", i, "]"), &values[i]); !s.ok()) {
      return s;
    }
  }
  *out = std::move(values);
  return absl::OkStatus();
}

// One row per config.json field (besides "kind"): a new field is one row here plus its member
// and its Validate() check, so reading and writing cannot drift.
struct Field {
  const char* name;
  std::function<absl::Status(const Json&, AutoencoderConfig&)> read;
  std::function<Json(const AutoencoderConfig&)> write;
};

template <typename T>
Field Scalar(const char* name, T AutoencoderConfig::*member,
             absl::Status (*parse)(const Json&, const std::string&, T*)) {
  return {name,
          [name, member, parse](const Json& j, AutoencoderConfig& c) {
            return parse(j, name, &(c.*member));
          },
          [member](const AutoencoderConfig& c) { return Json(c.*member); }};
}

template <typename T>
Field List(const char* name, std::vector<T> AutoencoderConfig::*member,
           absl::Status (*parse)(const Json&, const std::string&, T*),
           std::function<std::vector<T>(const AutoencoderConfig&)> written) {
  return {name,
          [name, member, parse](const Json& j, AutoencoderConfig& c) {
            return ParseList(j, name, parse, &(c.*member));
          },
          [written](const AutoencoderConfig& c) { return Json(written(c)); }};
}

const std::vector<Field>& Fields() {
  using C = AutoencoderConfig;
  // Calibration is written resolved, so a folder states its shift, scale and map explicitly.
  static const auto* fields = new std::vector<Field>{
      Scalar("image_size", &C::image_size, ParseInt),
      Scalar("channels", &C::channels, ParseInt),
      Scalar("latent_channels", &C::latent_channels, ParseInt),
      Scalar("base_width", &C::base_width, ParseInt),
      List<int>("width_mults", &C::width_mults, ParseInt, [](const C& c) { return c.width_mults; }),
      Scalar("num_res_blocks", &C::num_res_blocks, ParseInt),
      Scalar("decoder_base_width", &C::decoder_base_width, ParseInt),
      Scalar("norm_groups", &C::norm_groups, ParseInt),
      Scalar("kl_weight", &C::kl_weight, ParseDouble),
      List<double>("latent_shift", &C::latent_shift, ParseDouble, &C::ResolvedShift),
      List<double>("latent_scale", &C::latent_scale, ParseDouble, &C::ResolvedScale),
      List<double>("preview_weight", &C::preview_weight, ParseDouble, &C::ResolvedPreviewWeight),
      List<double>("preview_bias", &C::preview_bias, ParseDouble, &C::ResolvedPreviewBias),
  };
  return *fields;
}

// The "kind" gate comes before any field, so a DART config.json is refused as what it is rather
// than by its first unknown field.
absl::Status CheckKind(const Json& j) {
  if (!j.contains("kind")) {
    return absl::InvalidArgumentError(
        absl::StrCat("kind: missing; an autoencoder's config.json has \"kind\": \"",
                     kAutoencoderKind, "\" (a config without kind is a DART model's)"));
  }
  const Json& kind = j["kind"];
  if (!kind.is_string() || kind.get<std::string>() != kAutoencoderKind) {
    return absl::InvalidArgumentError(
        absl::StrCat("kind: ", kind.dump(), " is not \"", kAutoencoderKind, "\""));
  }
  return absl::OkStatus();
}

// Empty (uncalibrated) or exactly `size` finite values; `positive` also requires > 0.
absl::Status CheckValues(const std::vector<double>& values, size_t size, const char* field,
                         bool positive) {
  if (!values.empty() && values.size() != size) {
    return Check(
        false, field,
        absl::StrCat("must have ", size, " entries (or none: uncalibrated), not ", values.size()));
  }
  for (size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i]) || (positive && values[i] <= 0)) {
      return Check(false, absl::StrCat(field, "[", i, "]"),
                   absl::StrCat(positive ? "must be finite and > 0" : "must be finite", ", not ",
                                values[i]));
    }
  }
  return absl::OkStatus();
}

std::vector<double> OrFill(const std::vector<double>& values, size_t size, double fill) {
  return values.empty() ? std::vector<double>(size, fill) : values;
}

nn::Conv2d Conv3x3(int in, int out, int stride = 1) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, 3).stride(stride).padding(1));
}

nn::GroupNorm Norm(int groups, int width) {
  return nn::GroupNorm(nn::GroupNormOptions(groups, width).eps(1e-6));  // SD's eps
}

// [c] values as a [1, c, 1, 1] tensor that broadcasts over `like`'s latents.
torch::Tensor PerChannel(const std::vector<double>& values, const torch::Tensor& like) {
  return torch::tensor(values).to(like.options()).view({1, -1, 1, 1});
}

std::vector<double> ToVector(const torch::Tensor& t) {
  const torch::Tensor d = t.detach().to(torch::kCPU, torch::kDouble).contiguous();
  return std::vector<double>(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
}

std::string ShapeString(at::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::Status CheckBatches(const AutoencoderConfig& c, std::span<const torch::Tensor> batches) {
  if (batches.empty()) return absl::InvalidArgumentError("image_batches: none given");
  const int f = c.downsample_factor();
  for (size_t i = 0; i < batches.size(); ++i) {
    const torch::Tensor& b = batches[i];
    const bool ok = b.defined() && b.dim() == 4 && b.size(0) >= 1 && b.size(1) == c.channels &&
                    b.size(2) >= f && b.size(3) >= f && b.size(2) % f == 0 && b.size(3) % f == 0;
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat(
          "image_batches[", i, "]: must be [B, ", c.channels, ", H, W] with H and W positive ",
          "multiples of ", f, ", got ", b.defined() ? ShapeString(b.sizes()) : "undefined"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

// ---- AutoencoderConfig ----

std::vector<double> AutoencoderConfig::ResolvedShift() const {
  return OrFill(latent_shift, latent_channels, 0.0);
}
std::vector<double> AutoencoderConfig::ResolvedScale() const {
  return OrFill(latent_scale, latent_channels, 1.0);
}
std::vector<double> AutoencoderConfig::ResolvedPreviewWeight() const {
  return OrFill(preview_weight, size_t{3} * latent_channels, 0.0);
}
std::vector<double> AutoencoderConfig::ResolvedPreviewBias() const {
  return OrFill(preview_bias, 3, 0.0);
}

absl::Status AutoencoderConfig::Validate() const {
  const bool levels_ok = num_levels() == 3 || num_levels() == 4;
  const bool mults_ok =
      std::all_of(width_mults.begin(), width_mults.end(), [](int m) { return m >= 1 && m <= 16; });
  const int decoder_base = decoder_base_width > 0 ? decoder_base_width : base_width;
  const bool groups_ok =
      norm_groups >= 1 && base_width >= 1 && decoder_base >= 1 &&
      std::all_of(width_mults.begin(), width_mults.end(), [this, decoder_base](int m) {
        return (base_width * m) % norm_groups == 0 && (decoder_base * m) % norm_groups == 0;
      });
  const size_t c = latent_channels > 0 ? latent_channels : 0;
  // Each check names its field; the first failure wins so the message stays one line.
  for (const absl::Status& s : {
           Check(channels == 3, "channels", "must be 3 (RGB: the preview map is latent -> RGB)"),
           Check(latent_channels >= 4 && latent_channels <= 16, "latent_channels",
                 "must be in [4, 16]"),
           Check(levels_ok, "width_mults", "must have 3 or 4 entries (downsample factor 4 or 8)"),
           Check(mults_ok, "width_mults", "entries must be in [1, 16]"),
           Check(base_width >= 4 && base_width <= 1024, "base_width", "must be in [4, 1024]"),
           Check(decoder_base_width == 0 || (decoder_base_width >= 4 && decoder_base_width <= 1024),
                 "decoder_base_width", "must be 0 (base_width) or in [4, 1024]"),
           Check(image_size >= 1 && image_size <= 4096, "image_size", "must be in [1, 4096]"),
           Check(levels_ok && image_size % downsample_factor() == 0, "image_size",
                 "must be a multiple of the downsample factor 2^(len(width_mults) - 1)"),
           Check(num_res_blocks >= 1 && num_res_blocks <= 8, "num_res_blocks", "must be in [1, 8]"),
           Check(groups_ok, "norm_groups",
                 "must be >= 1 and divide every level's width (base_width * width_mults[l], "
                 "and the decoder's)"),
           Check(kl_weight >= 0 && kl_weight <= 1, "kl_weight", "must be in [0, 1]"),
           CheckValues(latent_shift, c, "latent_shift", /*positive=*/false),
           CheckValues(latent_scale, c, "latent_scale", /*positive=*/true),
           CheckValues(preview_weight, 3 * c, "preview_weight", /*positive=*/false),
           CheckValues(preview_bias, 3, "preview_bias", /*positive=*/false),
       }) {
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

bool AutoencoderConfig::SameEncoder(const AutoencoderConfig& other) const {
  return image_size == other.image_size && channels == other.channels &&
         latent_channels == other.latent_channels && base_width == other.base_width &&
         width_mults == other.width_mults && num_res_blocks == other.num_res_blocks &&
         norm_groups == other.norm_groups;
}

AutoencoderConfig AutoencoderConfig::Tiny() {
  AutoencoderConfig c;
  c.image_size = 16;
  c.latent_channels = 4;
  c.base_width = 16;
  c.width_mults = {1, 2, 2};
  c.num_res_blocks = 1;
  c.norm_groups = 8;
  return c;
}

absl::StatusOr<AutoencoderConfig> AutoencoderConfigFromJson(const std::string& text) {
  const Json j = Json::parse(text, /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError("config.json: not valid JSON");
  if (!j.is_object()) return absl::InvalidArgumentError("config.json: must be a JSON object");
  if (absl::Status s = CheckKind(j); !s.ok()) return s;
  AutoencoderConfig c;
  for (const auto& [key, value] : j.items()) {
    if (key == "kind") continue;
    const auto field = std::find_if(Fields().begin(), Fields().end(),
                                    [&key](const Field& f) { return key == f.name; });
    if (field == Fields().end()) {
      return absl::InvalidArgumentError(absl::StrCat(key, ": unknown config field"));
    }
    if (absl::Status s = field->read(value, c); !s.ok()) return s;
  }
  if (absl::Status s = c.Validate(); !s.ok()) return s;
  return c;
}

std::string AutoencoderConfigToJson(const AutoencoderConfig& c) {
  Json j = Json::object();
  j["kind"] = kAutoencoderKind;
  for (const Field& field : Fields()) j[field.name] = field.write(c);
  return j.dump(2) + "\n";
}

// ---- Modules ----

AeResBlockImpl::AeResBlockImpl(int in_width, int out_width, int groups) {
  norm1_ = register_module("norm1", Norm(groups, in_width));
  conv1_ = register_module("conv1", Conv3x3(in_width, out_width));
  norm2_ = register_module("norm2", Norm(groups, out_width));
  conv2_ = register_module("conv2", Conv3x3(out_width, out_width));
  if (in_width != out_width) {
    skip_ = register_module("skip", nn::Conv2d(nn::Conv2dOptions(in_width, out_width, 1)));
  }
}

torch::Tensor AeResBlockImpl::forward(const torch::Tensor& x) {
  torch::Tensor h = conv1_->forward(torch::silu(norm1_->forward(x)));
  h = conv2_->forward(torch::silu(norm2_->forward(h)));
  return (skip_.is_empty() ? x : skip_->forward(x)) + h;
}

AeEncoderImpl::AeEncoderImpl(const AutoencoderConfig& c) : res_blocks_(c.num_res_blocks) {
  int width = c.level_width(0);
  conv_in_ = register_module("conv_in", Conv3x3(c.channels, width));
  for (int l = 0; l < c.num_levels(); ++l) {
    for (int i = 0; i < c.num_res_blocks; ++i) {
      blocks_.push_back(register_module(absl::StrCat("down", l, "_block", i),
                                        AeResBlock(width, c.level_width(l), c.norm_groups)));
      width = c.level_width(l);
    }
    // A strided conv (SD pads asymmetrically; symmetric padding 1 halves even sizes the same).
    if (l + 1 < c.num_levels()) {
      downs_.push_back(
          register_module(absl::StrCat("down", l, "_sample"), Conv3x3(width, width, 2)));
    }
  }
  mid_ = register_module("mid", AeResBlock(width, width, c.norm_groups));
  norm_out_ = register_module("norm_out", Norm(c.norm_groups, width));
  conv_out_ = register_module("conv_out", Conv3x3(width, 2 * c.latent_channels));
}

torch::Tensor AeEncoderImpl::forward(const torch::Tensor& images) {
  torch::Tensor x = conv_in_->forward(images);
  for (size_t i = 0; i < blocks_.size(); ++i) {
    x = blocks_[i]->forward(x);
    const size_t level = i / res_blocks_;
    if ((i + 1) % res_blocks_ == 0 && level < downs_.size()) x = downs_[level]->forward(x);
  }
  x = mid_->forward(x);
  return conv_out_->forward(torch::silu(norm_out_->forward(x)));
}

AeDecoderImpl::AeDecoderImpl(const AutoencoderConfig& c) : res_blocks_(c.num_res_blocks) {
  int width = c.decoder_level_width(c.num_levels() - 1);
  conv_in_ = register_module("conv_in", Conv3x3(c.latent_channels, width));
  mid_ = register_module("mid", AeResBlock(width, width, c.norm_groups));
  for (int l = c.num_levels() - 1; l >= 0; --l) {
    for (int i = 0; i < c.num_res_blocks; ++i) {
      blocks_.push_back(
          register_module(absl::StrCat("up", l, "_block", i),
                          AeResBlock(width, c.decoder_level_width(l), c.norm_groups)));
      width = c.decoder_level_width(l);
    }
    if (l > 0)
      ups_.push_back(register_module(absl::StrCat("up", l, "_sample"), Conv3x3(width, width)));
  }
  norm_out_ = register_module("norm_out", Norm(c.norm_groups, width));
  conv_out_ = register_module("conv_out", Conv3x3(width, c.channels));
}

torch::Tensor AeDecoderImpl::forward(const torch::Tensor& latents) {
  torch::Tensor x = mid_->forward(conv_in_->forward(latents));
  for (size_t i = 0; i < blocks_.size(); ++i) {
    x = blocks_[i]->forward(x);
    const size_t level = i / res_blocks_;  // 0 is the deepest
    if ((i + 1) % res_blocks_ == 0 && level < ups_.size()) {
      // Nearest-neighbour then a conv, rather than a transposed conv: no checkerboard artefacts.
      x = F::interpolate(x, F::InterpolateFuncOptions()
                                .scale_factor(std::vector<double>{2.0, 2.0})
                                .mode(torch::kNearest));
      x = ups_[level]->forward(x);
    }
  }
  return conv_out_->forward(torch::silu(norm_out_->forward(x)));
}

AutoencoderImpl::AutoencoderImpl(const AutoencoderConfig& config) : config_(config) {
  encoder_ = register_module("encoder", AeEncoder(config));
  decoder_ = register_module("decoder", AeDecoder(config));
}

torch::TensorOptions AutoencoderImpl::options() const { return parameters().front().options(); }

Posterior AutoencoderImpl::Encode(const torch::Tensor& images) {
  const int f = config_.downsample_factor();
  TORCH_CHECK(images.dim() == 4 && images.size(1) == config_.channels && images.size(2) >= f &&
                  images.size(3) >= f && images.size(2) % f == 0 && images.size(3) % f == 0,
              "Encode: images must be [B, ", config_.channels,
              ", H, W] with H and W positive multiples of ", f, ", got ", images.sizes());
  const std::vector<torch::Tensor> parts = encoder_->forward(images).chunk(2, /*dim=*/1);
  return {parts[0], parts[1].clamp(kLogvarMin, kLogvarMax)};
}

torch::Tensor AutoencoderImpl::Sample(const Posterior& posterior,
                                      torch::Generator& generator) const {
  const torch::Tensor eps =
      torch::randn(posterior.mean.sizes(), generator, torch::kFloat).to(posterior.mean.options());
  return posterior.mean + torch::exp(0.5 * posterior.logvar) * eps;
}

torch::Tensor AutoencoderImpl::Decode(const torch::Tensor& latents) {
  TORCH_CHECK(latents.dim() == 4 && latents.size(1) == config_.latent_channels,
              "Decode: latents must be [B, ", config_.latent_channels, ", h, w], got ",
              latents.sizes());
  return decoder_->forward(latents);
}

torch::Tensor AutoencoderImpl::Normalize(const torch::Tensor& latents) const {
  TORCH_CHECK(latents.dim() == 4 && latents.size(1) == config_.latent_channels,
              "Normalize: latents must be [B, ", config_.latent_channels, ", h, w]");
  return (latents - PerChannel(config_.ResolvedShift(), latents)) /
         PerChannel(config_.ResolvedScale(), latents);
}

torch::Tensor AutoencoderImpl::Denormalize(const torch::Tensor& normalized) const {
  TORCH_CHECK(normalized.dim() == 4 && normalized.size(1) == config_.latent_channels,
              "Denormalize: latents must be [B, ", config_.latent_channels, ", h, w]");
  return normalized * PerChannel(config_.ResolvedScale(), normalized) +
         PerChannel(config_.ResolvedShift(), normalized);
}

torch::Tensor AutoencoderImpl::PreviewRgb(const torch::Tensor& normalized) const {
  TORCH_CHECK(normalized.dim() == 4 && normalized.size(1) == config_.latent_channels,
              "PreviewRgb: latents must be [B, ", config_.latent_channels, ", h, w]");
  // The stored [c, 3] matrix as a 1x1 convolution's [3, c, 1, 1] kernel.
  const torch::Tensor weight = torch::tensor(config_.ResolvedPreviewWeight())
                                   .to(normalized.options())
                                   .view({config_.latent_channels, 3})
                                   .t()
                                   .reshape({3, config_.latent_channels, 1, 1});
  const torch::Tensor bias = torch::tensor(config_.ResolvedPreviewBias()).to(normalized.options());
  return torch::conv2d(normalized, weight, bias);
}

torch::Tensor AutoencoderImpl::PreviewImage(const torch::Tensor& normalized,
                                            PreviewUpsample mode) const {
  const torch::Tensor rgb = PreviewRgb(normalized);
  const int64_t f = config_.downsample_factor();
  auto options =
      F::InterpolateFuncOptions().size(std::vector<int64_t>{rgb.size(2) * f, rgb.size(3) * f});
  if (mode == PreviewUpsample::kBilinear) {
    options.mode(torch::kBilinear).align_corners(false);
  } else {
    options.mode(torch::kNearest);
  }
  return F::interpolate(rgb, options);
}

absl::Status AutoencoderImpl::SetConfig(AutoencoderConfig config) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  config_ = std::move(config);
  return absl::OkStatus();
}

absl::Status AutoencoderImpl::SetLatentStats(std::vector<double> shift, std::vector<double> scale) {
  AutoencoderConfig config = config_;
  config.latent_shift = std::move(shift);
  config.latent_scale = std::move(scale);
  return SetConfig(std::move(config));
}

absl::Status AutoencoderImpl::SetPreviewMap(PreviewMap map) {
  AutoencoderConfig config = config_;
  config.preview_weight = std::move(map.weight);
  config.preview_bias = std::move(map.bias);
  return SetConfig(std::move(config));
}

// ---- Loss ----

torch::Tensor KlDivergence(const Posterior& p) {
  return 0.5 * (p.mean.pow(2) + p.logvar.exp() - 1.0 - p.logvar).sum({1, 2, 3});
}

AutoencoderLoss ComputeAutoencoderLoss(Autoencoder& model, const torch::Tensor& images,
                                       torch::Generator& generator) {
  const Posterior posterior = model->Encode(images);
  const torch::Tensor diff = model->Decode(model->Sample(posterior, generator)) - images;
  const torch::Tensor l1 = diff.abs().mean();
  const torch::Tensor l2 = diff.pow(2).mean();
  const torch::Tensor kl = KlDivergence(posterior).mean();
  // SD weighs the KL against per-image *sums* of pixel losses; our pixel terms are means, so the
  // KL is divided by the pixel count to keep kl_weight's meaning (and its usual 1e-6).
  const double pixel_values = static_cast<double>(images[0].numel());
  const torch::Tensor kl_term = kl * (model->config().kl_weight / pixel_values);
  // Perceptual (LPIPS) and adversarial (patch discriminator) terms, which SD's VAE also trains
  // with for sharper decodes, would be added here.
  return {l1 + l2 + kl_term, l1.detach(), l2.detach(), kl.detach(), kl_term.detach()};
}

// ---- Calibration ----

absl::Status MeasureLatentStats(Autoencoder& model, std::span<const torch::Tensor> image_batches) {
  if (absl::Status s = CheckBatches(model->config(), image_batches); !s.ok()) return s;
  try {
    torch::NoGradGuard no_grad;
    const int64_t c = model->config().latent_channels;
    // float64 sums: E[x^2] - E[x]^2 over ~1e6+ values would cancel badly in fp32.
    torch::Tensor sum = torch::zeros({c}, torch::kDouble),
                  squares = torch::zeros({c}, torch::kDouble);
    int64_t count = 0;
    for (const torch::Tensor& batch : image_batches) {
      const torch::Tensor m =
          model->Encode(batch.to(model->options())).mean.to(torch::kCPU, torch::kDouble);
      sum += m.sum({0, 2, 3});
      squares += m.pow(2).sum({0, 2, 3});
      count += m.numel() / c;
    }
    const torch::Tensor mean = sum / count;
    const torch::Tensor std =
        (squares / count - mean.pow(2)).clamp_min(0).sqrt().clamp_min(kMinScale);
    return model->SetLatentStats(ToVector(mean), ToVector(std));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("measuring latent statistics: ", e.what()));
  }
}

absl::StatusOr<PreviewMap> FitPreviewMap(const torch::Tensor& latents,
                                         const torch::Tensor& images) {
  const bool ok = latents.defined() && images.defined() && latents.dim() == 4 &&
                  images.dim() == 4 && images.size(1) == 3 && latents.size(0) == images.size(0) &&
                  latents.size(2) == images.size(2) && latents.size(3) == images.size(3) &&
                  latents.numel() > 0;
  if (!ok) {
    return absl::InvalidArgumentError(
        absl::StrCat("FitPreviewMap: need latents [N, c, h, w] and images [N, 3, h, w], got ",
                     latents.defined() ? ShapeString(latents.sizes()) : "undefined", " and ",
                     images.defined() ? ShapeString(images.sizes()) : "undefined"));
  }
  try {
    torch::NoGradGuard no_grad;
    const int64_t c = latents.size(1);
    const torch::Tensor x =
        latents.detach().to(torch::kCPU, torch::kDouble).permute({0, 2, 3, 1}).reshape({-1, c});
    const torch::Tensor y =
        images.detach().to(torch::kCPU, torch::kDouble).permute({0, 2, 3, 1}).reshape({-1, 3});
    const torch::Tensor design = torch::cat({x, torch::ones({x.size(0), 1}, x.options())}, 1);
    torch::Tensor gram = design.t().mm(design);
    // Relative to the latents' mean energy, so it shrinks raw and normalized latents alike; the
    // floor only matters when every latent is zero.
    const double energy = gram.diagonal().narrow(0, 0, c).mean().item<double>();
    gram.diagonal().narrow(0, 0, c).add_(kPreviewRidge * std::max(energy, 1e-12 * x.size(0)));
    const torch::Tensor solution = torch::linalg::solve(gram, design.t().mm(y), /*left=*/true);
    if (!torch::isfinite(solution).all().item<bool>()) {
      return absl::InvalidArgumentError(
          "FitPreviewMap: the fit is not finite (non-finite inputs?)");
    }
    return PreviewMap{ToVector(solution.narrow(0, 0, c)), ToVector(solution[c])};
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("FitPreviewMap: ", e.what()));
  }
}

absl::Status FitModelPreviewMap(Autoencoder& model, std::span<const torch::Tensor> image_batches) {
  if (absl::Status s = CheckBatches(model->config(), image_batches); !s.ok()) return s;
  absl::StatusOr<PreviewMap> map;
  try {
    torch::NoGradGuard no_grad;
    const int64_t f = model->config().downsample_factor();
    std::vector<torch::Tensor> latents, targets;
    for (const torch::Tensor& batch : image_batches) {
      const torch::Tensor x = batch.to(model->options());
      latents.push_back(model->Normalize(model->Encode(x).mean).cpu());
      // What one latent position covers: the f x f box of pixels above it.
      targets.push_back(torch::avg_pool2d(x, {f, f}).cpu());
    }
    map = FitPreviewMap(torch::cat(latents), torch::cat(targets));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("fitting the preview map: ", e.what()));
  }
  if (!map.ok()) return map.status();
  return model->SetPreviewMap(*std::move(map));
}

// ---- Checkpoints ----

absl::Status SaveAutoencoder(const std::string& dir, Autoencoder& model, DType dtype) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec)
    return absl::PermissionDeniedError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  absl::StatusOr<std::string> bytes;
  try {
    bytes = SerializeSafetensors(WeightsToWrite(*model, dtype));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("serialising the autoencoder: ", e.what()));
  }
  if (!bytes.ok()) return bytes.status();
  const std::filesystem::path path(dir);
  if (absl::Status s = WriteFileAtomically((path / kWeightsFile).string(), *bytes); !s.ok()) {
    return s;
  }
  // Config last, as SaveCheckpoint does: its calibration describes the weights just written.
  return WriteFileAtomically((path / kConfigFile).string(),
                             AutoencoderConfigToJson(model->config()));
}

absl::StatusOr<Autoencoder> LoadAutoencoder(const std::string& dir) {
  const std::string config_path = (std::filesystem::path(dir) / kConfigFile).string();
  const std::string weights_path = (std::filesystem::path(dir) / kWeightsFile).string();
  absl::StatusOr<std::string> config_text = ReadFile(config_path);
  if (!config_text.ok()) return config_text.status();
  absl::StatusOr<AutoencoderConfig> config = AutoencoderConfigFromJson(*config_text);
  if (!config.ok()) {
    return absl::Status(config.status().code(),
                        absl::StrCat(config_path, ": ", config.status().message()));
  }
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Read(weights_path);
  if (!file.ok()) return file.status();
  try {
    Autoencoder model(*config);
    if (absl::Status s = LoadWeights(*model, *file); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat(weights_path, ": ", s.message()));
    }
    model->eval();
    return model;
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("building autoencoder from ", dir, ": ", e.what()));
  }
}

}  // namespace dartserve::model

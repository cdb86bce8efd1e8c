#include "model/checkpoint.h"

#include <cstring>
#include <exception>
#include <filesystem>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/file_io.h"
#include "model/config.h"
#include "model/text/tokenizer.h"
#include "nlohmann/json.hpp"

namespace dartserve::model {
namespace {

torch::ScalarType ToTorch(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return torch::kFloat;
    case DType::kF16:
      return torch::kHalf;
    case DType::kBF16:
      return torch::kBFloat16;
  }
  return torch::kFloat;
}

std::string ShapeString(at::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// A latent checkpoint's autoencoder: `dir`/autoencoder, loaded frozen and checked against the
// DART config read from `config_path`.
absl::StatusOr<Autoencoder> LoadCheckpointAutoencoder(const std::string& dir,
                                                      const ModelConfig& config,
                                                      const std::string& config_path) {
  if (config.autoencoder != kCheckpointAutoencoder) {
    return absl::InvalidArgumentError(absl::StrCat(
        config_path, ": autoencoder: a checkpoint carries its autoencoder in its subfolder \"",
        kCheckpointAutoencoder, "\", not \"", config.autoencoder, "\""));
  }
  const std::string ae_dir = (std::filesystem::path(dir) / kCheckpointAutoencoder).string();
  if (!std::filesystem::is_directory(ae_dir)) {
    return absl::NotFoundError(absl::StrCat(ae_dir, ": missing: ", config_path,
                                            " is a latent model and names this autoencoder"));
  }
  absl::StatusOr<Autoencoder> autoencoder = LoadAutoencoder(ae_dir);
  if (!autoencoder.ok()) {
    return absl::Status(autoencoder.status().code(),
                        absl::StrCat(ae_dir, ": the model's autoencoder does not load: ",
                                     autoencoder.status().message()));
  }
  if (absl::Status s = CheckLatentGeometry(config, (*autoencoder)->config()); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(ae_dir, ": does not fit ", config_path, ": ", s.message()));
  }
  for (torch::Tensor& p : (*autoencoder)->parameters()) p.requires_grad_(false);
  return autoencoder;
}

}  // namespace

absl::Status CheckLatentGeometry(const ModelConfig& config, const AutoencoderConfig& autoencoder) {
  const auto mismatch = [](const char* what, int ae_value, const char* field, int value) {
    return absl::InvalidArgumentError(absl::StrCat("the autoencoder's ", what, " is ", ae_value,
                                                   " but the model's ", field, " is ", value));
  };
  if (!config.latent()) {
    return absl::InvalidArgumentError("autoencoder: the model is not a latent model");
  }
  if (autoencoder.latent_channels != config.channels) {
    return mismatch("latent_channels", autoencoder.latent_channels, "channels", config.channels);
  }
  if (autoencoder.latent_size() != config.image_size) {
    return mismatch("latent size (image_size / f)", autoencoder.latent_size(), "image_size",
                    config.image_size);
  }
  if (autoencoder.downsample_factor() != config.autoencoder_downsample) {
    return mismatch("downsample factor f", autoencoder.downsample_factor(),
                    "autoencoder_downsample", config.autoencoder_downsample);
  }
  if (autoencoder.channels != config.pixel_channels()) {
    return mismatch("image channels", autoencoder.channels, "pixel channels",
                    config.pixel_channels());
  }
  return absl::OkStatus();
}

torch::Tensor TensorFromBytes(const TensorInfo& info, std::string_view bytes) {
  torch::Tensor t = torch::empty(info.shape, torch::TensorOptions().dtype(ToTorch(info.dtype)));
  std::memcpy(t.data_ptr(), bytes.data(), bytes.size());  // copy: file data may be unaligned
  return t.to(torch::kFloat);
}

TensorToWrite TensorToBytes(const std::string& name, const torch::Tensor& tensor, DType dtype) {
  const torch::Tensor t = tensor.detach().to(torch::kCPU).to(ToTorch(dtype)).contiguous();
  TensorToWrite out{name, dtype, t.sizes().vec(), {}};
  out.data.assign(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
  return out;
}

absl::Status LoadWeights(torch::nn::Module& module, const SafetensorsFile& file) {
  torch::NoGradGuard no_grad;
  std::set<std::string> used;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    const std::string& name = item.key();
    torch::Tensor param = item.value();
    auto it = file.tensors().find(name);
    if (it == file.tensors().end()) {
      return absl::InvalidArgumentError(absl::StrCat("missing tensor '", name, "'"));
    }
    if (at::IntArrayRef(it->second.shape) != param.sizes()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", name, "' has shape ", ShapeString(it->second.shape),
                       " but the config needs ", ShapeString(param.sizes())));
    }
    param.copy_(TensorFromBytes(it->second, file.Data(it->second)));
    used.insert(name);
  }
  for (const auto& [name, info] : file.tensors()) {
    if (!used.count(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("unexpected tensor '", name, "' (not a parameter of this config)"));
    }
  }
  return absl::OkStatus();
}

std::vector<TensorToWrite> WeightsToWrite(const torch::nn::Module& module, DType dtype) {
  std::vector<TensorToWrite> out;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    out.push_back(TensorToBytes(item.key(), item.value(), dtype));
  }
  return out;
}

absl::StatusOr<Dart> LoadCheckpoint(const std::string& dir) {
  const std::string config_path = (std::filesystem::path(dir) / kConfigFile).string();
  const std::string weights_path = (std::filesystem::path(dir) / kWeightsFile).string();
  absl::StatusOr<std::string> config_text = ReadFile(config_path);
  if (!config_text.ok()) return config_text.status();
  absl::StatusOr<ModelConfig> config = ModelConfigFromJson(*config_text);
  if (!config.ok()) {
    return absl::Status(config.status().code(),
                        absl::StrCat(config_path, ": ", config.status().message()));
  }
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Read(weights_path);
  if (!file.ok()) return file.status();
  try {
    Dart model(*config);
    if (absl::Status s = LoadWeights(*model, *file); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat(weights_path, ": ", s.message()));
    }
    if (config->latent()) {
      absl::StatusOr<Autoencoder> autoencoder =
          LoadCheckpointAutoencoder(dir, *config, config_path);
      if (!autoencoder.ok()) return autoencoder.status();
      model->set_autoencoder(*std::move(autoencoder));
    }
    if (config->conditioning == Conditioning::kText) {
      const std::string path = (std::filesystem::path(dir) / kTokenizerFile).string();
      absl::StatusOr<Tokenizer> tokenizer = Tokenizer::Load(path);
      if (!tokenizer.ok()) return tokenizer.status();
      if (tokenizer->vocab_size() > config->text_vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": ", tokenizer->vocab_size(), " pieces exceed text_vocab_size ",
                         config->text_vocab_size, " of ", config_path));
      }
      model->set_tokenizer(std::make_shared<const Tokenizer>(*std::move(tokenizer)));
    }
    model->eval();
    return model;
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("building model from ", dir, ": ", e.what()));
  }
}

namespace {

// The non-blank lines of `path`, trimmed; an empty list when the file does not exist.
absl::StatusOr<std::vector<std::string>> ReadLinesIfPresent(const std::string& path) {
  std::vector<std::string> lines;
  if (!std::filesystem::exists(path)) return lines;
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return text.status();
  for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipWhitespace())) {
    lines.emplace_back(absl::StripAsciiWhitespace(line));
  }
  return lines;
}

// A text model's example prompts from `dir`/prompts.txt into `info`.
absl::Status ReadExamplePrompts(const std::string& dir, ModelInfo& info) {
  const std::string path = (std::filesystem::path(dir) / kExamplePromptsFile).string();
  absl::StatusOr<std::vector<std::string>> prompts = ReadLinesIfPresent(path);
  if (!prompts.ok()) return prompts.status();
  if (!prompts->empty() && info.conditioning != Conditioning::kText) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": example prompts for a model that takes no prompt"));
  }
  if (prompts->size() > kMaxExamplePrompts) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", prompts->size(), " prompts, over ", kMaxExamplePrompts));
  }
  for (const std::string& p : *prompts) {
    if (static_cast<int64_t>(p.size()) > info.limits.max_prompt_bytes) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": a prompt over ", info.limits.max_prompt_bytes, " bytes"));
    }
  }
  info.example_prompts = *std::move(prompts);
  return absl::OkStatus();
}

// A conditional model's default guidance from `dir`/serving.json (else kDefaultGuidance).
absl::Status ReadServingDefaults(const std::string& dir, ModelInfo& info) {
  const std::string path = (std::filesystem::path(dir) / kServingFile).string();
  const bool conditional = info.conditioning != Conditioning::kNone;
  if (conditional) info.default_guidance = kDefaultGuidance;
  if (!std::filesystem::exists(path)) return absl::OkStatus();
  if (!conditional) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": serving defaults for an unconditional model"));
  }
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return text.status();
  const nlohmann::json j = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  for (const auto& [key, value] : j.items()) {
    if (key != "guidance") {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": ", key.substr(0, 32), ": unknown field (accepted: guidance)"));
    }
    if (!value.is_number()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": guidance: must be a number"));
    }
    if (absl::Status s = CheckDefaultGuidance(value.get<double>(), info.limits); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": ", s.message()));
    }
    info.default_guidance = value.get<float>();
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelInfo> DescribeCheckpoint(const std::string& dir, const Dart& model) {
  ModelInfo info = DescribeModel(model);
  const std::string names_path = (std::filesystem::path(dir) / kClassNamesFile).string();
  absl::StatusOr<std::vector<std::string>> names = ReadLinesIfPresent(names_path);
  if (!names.ok()) return names.status();
  if (!names->empty() && static_cast<int>(names->size()) != info.num_classes) {
    return absl::InvalidArgumentError(
        absl::StrCat(names_path, ": ", names->size(), " names for ", info.num_classes, " classes"));
  }
  info.class_names = *std::move(names);
  if (absl::Status s = ReadExamplePrompts(dir, info); !s.ok()) return s;
  if (absl::Status s = ReadServingDefaults(dir, info); !s.ok()) return s;
  return info;
}

absl::Status SaveCheckpoint(const std::string& dir, Dart& model, DType dtype) {
  const bool text = model->config().conditioning == Conditioning::kText;
  if (text && !model->tokenizer()) {
    return absl::FailedPreconditionError("saving a text model needs its tokenizer (set_tokenizer)");
  }
  ModelConfig config = model->config();
  Autoencoder autoencoder = model->autoencoder();
  if (config.latent()) {
    if (!autoencoder) {
      return absl::FailedPreconditionError(
          "saving a latent model needs its autoencoder (set_autoencoder)");
    }
    if (absl::Status s = CheckLatentGeometry(config, autoencoder->config()); !s.ok()) {
      return absl::FailedPreconditionError(absl::StrCat("saving a latent model: ", s.message()));
    }
    config.autoencoder = kCheckpointAutoencoder;  // the copy written below
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec)
    return absl::PermissionDeniedError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  absl::StatusOr<std::string> bytes = SerializeSafetensors(WeightsToWrite(*model, dtype));
  if (!bytes.ok()) return bytes.status();
  if (absl::Status s =
          WriteFileAtomically((std::filesystem::path(dir) / kWeightsFile).string(), *bytes);
      !s.ok()) {
    return s;
  }
  if (text) {
    if (absl::Status s = WriteFileAtomically((std::filesystem::path(dir) / kTokenizerFile).string(),
                                             model->tokenizer()->serialized());
        !s.ok()) {
      return s;
    }
  }
  if (config.latent()) {
    const std::string ae_dir = (std::filesystem::path(dir) / kCheckpointAutoencoder).string();
    if (absl::Status s = SaveAutoencoder(ae_dir, autoencoder, dtype); !s.ok()) return s;
  }
  return WriteFileAtomically((std::filesystem::path(dir) / kConfigFile).string(),
                             ModelConfigToJson(config));
}

}  // namespace dartserve::model

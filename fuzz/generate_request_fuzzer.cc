// libFuzzer target: a GenerateImageRequest as it arrives on the wire (arbitrary bytes parsed by
// protobuf), validated as the service does (server/validation.h) against each of four small
// models: class-conditional with class names (the tiny test model's geometry), text, unconditional
// and token-level DART-AR.
//
// Besides "no crash, leak or undefined behaviour", it checks what validation promises:
//  - a rejection is INVALID_ARGUMENT, starts with a field name and stays short (client values are
//    quoted by QuoteClientValue, so a huge field makes a short error);
//  - an accepted request is within the API's limits and passes model::CheckParams, the check the
//    engine repeats on submit, so nothing validated here can fail there;
//  - QuoteClientValue is bounded and cuts valid UTF-8 only at character boundaries.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "common/client_value.h"
#include "dartserve/v1/image_generator.pb.h"
#include "fuzz_check.h"
#include "google/protobuf/stubs/logging.h"
#include "model/model_info.h"
#include "server/validation.h"

namespace dartserve::server {
namespace {

using model::Conditioning;
using model::ModelInfo;

std::vector<ModelInfo> Models() {
  ModelInfo tiny;  // ModelConfig::Tiny(): 8x8 gray, T = 4, 10 classes
  tiny.conditioning = Conditioning::kClass;
  tiny.num_classes = 10;
  tiny.class_names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  tiny.image_size = 8;
  tiny.channels = 1;
  tiny.denoising_steps = 4;
  tiny.progress_steps = 4;
  tiny.default_guidance = 3.0f;

  ModelInfo text = tiny;
  text.conditioning = Conditioning::kText;
  text.num_classes = 0;
  text.class_names.clear();
  text.image_size = 32;
  text.channels = 3;
  text.latent = true;
  text.limits.max_prompt_bytes = 300;

  ModelInfo unconditional = tiny;
  unconditional.conditioning = Conditioning::kNone;
  unconditional.num_classes = 0;
  unconditional.class_names.clear();
  unconditional.default_guidance = 1.0f;

  ModelInfo dart_ar = tiny;  // T x K progress steps; classes without names
  dart_ar.class_names.clear();
  dart_ar.progress_steps = 4 * 16;
  return {tiny, text, unconditional, dart_ar};
}

bool IsFieldName(absl::string_view s) {
  if (s.empty()) return false;
  for (const char c : s) {
    if (!((c >= 'a' && c <= 'z') || c == '_' || c == '.')) return false;
  }
  return true;
}

// Whether `s` is well-formed UTF-8 (no overlong forms or surrogates are needed here: only
// whether a cut split a sequence).
bool IsUtf8(absl::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    const size_t n = c < 0x80           ? 1
                     : (c >> 5) == 0x6  ? 2
                     : (c >> 4) == 0xE  ? 3
                     : (c >> 3) == 0x1E ? 4
                                        : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

void CheckQuote(absl::string_view value) {
  const std::string quoted = QuoteClientValue(value);
  // 'value' or 'prefix...' (N bytes): the prefix is at most kMaxQuotedBytes.
  FUZZ_CHECK(quoted.size() <= kMaxQuotedBytes + 32);
  if (IsUtf8(value)) FUZZ_CHECK(IsUtf8(quoted));
}

void CheckValidation(const v1::GenerateImageRequest& request, const ModelInfo& model) {
  constexpr uint64_t kRandomSeed = 12345;
  absl::StatusOr<ValidatedRequest> v =
      ValidateGenerateRequest(request, model, "fuzz-model", kRandomSeed);
  if (!v.ok()) {
    FUZZ_CHECK(v.status().code() == absl::StatusCode::kInvalidArgument);
    const absl::string_view message = v.status().message();
    const size_t colon = message.find(": ");
    FUZZ_CHECK(colon != absl::string_view::npos && IsFieldName(message.substr(0, colon)));
    // The longest legitimate message lists the class names; nothing the client sent is echoed
    // beyond QuoteClientValue's bound.
    FUZZ_CHECK(message.size() <= 512);
    return;
  }
  FUZZ_CHECK(model::CheckParams(v->params, model).ok());
  FUZZ_CHECK(v->num_images >= 1 && v->num_images <= kMaxImagesPerRequest);
  FUZZ_CHECK(v->priority >= 0 && v->priority <= 2);
  FUZZ_CHECK(v->preview_every >= 0 && v->preview_every <= model.progress_steps);
  FUZZ_CHECK(v->preview_max_side >= 0 && v->preview_max_side <= kMaxPreviewSide);
  FUZZ_CHECK(v->params.seed == (request.has_seed() ? request.seed() : kRandomSeed));
  if (model.conditioning != Conditioning::kClass) FUZZ_CHECK(!v->params.class_id.has_value());
  if (model.conditioning != Conditioning::kText) FUZZ_CHECK(v->params.prompt.empty());
}

}  // namespace
}  // namespace dartserve::server

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  // Strings that are not UTF-8 fail to parse, as they do on the wire; protobuf would log each.
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace dartserve::server;  // NOLINT(build/namespaces): a fuzz target's entry point
  static const std::vector<dartserve::model::ModelInfo>* const models =
      new std::vector<dartserve::model::ModelInfo>(Models());
  dartserve::v1::GenerateImageRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  // What the service checks before validation, and the quoting every message uses.
  const absl::Status id = ValidateRequestId(request.request_id());
  FUZZ_CHECK(id.ok() || absl::StartsWith(id.message(), "request_id: "));
  CheckQuote(request.request_id());
  CheckQuote(request.model());
  CheckQuote(request.prompt());
  for (const dartserve::model::ModelInfo& model : *models) CheckValidation(request, model);
  return 0;
}

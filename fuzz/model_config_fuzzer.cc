// libFuzzer target: ModelConfigFromJson on arbitrary text, as a checkpoint's config.json.
//
// Besides "no crash, leak or undefined behaviour", it checks what the reader promises
// (model/config.h):
//  - every rejection is INVALID_ARGUMENT with a message that starts with what it is about (a
//    field name or "config.json");
//  - an accepted config passes Validate(), and everything the engine and the scheduler derive
//    from it (token counts, steps, KV bytes, FLOPs; what DescribeModel reports) is computed
//    without overflow (UndefinedBehaviorSanitizer) and is positive;
//  - the writer and the reader agree: ModelConfigToJson of an accepted config parses back to a
//    config that writes the same JSON.
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "fuzz_check.h"
#include "model/config.h"

namespace dartserve::model {
namespace {

void CheckDerived(const ModelConfig& c) {
  FUZZ_CHECK(c.Validate().ok());
  FUZZ_CHECK(c.pixel_size() >= 1 && c.pixel_channels() >= 1);
  FUZZ_CHECK(c.grid() >= 1 && c.tokens_per_block() >= 1 && c.token_dim() >= 1);
  FUZZ_CHECK(c.num_blocks() >= 1 && c.sequence_length() >= 1);
  FUZZ_CHECK(c.generation_steps() >= 1 && c.tokens_per_step() >= 1);
  FUZZ_CHECK(c.head_dim() >= 1 && c.mlp_hidden() >= 1);
  FUZZ_CHECK(c.kv_bytes_per_row() > 0 && c.condition_bytes_per_row() > 0);
  if (c.conditioning == Conditioning::kText) {
    FUZZ_CHECK(c.text_head_dim() >= 1 && c.text_mlp_hidden() >= 1);
  }
  FUZZ_CHECK(FlopsPerImage(c, /*guided=*/false) > 0);
  FUZZ_CHECK(FlopsPerImage(c, /*guided=*/true) > 0);
}

}  // namespace
}  // namespace dartserve::model

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace dartserve::model;  // NOLINT(build/namespaces): a fuzz target's entry point
  const std::string text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<ModelConfig> config = ModelConfigFromJson(text);
  if (!config.ok()) {
    FUZZ_CHECK(config.status().code() == absl::StatusCode::kInvalidArgument);
    const absl::string_view message = config.status().message();
    FUZZ_CHECK(!message.empty() && message.find(": ") != absl::string_view::npos);
    return 0;
  }
  CheckDerived(*config);
  const std::string written = ModelConfigToJson(*config);
  absl::StatusOr<ModelConfig> again = ModelConfigFromJson(written);
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(ModelConfigToJson(*again) == written);
  return 0;
}

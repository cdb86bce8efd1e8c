// libFuzzer target: SafetensorsFile::Parse on arbitrary bytes, as a checkpoint's model.safetensors.
//
// Besides "no crash, leak or undefined behaviour", it checks what the reader promises
// (model/safetensors.h):
//  - every rejection is DATA_LOSS;
//  - an accepted file's tensors each hold exactly numel x dtype-size bytes inside the file;
//  - an accepted file round-trips: SerializeSafetensors of its tensors and metadata parses back to
//    the same dtypes, shapes, bytes and metadata.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "fuzz_check.h"
#include "model/safetensors.h"

namespace dartserve::model {
namespace {

void CheckRoundTrip(const SafetensorsFile& file) {
  std::vector<TensorToWrite> tensors;
  for (const auto& [name, info] : file.tensors()) {
    FUZZ_CHECK(info.begin <= info.end);
    const std::string_view bytes = file.Data(info);
    FUZZ_CHECK(bytes.size() == info.end - info.begin);
    FUZZ_CHECK(static_cast<uint64_t>(info.numel()) * DTypeSize(info.dtype) == bytes.size());
    tensors.push_back({name, info.dtype, info.shape, std::string(bytes)});
  }
  absl::StatusOr<std::string> serialized = SerializeSafetensors(tensors, file.metadata());
  FUZZ_CHECK(serialized.ok());
  absl::StatusOr<SafetensorsFile> again = SafetensorsFile::Parse(*std::move(serialized));
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(again->metadata() == file.metadata());
  FUZZ_CHECK(again->tensors().size() == file.tensors().size());
  for (const auto& [name, info] : file.tensors()) {
    const auto it = again->tensors().find(name);
    FUZZ_CHECK(it != again->tensors().end());
    FUZZ_CHECK(it->second.dtype == info.dtype);
    FUZZ_CHECK(it->second.shape == info.shape);
    FUZZ_CHECK(again->Data(it->second) == file.Data(info));
  }
}

}  // namespace
}  // namespace dartserve::model

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using dartserve::model::SafetensorsFile;
  absl::StatusOr<SafetensorsFile> file =
      SafetensorsFile::Parse(std::string(reinterpret_cast<const char*>(data), size));
  if (!file.ok()) {
    FUZZ_CHECK(file.status().code() == absl::StatusCode::kDataLoss);
    return 0;
  }
  dartserve::model::CheckRoundTrip(*file);
  return 0;
}

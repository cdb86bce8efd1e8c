#include "model/safetensors.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/file_io.h"
#include "model/json_message.h"
#include "nlohmann/json.hpp"

namespace dartserve::model {
namespace {

using Json = nlohmann::json;

absl::Status Corrupt(absl::string_view what) {
  return absl::DataLossError(absl::StrCat("safetensors: ", what));
}

bool ParseDType(const std::string& name, DType* out) {
  if (name == "F32")
    *out = DType::kF32;
  else if (name == "F16")
    *out = DType::kF16;
  else if (name == "BF16")
    *out = DType::kBF16;
  else
    return false;
  return true;
}

}  // namespace

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
  }
  return "?";
}

int DTypeSize(DType dtype) { return dtype == DType::kF32 ? 4 : 2; }

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<SafetensorsFile> SafetensorsFile::Parse(std::string bytes) {
  if (bytes.size() < 8) return Corrupt("truncated: file is shorter than the 8-byte header length");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(bytes[i]);
  if (header_len > kMaxHeaderBytes) {
    return Corrupt(
        absl::StrCat("oversized header: ", header_len, " bytes (limit ", kMaxHeaderBytes, ")"));
  }
  if (header_len > bytes.size() - 8) {
    return Corrupt(absl::StrCat("truncated: header length is ", header_len, " bytes but only ",
                                bytes.size() - 8, " follow"));
  }
  const std::string_view header(bytes.data() + 8, header_len);
  if (header.empty() || header.front() != '{') {
    return Corrupt("bad magic: the header does not start with '{'");
  }
  const Json j = Json::parse(header, /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object())
    return Corrupt("bad JSON: the header is not a JSON object");

  SafetensorsFile file;
  file.data_start_ = 8 + header_len;
  const uint64_t data_size = bytes.size() - file.data_start_;
  for (const auto& [name, entry] : j.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) return Corrupt("bad JSON: __metadata__ is not an object");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string())
          return Corrupt(absl::StrCat("bad JSON: metadata ", key, " is not a string"));
        file.metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    const std::string where = absl::StrCat("tensor '", name, "': ");
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
        !entry.contains("data_offsets")) {
      return Corrupt(where + "entry needs dtype, shape and data_offsets");
    }
    TensorInfo info;
    if (!entry["dtype"].is_string() ||
        !ParseDType(entry["dtype"].get<std::string>(), &info.dtype)) {
      return Corrupt(absl::StrCat(where, "unsupported dtype ", ShowJsonValue(entry["dtype"]),
                                  " (supported: F32, F16, BF16)"));
    }
    const Json& shape = entry["shape"];
    if (!shape.is_array() || shape.size() > 8)
      return Corrupt(where + "shape must be an array of at most 8 dims");
    // Bound the element count by the data section so the product cannot overflow.
    uint64_t numel = 1;
    for (const Json& dim : shape) {
      if (!dim.is_number_unsigned())
        return Corrupt(where + "shape entries must be non-negative integers");
      const uint64_t v = dim.get<uint64_t>();
      if (v > data_size && v > 0) return Corrupt(where + "shape is larger than the file");
      info.shape.push_back(static_cast<int64_t>(v));
      numel = (v == 0 || numel == 0) ? 0 : numel * v;
      if (numel > data_size) return Corrupt(where + "shape is larger than the file");
    }
    const Json& offsets = entry["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
        !offsets[1].is_number_unsigned()) {
      return Corrupt(where + "data_offsets must be two non-negative integers");
    }
    info.begin = offsets[0].get<uint64_t>();
    info.end = offsets[1].get<uint64_t>();
    if (info.begin > info.end || info.end > data_size) {
      return Corrupt(absl::StrCat(where, "offsets out of range: [", info.begin, ", ", info.end,
                                  ") with ", data_size, " data bytes"));
    }
    if (info.end - info.begin != numel * DTypeSize(info.dtype)) {
      return Corrupt(absl::StrCat(where, "holds ", info.end - info.begin, " bytes but ",
                                  DTypeName(info.dtype), " x ", numel, " elements need ",
                                  numel * DTypeSize(info.dtype)));
    }
    file.tensors_.emplace(name, std::move(info));
  }

  // No two tensors may share bytes.
  std::vector<std::pair<const std::string*, const TensorInfo*>> by_offset;
  for (const auto& [name, info] : file.tensors_) by_offset.emplace_back(&name, &info);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const auto& a, const auto& b) { return a.second->begin < b.second->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    if (by_offset[i].second->begin < by_offset[i - 1].second->end) {
      return Corrupt(absl::StrCat("tensors '", *by_offset[i - 1].first, "' and '",
                                  *by_offset[i].first, "' overlap"));
    }
  }
  file.bytes_ = std::move(bytes);
  return file;
}

std::string_view SafetensorsFile::Data(const TensorInfo& info) const {
  return std::string_view(bytes_).substr(data_start_ + info.begin, info.end - info.begin);
}

absl::StatusOr<SafetensorsFile> SafetensorsFile::Read(const std::string& path) {
  absl::StatusOr<std::string> bytes = ReadFile(path);
  if (!bytes.ok()) return bytes.status();
  absl::StatusOr<SafetensorsFile> file = Parse(*std::move(bytes));
  if (!file.ok())
    return absl::Status(file.status().code(), absl::StrCat(path, ": ", file.status().message()));
  return file;
}

absl::StatusOr<std::string> SerializeSafetensors(
    const std::vector<TensorToWrite>& tensors, const std::map<std::string, std::string>& metadata) {
  Json header = Json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  std::set<std::string> names;
  for (const TensorToWrite& t : tensors) {
    if (!names.insert(t.name).second || t.name == "__metadata__") {
      return absl::InvalidArgumentError(absl::StrCat("safetensors: duplicate name ", t.name));
    }
    int64_t numel = 1;
    for (int64_t d : t.shape) numel *= d;
    if (static_cast<uint64_t>(numel) * DTypeSize(t.dtype) != t.data.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("safetensors: tensor ", t.name, " data size does not match its shape"));
    }
    header[t.name] = {{"dtype", DTypeName(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.data.size()}}};
    offset += t.data.size();
  }
  std::string json = header.dump();
  // Pad the header with spaces so tensor data starts 8-byte aligned, as the reference writer does.
  while ((8 + json.size()) % 8 != 0) json.push_back(' ');
  std::string out;
  out.reserve(8 + json.size() + offset);
  uint64_t len = json.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((len >> (8 * i)) & 0xff));
  out += json;
  for (const TensorToWrite& t : tensors) out += t.data;
  return out;
}

}  // namespace dartserve::model

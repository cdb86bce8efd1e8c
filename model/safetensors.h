// safetensors reader and writer (https://github.com/huggingface/safetensors format):
//   8-byte little-endian header length N | N bytes of JSON header | tensor data.
// The header maps tensor names to {"dtype", "shape", "data_offsets": [begin, end]} (offsets into
// the data section) plus an optional "__metadata__" string map.
//
// The reader is written for untrusted files: every length, offset and shape is checked before use
// and each problem returns an absl::Status naming it (bad magic, bad JSON, truncated file,
// oversized header, offsets out of range or overlapping, size not matching dtype x shape). It never
// crashes (fuzz/safetensors_fuzzer.cc). Memory: the file's bytes, plus the header's JSON while it
// is parsed: nlohmann_json's tree takes up to about 37 times the header's size (measured: 37x for
// deeply nested arrays, 11-21x for long lists of short strings or metadata), so up to about 4 GB
// at kMaxHeaderBytes; a dartserve checkpoint's header is about 10 KB. No torch here: conversion to
// tensors and checks against a model's parameters live in checkpoint.h.
#ifndef DARTSERVE_MODEL_SAFETENSORS_H_
#define DARTSERVE_MODEL_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace dartserve::model {

enum class DType { kF32, kF16, kBF16 };
const char* DTypeName(DType dtype);
int DTypeSize(DType dtype);

struct TensorInfo {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // offsets into the data section
  uint64_t end = 0;
  int64_t numel() const;
};

class SafetensorsFile {
 public:
  // Largest header accepted (the format's reference implementation uses 100 MB).
  static constexpr uint64_t kMaxHeaderBytes = 100u << 20;

  // Parses a whole file's bytes (takes ownership).
  static absl::StatusOr<SafetensorsFile> Parse(std::string bytes);
  // Reads and parses `path`. NOT_FOUND when missing.
  static absl::StatusOr<SafetensorsFile> Read(const std::string& path);

  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // The raw little-endian bytes of `info` (which must come from this file).
  std::string_view Data(const TensorInfo& info) const;

 private:
  std::string bytes_;
  uint64_t data_start_ = 0;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

struct TensorToWrite {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::string data;  // raw little-endian bytes, numel * DTypeSize(dtype) of them
};

// Serialises tensors (in the given order) and metadata. INVALID_ARGUMENT when a tensor's byte
// count does not match its dtype and shape, or names repeat.
absl::StatusOr<std::string> SerializeSafetensors(
    const std::vector<TensorToWrite>& tensors,
    const std::map<std::string, std::string>& metadata = {});

}  // namespace dartserve::model

#endif  // DARTSERVE_MODEL_SAFETENSORS_H_

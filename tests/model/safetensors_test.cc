#include "model/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>

#include "nlohmann/json.hpp"

namespace dartserve::model {
namespace {

using ::testing::HasSubstr;

std::string Floats(std::initializer_list<float> v) {
  std::string out(v.size() * 4, '\0');
  std::memcpy(out.data(), std::data(v), out.size());
  return out;
}

// A file from a raw header string and data bytes.
std::string RawFile(const std::string& header, const std::string& data) {
  std::string out;
  const uint64_t len = header.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((len >> (8 * i)) & 0xff));
  return out + header + data;
}

void ExpectCorrupt(const std::string& bytes, const std::string& needle) {
  absl::StatusOr<SafetensorsFile> f = SafetensorsFile::Parse(bytes);
  ASSERT_FALSE(f.ok()) << "expected an error containing: " << needle;
  EXPECT_EQ(f.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(f.status().message()), HasSubstr(needle));
}

TEST(SafetensorsTest, RoundTripAllDtypes) {
  std::vector<TensorToWrite> tensors = {
      {"a.weight", DType::kF32, {2, 3}, Floats({1, 2, 3, 4, 5, 6})},
      {"b", DType::kF16, {2}, std::string("\x00\x3c\x00\xc0", 4)},  // 1.0, -2.0
      {"c", DType::kBF16, {1, 1}, std::string("\x80\x3f", 2)},      // 1.0
      {"empty", DType::kF32, {0, 4}, ""},
  };
  absl::StatusOr<std::string> bytes = SerializeSafetensors(tensors, {{"format", "pt"}});
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  absl::StatusOr<SafetensorsFile> f = SafetensorsFile::Parse(*bytes);
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ(f->tensors().size(), 4u);
  EXPECT_EQ(f->metadata().at("format"), "pt");
  for (const TensorToWrite& t : tensors) {
    const TensorInfo& info = f->tensors().at(t.name);
    EXPECT_EQ(info.dtype, t.dtype) << t.name;
    EXPECT_EQ(info.shape, t.shape) << t.name;
    EXPECT_EQ(f->Data(info), t.data) << t.name;
  }
  // Data starts 8-byte aligned after the padded header.
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes->data(), 8);
  EXPECT_EQ((8 + header_len) % 8, 0u);
}

TEST(SafetensorsTest, SerializeRejectsSizeMismatchAndDuplicates) {
  EXPECT_FALSE(SerializeSafetensors({{"x", DType::kF32, {3}, Floats({1, 2})}}).ok());
  EXPECT_FALSE(SerializeSafetensors(
                   {{"x", DType::kF32, {1}, Floats({1})}, {"x", DType::kF32, {1}, Floats({1})}})
                   .ok());
}

TEST(SafetensorsTest, Truncated) {
  ExpectCorrupt("", "truncated");
  ExpectCorrupt(std::string("\x10\x00\x00", 3), "truncated");
  ExpectCorrupt(
      RawFile(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", "").substr(0, 20),
      "truncated");
}

TEST(SafetensorsTest, OversizedHeader) {
  std::string bytes(16, '\0');
  const uint64_t huge = uint64_t{1} << 40;
  std::memcpy(bytes.data(), &huge, 8);
  ExpectCorrupt(bytes, "oversized header");
}

TEST(SafetensorsTest, BadMagicAndBadJson) {
  ExpectCorrupt(RawFile("GGUF-not-json", ""), "bad magic");
  ExpectCorrupt(RawFile("{\"x\": ", ""), "bad JSON");
  ExpectCorrupt(RawFile(R"({"__metadata__": 3})", ""), "bad JSON");
}

TEST(SafetensorsTest, BadEntries) {
  ExpectCorrupt(RawFile(R"({"x":{"dtype":"F32","shape":[1]}})", ""), "data_offsets");
  ExpectCorrupt(
      RawFile(R"({"x":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", std::string(8, '\0')),
      "unsupported dtype");
  ExpectCorrupt(
      RawFile(R"({"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", std::string(4, '\0')),
      "shape");
  ExpectCorrupt(
      RawFile(R"({"x":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})",
              std::string(4, '\0')),
      "larger than the file");
}

TEST(SafetensorsTest, OffsetsOutOfRange) {
  ExpectCorrupt(
      RawFile(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", std::string(4, '\0')),
      "offsets out of range");
  ExpectCorrupt(
      RawFile(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", std::string(8, '\0')),
      "offsets out of range");
}

TEST(SafetensorsTest, SizeNotMatchingShape) {
  ExpectCorrupt(
      RawFile(R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, '\0')),
      "need 12");
}

TEST(SafetensorsTest, OverlappingTensors) {
  ExpectCorrupt(RawFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                        R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                        std::string(12, '\0')),
                "overlap");
}

// A value nested a million levels deep parses (nlohmann's parser is iterative), but dump()
// recurses once per level: quoting it in the error overflowed the stack.
TEST(SafetensorsTest, DeeplyNestedDtypeIsAnErrorNotAStackOverflow) {
  constexpr int kDepth = 1'000'000;
  const std::string dtype = std::string(kDepth, '[') + std::string(kDepth, ']');
  ExpectCorrupt(RawFile(R"({"x":{"dtype":)" + dtype + R"(,"shape":[1],"data_offsets":[0,4]}})",
                        std::string(4, '\0')),
                "tensor 'x': unsupported dtype an array");
}

TEST(SafetensorsTest, MissingFile) {
  absl::StatusOr<SafetensorsFile> f = SafetensorsFile::Read("/nonexistent/model.safetensors");
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace dartserve::model

#include "model/text/tokenizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "common/file_io.h"
#include "model/safetensors.h"
#include "tests/testing/tiny_model.h"

namespace dartserve::model {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

using dartserve::testing::ShapeCaptions;

class TokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // One folder per process: ctest runs each test of this suite as its own process, in
    // parallel, and each process sets the suite up and tears it down.
    dir_ = new fs::path(fs::path(::testing::TempDir()) /
                        ("tokenizer_test_" + std::to_string(::getpid())));
    fs::remove_all(*dir_);
    fs::create_directories(*dir_);
    ASSERT_TRUE(TrainTokenizer(ShapeCaptions(), kVocab, Path("a.model")).ok());
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
  }
  static std::string Path(const std::string& name) { return (*dir_ / name).string(); }

  static constexpr int kVocab = 400;
  static fs::path* dir_;
};
fs::path* TokenizerTest::dir_ = nullptr;

TEST_F(TokenizerTest, RoundTripsSeenAndUnseenPhrases) {
  auto tok = Tokenizer::Load(Path("a.model"));
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_GT(tok->vocab_size(), 260);  // specials + 256 byte pieces + caption pieces
  EXPECT_LE(tok->vocab_size(), kVocab);
  for (const std::string text : {
           "a small red circle at the top left on a white background",    // seen verbatim
           "blue square, center",                                         // seen verbatim
           "a large cyan ring at the bottom right on a gray background",  // new combination
           "two crosses: orange and brown",                               // new words
           "a violet hexagon, quickly! 42 (zebra) \xc3\xa9t\xc3\xa9",     // unseen chars and UTF-8
       }) {
    auto ids = tok->Encode(text, 128);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(ids->front(), tok->bos_id());
    EXPECT_EQ(ids->back(), tok->eos_id());
    for (const int id : *ids) EXPECT_NE(id, Tokenizer::kUnkId) << text;  // byte fallback
    auto back = tok->Decode(*ids);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, text) << "ids: " << ids->size();
  }
}

TEST_F(TokenizerTest, SeenCaptionsTokenizeCompactly) {
  // A tokenizer trained on the captions should spend about one piece per word on them; a
  // character-level fallback would need ~5x more and eat the text encoder's context.
  auto tok = Tokenizer::Load(Path("a.model"));
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto ids = tok->Encode("a small red circle at the top left on a white background", 128);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_LE(ids->size(), 2u + 14u) << "11 words; vocab " << tok->vocab_size();
}

TEST_F(TokenizerTest, NormalisesCaseAndWhitespace) {
  auto tok = Tokenizer::Load(Path("a.model"));
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ(NormalizePrompt("  A  Small\tRED\n circle  "), "a small red circle");
  auto a = tok->Encode("  A  Small\tRED\n circle  ", 64);
  auto b = tok->Encode("a small red circle", 64);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
  EXPECT_EQ(*tok->Decode(*a), "a small red circle");
}

TEST_F(TokenizerTest, EmptyPromptIsJustTheSpecialTokens) {
  auto tok = Tokenizer::Load(Path("a.model"));
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_THAT(*tok->Encode("", 8), ElementsAre(Tokenizer::kBosId, Tokenizer::kEosId));
  EXPECT_THAT(*tok->Encode(" \t\n", 8), ElementsAre(Tokenizer::kBosId, Tokenizer::kEosId));
  EXPECT_THAT(*tok->EncodePadded("", 4), ElementsAre(2, 3, 0, 0));
  EXPECT_EQ(tok->pad_id(), 0);
  EXPECT_EQ(*tok->Decode(*tok->EncodePadded("red ring", 16)), "red ring");
}

TEST_F(TokenizerTest, OverLengthPromptIsAnErrorNotACut) {
  auto tok = Tokenizer::Load(Path("a.model"));
  ASSERT_TRUE(tok.ok()) << tok.status();
  const std::string text = "a small red circle at the top left on a white background";
  auto full = tok->Encode(text, 128);
  ASSERT_TRUE(full.ok());
  const int needed = static_cast<int>(full->size());
  EXPECT_TRUE(tok->Encode(text, needed).ok());  // exactly at the limit is fine
  auto cut = tok->Encode(text, needed - 1);
  ASSERT_FALSE(cut.ok());
  EXPECT_EQ(cut.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string message(cut.status().message());
  EXPECT_THAT(message, HasSubstr("too long"));
  EXPECT_THAT(message, HasSubstr("is " + std::to_string(needed) + " tokens"));
  EXPECT_THAT(message, HasSubstr("at most " + std::to_string(needed - 1)));
  EXPECT_EQ(tok->EncodePadded(text, needed - 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(tok->Encode("", 1).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(TokenizerTest, TrainingIsDeterministic) {
  ASSERT_TRUE(TrainTokenizer(ShapeCaptions(), kVocab, Path("b.model")).ok());
  auto a = ReadFile(Path("a.model"));
  auto b = ReadFile(Path("b.model"));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);  // byte-identical model files
  auto ta = Tokenizer::Load(Path("a.model"));
  auto tb = Tokenizer::Load(Path("b.model"));
  ASSERT_TRUE(ta.ok() && tb.ok());
  for (const std::string text : {"a medium purple triangle on the right", "green cross"}) {
    EXPECT_EQ(*ta->Encode(text, 64), *tb->Encode(text, 64));
  }
}

TEST_F(TokenizerTest, DecodeRejectsOutOfVocabIds) {
  auto tok = Tokenizer::Load(Path("a.model"));
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ(tok->Decode({2, tok->vocab_size(), 3}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(tok->Decode({-1}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(TokenizerTest, LoadErrorsNameTheFile) {
  auto missing = Tokenizer::Load(Path("missing.model"));
  EXPECT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("missing.model"));
  ASSERT_TRUE(WriteFileAtomically(Path("junk.model"), "not a sentencepiece model").ok());
  auto junk = Tokenizer::Load(Path("junk.model"));
  EXPECT_EQ(junk.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(junk.status().message()), HasSubstr("junk.model"));
}

// Where the normalizer's precompiled_charsmap lies in a model TrainTokenizer wrote: protobuf writes
// the normalizer spec's name "nmt_nfkc" (field 1) and then the charsmap (field 2, after its
// varint length). {0, 0} when not found.
std::pair<size_t, size_t> FindCharsMap(const std::string& model) {
  const std::string marker("\x0a\x08nmt_nfkc\x12", 11);
  size_t pos = model.find(marker);
  if (pos == std::string::npos) return {0, 0};
  pos += marker.size();
  uint64_t size = 0;
  for (int shift = 0; pos < model.size(); shift += 7) {
    const uint8_t b = static_cast<uint8_t>(model[pos++]);
    size |= static_cast<uint64_t>(b & 0x7F) << shift;
    if ((b & 0x80) == 0) return {pos, size};
  }
  return {0, 0};
}

void PutUnit(char* at, uint32_t unit) { std::memcpy(at, &unit, sizeof(unit)); }

// Found by fuzz/tokenizer_fuzzer.cc: SentencePiece 0.1.97 walks a model's normalization trie
// without bounds checks, so a tokenizer.model with a corrupt trie loaded and then crashed the
// process at its first Encode. It is now refused when it is loaded.
TEST_F(TokenizerTest, CorruptNormalizationRulesAreRefusedAtLoad) {
  absl::StatusOr<std::string> model = ReadFile(Path("a.model"));
  ASSERT_TRUE(model.ok()) << model.status();
  const std::pair<size_t, size_t> charsmap = FindCharsMap(*model);
  ASSERT_GT(charsmap.second, 1024u) << "no nmt_nfkc charsmap found";
  // The charsmap: a 4-byte trie size, the trie's 32-bit units (darts-clone), the strings. Each
  // edit gets the charsmap's first byte and its size.
  using Edit = std::function<void(char* blob, size_t size)>;
  const std::vector<std::pair<std::string, Edit>> cases = {
      {"root unit sends the search outside the trie",
       [](char* blob, size_t) { PutUnit(blob + 4, 0xFFFFFC00u); }},
      {"trie size runs past the charsmap (SentencePiece accepts up to 3 bytes past)",
       [](char* blob, size_t size) { PutUnit(blob, static_cast<uint32_t>(size - 1)); }},
      {"every rule's replacement points past the strings",
       [](char* blob, size_t) {
         uint32_t trie_bytes = 0;
         std::memcpy(&trie_bytes, blob, 4);
         char* units = blob + 4;
         for (size_t i = 0; i < trie_bytes / 4; ++i) {
           uint32_t u = 0;
           std::memcpy(&u, units + 4 * i, 4);
           const bool transition = (u & ((1u << 31) | 0xFF)) <= 0xFF;
           const bool leaf = ((u >> 8) & 1) == 1;
           const size_t child = i ^ ((u >> 10) << ((u & (1u << 9)) >> 6));
           if (transition && leaf && child < trie_bytes / 4) PutUnit(units + 4 * child, ~0u);
         }
       }},
  };
  for (const auto& [what, edit] : cases) {
    std::string edited = *model;
    edit(edited.data() + charsmap.first, charsmap.second);
    absl::StatusOr<Tokenizer> tokenizer = Tokenizer::FromSerialized(edited);
    ASSERT_FALSE(tokenizer.ok()) << what;
    EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kDataLoss) << what;
    EXPECT_THAT(std::string(tokenizer.status().message()), HasSubstr("precompiled_charsmap"))
        << what;
  }
  // The untouched model loads: the checks accept SentencePiece's own nmt_nfkc rules.
  EXPECT_TRUE(Tokenizer::FromSerialized(*model).ok());
}

// Found by fuzz/tokenizer_fuzzer.cc: loading a unigram model with a piece that starts with a NUL
// byte makes SentencePiece 0.1.97 throw (darts-clone: "zero-length key"); the exception crossed
// the module boundary and out of FromSerialized, and in dartserve (which catches none) ended the
// process in std::terminate.
TEST_F(TokenizerTest, ModelThatMakesSentencePieceThrowIsRefused) {
  absl::StatusOr<std::string> model = ReadFile(Path("a.model"));
  ASSERT_TRUE(model.ok()) << model.status();
  // Appended protobuf fields merge into the model: trainer_spec (2) { model_type (3): UNIGRAM },
  // and one more piece (1) { piece (1): "\0" }.
  const std::string unigram("\x12\x02\x18\x01", 4);
  const std::string nul_piece("\x0a\x03\x0a\x01\x00", 5);
  absl::StatusOr<Tokenizer> tokenizer = Tokenizer::FromSerialized(*model + unigram + nul_piece);
  ASSERT_FALSE(tokenizer.ok());
  EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(tokenizer.status().message()), HasSubstr("zero-length key"));
  // The same model without the NUL piece loads (as a unigram model).
  EXPECT_TRUE(Tokenizer::FromSerialized(*model + unigram).ok());
}

TEST(TrainTokenizerTest, RejectsBadArguments) {
  const std::string out = (fs::path(::testing::TempDir()) / "never.model").string();
  EXPECT_EQ(TrainTokenizer(ShapeCaptions(), 100, out).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TrainTokenizer({"", "  "}, 400, out).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(fs::exists(out));
}

}  // namespace
}  // namespace dartserve::model

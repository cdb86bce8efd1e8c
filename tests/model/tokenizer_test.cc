#include "model/text/tokenizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>
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

TEST(TrainTokenizerTest, RejectsBadArguments) {
  const std::string out = (fs::path(::testing::TempDir()) / "never.model").string();
  EXPECT_EQ(TrainTokenizer(ShapeCaptions(), 100, out).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TrainTokenizer({"", "  "}, 400, out).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(fs::exists(out));
}

}  // namespace
}  // namespace dartserve::model

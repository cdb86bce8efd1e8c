// libFuzzer target: Tokenizer::FromSerialized on arbitrary bytes, as a checkpoint's
// tokenizer.model, then Encode and Decode with the model it accepted.
//
// The whole input is the model, so the seed corpus is plain model files. Prompts are fixed ones
// (ASCII, UTF-8, invalid UTF-8, a long one) plus the input's last bytes.
//
// Besides "no crash, leak or undefined behaviour", it checks what the tokenizer promises
// (model/text/tokenizer.h):
//  - a model is rejected with DATA_LOSS (or FAILED_PRECONDITION if the SentencePiece module
//    cannot be loaded, which aborts the run: nothing would be tested);
//  - an accepted model's Encode gives [BOS, ids in the vocabulary..., EOS] within max_len, or
//    INVALID_ARGUMENT; EncodePadded pads to exactly max_len;
//  - Decode accepts the ids in the vocabulary and rejects the ids outside it.
//
// SentencePiece itself is Debian's uninstrumented library (see CMakeLists.txt): coverage does not
// steer into its model parser, so its part is found by mutating the seed models, not explored.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "fuzz_check.h"
#include "model/text/tokenizer.h"

namespace dartserve::model {
namespace {

void CheckEncode(const Tokenizer& tokenizer, std::string_view prompt, int max_len) {
  absl::StatusOr<std::vector<int>> ids = tokenizer.Encode(prompt, max_len);
  if (!ids.ok()) {
    FUZZ_CHECK(ids.status().code() == absl::StatusCode::kInvalidArgument);
    return;
  }
  FUZZ_CHECK(ids->size() >= 2 && ids->size() <= static_cast<size_t>(max_len));
  FUZZ_CHECK(ids->front() == Tokenizer::kBosId && ids->back() == Tokenizer::kEosId);
  for (const int id : *ids) FUZZ_CHECK(id >= 0 && id < tokenizer.vocab_size());
  absl::StatusOr<std::vector<int>> padded = tokenizer.EncodePadded(prompt, max_len);
  FUZZ_CHECK(padded.ok() && padded->size() == static_cast<size_t>(max_len));
  FUZZ_CHECK(std::equal(ids->begin(), ids->end(), padded->begin()));
  // Decoding what Encode made succeeds (its ids are in the vocabulary).
  FUZZ_CHECK(tokenizer.Decode(*ids).ok());
}

void CheckTokenizer(const Tokenizer& tokenizer, std::string_view input) {
  const int vocab = tokenizer.vocab_size();
  FUZZ_CHECK(vocab > Tokenizer::kEosId);
  const std::string long_prompt(3000, 'a');
  for (const std::string_view prompt :
       {std::string_view(""), std::string_view("a small red circle at the top left"),
        std::string_view("  Two   CROSSES:\torange\nand brown  "),
        std::string_view("\xc3\xa9t\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"),
        std::string_view("\xff\xfe\xc3 \x80\x80 \xed\xa0\x80"), std::string_view(long_prompt),
        input.substr(input.size() - std::min<size_t>(input.size(), 64))}) {
    for (const int max_len : {1, 8, 4096}) CheckEncode(tokenizer, prompt, max_len);
  }
  // Every id decodes (all together, and one of them alone); ids outside the vocabulary are
  // refused. One Decode per id would make this target several times slower.
  std::vector<int> all(static_cast<size_t>(std::min(vocab, 1 << 16)));
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int>(i);
  FUZZ_CHECK(tokenizer.Decode(all).ok());
  FUZZ_CHECK(tokenizer.Decode({static_cast<int>(input.size() % all.size())}).ok());
  for (const int bad : {-1, vocab, vocab + 1}) {
    absl::StatusOr<std::string> text = tokenizer.Decode({bad});
    FUZZ_CHECK(!text.ok() && text.status().code() == absl::StatusCode::kInvalidArgument);
  }
  FUZZ_CHECK(tokenizer.serialized() == input);
}

}  // namespace
}  // namespace dartserve::model

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using dartserve::model::Tokenizer;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<Tokenizer> tokenizer = Tokenizer::FromSerialized(input);
  if (!tokenizer.ok()) {
    if (tokenizer.status().code() == absl::StatusCode::kFailedPrecondition) {
      std::fprintf(stderr, "%s\n", std::string(tokenizer.status().message()).c_str());
      std::abort();
    }
    FUZZ_CHECK(tokenizer.status().code() == absl::StatusCode::kDataLoss);
    return 0;
  }
  dartserve::model::CheckTokenizer(*tokenizer, input);
  return 0;
}

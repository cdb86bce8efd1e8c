// Tokenizer: prompt text -> token ids for the text encoder, backed by a SentencePiece model.
//
// A text-conditioned checkpoint folder holds `tokenizer.model` (a serialized SentencePiece
// ModelProto) beside config.json; the trainer builds it with TrainTokenizer() from the training
// captions when it is missing, so a checkpoint's tokenizer always matches the data it saw.
//
// Contract of Encode():
//   - The text is normalised first (NormalizePrompt: ASCII lowercase, whitespace runs collapsed to
//     one space, leading/trailing whitespace dropped), the same way the training captions were.
//   - The result is [bos_id, pieces..., eos_id]. BOS/EOS are always present, so the empty prompt
//     (the unconditional branch of classifier-free guidance) is exactly {bos_id, eos_id}.
//   - max_len counts every id including BOS and EOS. A prompt that needs more is an
//     INVALID_ARGUMENT error naming its length and the limit; it is never silently cut, because a
//     truncated prompt would generate an image of something the user did not ask for.
//   - Characters never seen in training are spelled as UTF-8 byte pieces (byte fallback), so no
//     prompt maps to <unk> and Decode(Encode(x)) == NormalizePrompt(x) for any valid UTF-8 x.
//
// Fixed special ids (set by TrainTokenizer; checked on load): pad 0, unk 1, bos 2, eos 3.
//
// SentencePiece runs in a module loaded on first use (see sentencepiece_backend.h for why); when
// it cannot be loaded, Load/FromSerialized/TrainTokenizer return FAILED_PRECONDITION naming the
// paths tried. It is searched for beside the running executable, then at its build-tree path,
// then by the dynamic loader's usual search (LD_LIBRARY_PATH, RUNPATH, system directories).
//
// Thread-safety: a loaded Tokenizer is immutable; its const methods may be called concurrently.
#ifndef DARTSERVE_MODEL_TEXT_TOKENIZER_H_
#define DARTSERVE_MODEL_TEXT_TOKENIZER_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace dartserve::model {

class SentencePieceBackend;  // model/text/sentencepiece_backend.h

inline constexpr char kTokenizerFile[] = "tokenizer.model";

// The normalisation applied to prompts and to training captions: ASCII letters lowercased,
// every run of ASCII whitespace replaced by one space, leading and trailing whitespace removed.
// Non-ASCII bytes pass through unchanged (SentencePiece applies NFKC on top).
std::string NormalizePrompt(std::string_view text);

class Tokenizer {
 public:
  static constexpr int kPadId = 0;
  static constexpr int kUnkId = 1;
  static constexpr int kBosId = 2;
  static constexpr int kEosId = 3;

  // Reads a serialized SentencePiece model from `path`. NOT_FOUND when the file is absent,
  // DATA_LOSS when it does not parse, lacks the special ids above, or carries normalization rules
  // (a precompiled charsmap) that SentencePiece would read out of bounds with; errors name the
  // file. Never crashes on a corrupt file (fuzz/tokenizer_fuzzer.cc).
  static absl::StatusOr<Tokenizer> Load(const std::string& path);
  // The same from the model's bytes (e.g. the contents of tokenizer.model).
  static absl::StatusOr<Tokenizer> FromSerialized(std::string_view serialized);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // [BOS, pieces..., EOS] for NormalizePrompt(text); see the contract at the top of the file.
  // INVALID_ARGUMENT when that needs more than `max_len` ids, or when max_len < 2.
  absl::StatusOr<std::vector<int>> Encode(std::string_view text, int max_len) const;
  // Encode() followed by padding with pad_id() to exactly `max_len` ids.
  absl::StatusOr<std::vector<int>> EncodePadded(std::string_view text, int max_len) const;

  // Text of `ids`; pad, BOS and EOS are skipped. INVALID_ARGUMENT for an id outside the vocab.
  absl::StatusOr<std::string> Decode(absl::Span<const int> ids) const;

  int vocab_size() const;
  int pad_id() const { return kPadId; }
  int bos_id() const { return kBosId; }
  int eos_id() const { return kEosId; }
  // The model file's bytes, for writing into a checkpoint folder.
  const std::string& serialized() const { return serialized_; }

 private:
  Tokenizer(std::unique_ptr<SentencePieceBackend> backend, std::string serialized);

  std::unique_ptr<SentencePieceBackend> backend_;
  std::string serialized_;
};

// Trains a SentencePiece BPE model on `sentences` (normalised with NormalizePrompt) and writes
// it atomically to `out_path`. `vocab_size` is an upper bound that includes the 4 special ids and
// the 256 byte-fallback pieces, so it must be > 260; a small caption corpus may yield fewer.
// Deterministic: the same sentences and vocab_size give a byte-identical file (one trainer
// thread, no sentence sampling or shuffling). INVALID_ARGUMENT for no non-empty sentences or a
// vocab_size out of range; INTERNAL with SentencePiece's message when its trainer fails.
// SentencePiece's trainer progress log is silenced (its global log level is set to warnings).
// Training a caption corpus of a few thousand lines takes well under a second.
absl::Status TrainTokenizer(absl::Span<const std::string> sentences, int vocab_size,
                            const std::string& out_path);

}  // namespace dartserve::model

#endif  // DARTSERVE_MODEL_TEXT_TOKENIZER_H_

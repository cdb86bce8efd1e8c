// The SentencePiece calls the Tokenizer needs, behind an interface that uses standard types only.
//
// Why an interface and a separately loaded module: Debian's libsentencepiece bundles its own copy
// of protobuf-lite and exports those symbols, while LibTorch pulls in Debian's libprotobuf (a
// different version). Linking both into one binary makes the dynamic linker bind one library's
// protobuf calls to the other's code, and the process crashes before main(). So SentencePiece
// lives in `libdartserve_sentencepiece.so` (sentencepiece_backend.cc, which includes no Abseil and
// no torch), and tokenizer.cc loads it with dlopen(RTLD_LOCAL | RTLD_DEEPBIND): the module and
// libsentencepiece resolve protobuf symbols among themselves first and never leak them into the
// global scope. Only this header's types cross the boundary (same compiler and libstdc++).
#ifndef DARTSERVE_MODEL_TEXT_SENTENCEPIECE_BACKEND_H_
#define DARTSERVE_MODEL_TEXT_SENTENCEPIECE_BACKEND_H_

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dartserve::model {

// One SentencePiece processor (after Load) plus the stateless trainer. Every method that can fail
// returns "" on success and SentencePiece's error message otherwise; none throws (what
// SentencePiece throws becomes the message). Const methods are safe to call concurrently once Load
// has succeeded.
class SentencePieceBackend {
 public:
  virtual ~SentencePieceBackend() = default;

  virtual std::string Load(std::string_view serialized_model) = 0;
  virtual std::string Encode(std::string_view text, std::vector<int>* ids) const = 0;
  virtual std::string Decode(const std::vector<int>& ids, std::string* text) const = 0;
  virtual int PieceSize() const = 0;
  // {pad, unk, bos, eos}; -1 where the model disables one.
  virtual std::vector<int> SpecialIds() const = 0;

  // Trains a model on `sentences` with SentencePiece trainer flags `args` (name, value) and stores
  // the serialized model in `model`.
  virtual std::string Train(const std::vector<std::string>& sentences,
                            const std::vector<std::pair<std::string, std::string>>& args,
                            std::string* model) = 0;
};

// The module's one exported symbol: a new backend the caller owns (delete it normally).
inline constexpr char kSentencePieceBackendFactory[] = "DartserveNewSentencePieceBackend";
using SentencePieceBackendFactory = SentencePieceBackend* (*)();

}  // namespace dartserve::model

#endif  // DARTSERVE_MODEL_TEXT_SENTENCEPIECE_BACKEND_H_

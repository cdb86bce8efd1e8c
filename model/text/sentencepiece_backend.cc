// The SentencePiece module (libdartserve_sentencepiece.so); see sentencepiece_backend.h for why
// it is a separately loaded module. It must not include Abseil: SentencePiece's headers declare
// their own absl::string_view, which clashes with Debian's Abseil.
#include "model/text/sentencepiece_backend.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstddef>
#include <exception>
#include <string>
#include <unordered_map>
#include <vector>

namespace dartserve::model {
namespace {

std::string Message(const sentencepiece::util::Status& status) {
  return status.ok() ? std::string() : std::string(status.error_message());
}

// Runs a SentencePiece call, turning what it throws into an error message: exceptions must not
// cross the module boundary. SentencePiece 0.1.97 lets some escape: loading a unigram model with
// a piece that starts with a NUL byte throws darts-clone's "zero-length key" (found by
// fuzz/tokenizer_fuzzer.cc).
template <typename Call>
std::string Guarded(Call call) {
  try {
    return call();
  } catch (const std::exception& e) {
    return std::string("SentencePiece failed: ") + e.what();
  } catch (...) {
    return "SentencePiece failed with an unknown exception";
  }
}

// Feeds in-memory sentences to the trainer, so training needs no temporary file.
class VectorSentenceIterator : public sentencepiece::SentenceIterator {
 public:
  explicit VectorSentenceIterator(const std::vector<std::string>& sentences)
      : sentences_(sentences) {}
  bool done() const override { return index_ >= sentences_.size(); }
  void Next() override { ++index_; }
  const std::string& value() const override { return sentences_[index_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  const std::vector<std::string>& sentences_;
  size_t index_ = 0;
};

class Backend : public SentencePieceBackend {
 public:
  std::string Load(std::string_view serialized_model) override {
    return Guarded([&] { return Message(processor_.LoadFromSerializedProto(serialized_model)); });
  }
  std::string Encode(std::string_view text, std::vector<int>* ids) const override {
    return Guarded([&] { return Message(processor_.Encode(text, ids)); });
  }
  std::string Decode(const std::vector<int>& ids, std::string* text) const override {
    return Guarded([&] { return Message(processor_.Decode(ids, text)); });
  }
  int PieceSize() const override { return processor_.GetPieceSize(); }
  std::vector<int> SpecialIds() const override {
    return {processor_.pad_id(), processor_.unk_id(), processor_.bos_id(), processor_.eos_id()};
  }
  std::string Train(const std::vector<std::string>& sentences,
                    const std::vector<std::pair<std::string, std::string>>& args,
                    std::string* model) override {
    const std::unordered_map<std::string, std::string> kwargs(args.begin(), args.end());
    VectorSentenceIterator iterator(sentences);
    return Guarded([&] {
      return Message(sentencepiece::SentencePieceTrainer::Train(kwargs, &iterator, model));
    });
  }

 private:
  sentencepiece::SentencePieceProcessor processor_;
};

}  // namespace
}  // namespace dartserve::model

extern "C" __attribute__((visibility("default"))) dartserve::model::SentencePieceBackend*
DartserveNewSentencePieceBackend() {
  return new dartserve::model::Backend();
}

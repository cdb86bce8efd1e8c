#include "model/text/tokenizer.h"

#include <dlfcn.h>

#include <cstddef>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/file_io.h"
#include "model/safetensors.h"
#include "model/text/sentencepiece_backend.h"

namespace dartserve::model {
namespace {

bool IsAsciiSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

constexpr char kModuleName[] = "libdartserve_sentencepiece.so";

// Directory of the running executable, or "" when /proc is unavailable.
std::string ExecutableDir() {
  std::error_code error;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", error);
  return error ? std::string() : exe.parent_path().string();
}

absl::StatusOr<SentencePieceBackendFactory> OpenBackendModule() {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  // The sanitizer runtimes abort the process on dlopen(RTLD_DEEPBIND); fail cleanly instead.
  return absl::FailedPreconditionError(
      "SentencePiece is unavailable in sanitizer builds: its module needs dlopen(RTLD_DEEPBIND)");
#endif
  std::vector<std::string> candidates;
  if (const std::string dir = ExecutableDir(); !dir.empty()) {
    candidates.push_back(absl::StrCat(dir, "/", kModuleName));
  }
#ifdef DARTSERVE_SENTENCEPIECE_MODULE
  candidates.push_back(DARTSERVE_SENTENCEPIECE_MODULE);
#endif
  candidates.push_back(kModuleName);  // the dynamic loader's own search path
  std::vector<std::string> tried;
  for (const std::string& path : candidates) {
    const bool bare_name = path.find('/') == std::string::npos;
    if (!bare_name && !std::filesystem::exists(path)) continue;
    // RTLD_LOCAL keeps SentencePiece's bundled protobuf out of the global scope; RTLD_DEEPBIND
    // makes the module and libsentencepiece bind to their own copies first. Never dlclose'd: the
    // factory's code must outlive every backend it made.
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (handle == nullptr) {
      const char* error = dlerror();
      tried.push_back(absl::StrCat(path, " (", error ? error : "unknown error", ")"));
      continue;
    }
    void* symbol = dlsym(handle, kSentencePieceBackendFactory);
    if (symbol == nullptr) {
      tried.push_back(absl::StrCat(path, " (no ", kSentencePieceBackendFactory, ")"));
      continue;
    }
    return reinterpret_cast<SentencePieceBackendFactory>(symbol);
  }
  return absl::FailedPreconditionError(
      absl::StrCat("the SentencePiece module ", kModuleName,
                   " could not be loaded; tried: ", absl::StrJoin(tried, "; ")));
}

// A new backend from the module, which is loaded once per process (the loader's own state is
// process-wide anyway; caching the result avoids a dlopen per tokenizer).
absl::StatusOr<std::unique_ptr<SentencePieceBackend>> NewBackend() {
  static const auto* const factory =
      new absl::StatusOr<SentencePieceBackendFactory>(OpenBackendModule());
  if (!factory->ok()) return factory->status();
  std::unique_ptr<SentencePieceBackend> backend((**factory)());
  if (backend == nullptr) return absl::InternalError("the SentencePiece module returned null");
  return backend;
}

}  // namespace

std::string NormalizePrompt(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  bool pending_space = false;
  for (const char c : text) {
    if (IsAsciiSpace(c)) {
      pending_space = !out.empty();
      continue;
    }
    if (pending_space) out.push_back(' ');
    pending_space = false;
    out.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c);
  }
  return out;
}

Tokenizer::Tokenizer(std::unique_ptr<SentencePieceBackend> backend, std::string serialized)
    : backend_(std::move(backend)), serialized_(std::move(serialized)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

absl::StatusOr<Tokenizer> Tokenizer::Load(const std::string& path) {
  absl::StatusOr<std::string> bytes = ReadFile(path);
  if (!bytes.ok()) return bytes.status();
  absl::StatusOr<Tokenizer> tokenizer = FromSerialized(*bytes);
  if (!tokenizer.ok()) {
    return absl::Status(tokenizer.status().code(),
                        absl::StrCat(path, ": ", tokenizer.status().message()));
  }
  return tokenizer;
}

absl::StatusOr<Tokenizer> Tokenizer::FromSerialized(std::string_view serialized) {
  absl::StatusOr<std::unique_ptr<SentencePieceBackend>> backend = NewBackend();
  if (!backend.ok()) return backend.status();
  if (const std::string error = (*backend)->Load(serialized); !error.empty()) {
    return absl::DataLossError(absl::StrCat("not a SentencePiece model: ", error));
  }
  const std::vector<int> special = (*backend)->SpecialIds();
  if (special != std::vector<int>{kPadId, kUnkId, kBosId, kEosId}) {
    return absl::DataLossError(
        absl::StrCat("tokenizer special ids must be pad 0, unk 1, bos 2, eos 3; the model has ",
                     absl::StrJoin(special, ", "), " (train it with TrainTokenizer)"));
  }
  return Tokenizer(*std::move(backend), std::string(serialized));
}

absl::StatusOr<std::vector<int>> Tokenizer::Encode(std::string_view text, int max_len) const {
  if (max_len < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_len must be >= 2 (BOS and EOS), got ", max_len));
  }
  std::vector<int> pieces;
  const std::string normalized = NormalizePrompt(text);
  if (!normalized.empty()) {
    if (const std::string error = backend_->Encode(normalized, &pieces); !error.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("cannot tokenize prompt: ", error));
    }
  }
  const int length = static_cast<int>(pieces.size()) + 2;
  if (length > max_len) {
    return absl::InvalidArgumentError(
        absl::StrCat("prompt is too long: it is ", length, " tokens (including BOS and EOS), ",
                     "the model accepts at most ", max_len, "; shorten the prompt"));
  }
  std::vector<int> ids;
  ids.reserve(length);
  ids.push_back(kBosId);
  ids.insert(ids.end(), pieces.begin(), pieces.end());
  ids.push_back(kEosId);
  return ids;
}

absl::StatusOr<std::vector<int>> Tokenizer::EncodePadded(std::string_view text, int max_len) const {
  absl::StatusOr<std::vector<int>> ids = Encode(text, max_len);
  if (ids.ok()) ids->resize(max_len, kPadId);
  return ids;
}

absl::StatusOr<std::string> Tokenizer::Decode(absl::Span<const int> ids) const {
  const int vocab = vocab_size();
  std::vector<int> pieces;
  pieces.reserve(ids.size());
  for (const int id : ids) {
    if (id < 0 || id >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", id, " is outside the vocabulary [0, ", vocab, ")"));
    }
    if (id != kPadId && id != kBosId && id != kEosId) pieces.push_back(id);
  }
  std::string text;
  if (const std::string error = backend_->Decode(pieces, &text); !error.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot decode: ", error));
  }
  return text;
}

int Tokenizer::vocab_size() const { return backend_->PieceSize(); }

absl::Status TrainTokenizer(absl::Span<const std::string> sentences, int vocab_size,
                            const std::string& out_path) {
  // 4 special ids + 256 byte pieces are always in the vocabulary; SentencePiece also needs room
  // for at least the characters of the corpus.
  constexpr int kMinVocab = 4 + 256 + 1;
  constexpr int kMaxVocab = 1 << 20;
  if (vocab_size < kMinVocab || vocab_size > kMaxVocab) {
    return absl::InvalidArgumentError(
        absl::StrCat("vocab_size must be in [", kMinVocab, ", ", kMaxVocab, "], got ", vocab_size));
  }
  std::vector<std::string> normalized;
  normalized.reserve(sentences.size());
  for (const std::string& s : sentences) {
    std::string n = NormalizePrompt(s);
    if (!n.empty()) normalized.push_back(std::move(n));
  }
  if (normalized.empty()) {
    return absl::InvalidArgumentError("TrainTokenizer: no non-empty sentences to train on");
  }
  const std::vector<std::pair<std::string, std::string>> args = {
      // BPE rather than SentencePiece's default unigram: on a small caption corpus unigram keeps
      // few multi-character pieces (about 3 ids per word), BPE learns whole words (1 per word).
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(vocab_size)},
      // The corpus may not fill the vocabulary; BPE stops merging when no pair is left.
      {"hard_vocab_limit", "false"},
      {"pad_id", std::to_string(Tokenizer::kPadId)},
      {"unk_id", std::to_string(Tokenizer::kUnkId)},
      {"bos_id", std::to_string(Tokenizer::kBosId)},
      {"eos_id", std::to_string(Tokenizer::kEosId)},
      {"byte_fallback", "true"},
      {"character_coverage", "1.0"},
      // Determinism: one thread, every sentence used in order (no sampling, no shuffling).
      {"num_threads", "1"},
      {"input_sentence_size", "0"},
      {"shuffle_input_sentence", "false"},
      // Captions are short; allow whole-caption-length lines without SentencePiece's default cap.
      {"max_sentence_length", "4096"},
      {"minloglevel", "1"},
  };
  absl::StatusOr<std::unique_ptr<SentencePieceBackend>> backend = NewBackend();
  if (!backend.ok()) return backend.status();
  std::string serialized;
  if (const std::string error = (*backend)->Train(normalized, args, &serialized); !error.empty()) {
    return absl::InternalError(absl::StrCat("SentencePiece training failed: ", error));
  }
  return WriteFileAtomically(out_path, serialized);
}

}  // namespace dartserve::model

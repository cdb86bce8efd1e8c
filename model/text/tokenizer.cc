#include "model/text/tokenizer.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
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

// Whether AddressSanitizer or ThreadSanitizer is on: GCC says so with __SANITIZE_*__, clang with
// __has_feature.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define DARTSERVE_SANITIZER_RUNTIME 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define DARTSERVE_SANITIZER_RUNTIME 1
#endif
#endif

// DARTSERVE_SENTENCEPIECE_NO_DEEPBIND: for a process that has no protobuf of its own (no
// LibTorch), which may therefore load the module without RTLD_DEEPBIND (see below). The fuzz
// target of the tokenizer (fuzz/) is one: it runs under AddressSanitizer.
#ifdef DARTSERVE_SENTENCEPIECE_NO_DEEPBIND
constexpr int kDlopenFlags = RTLD_NOW | RTLD_LOCAL;
#else
constexpr int kDlopenFlags = RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND;
#endif

absl::StatusOr<SentencePieceBackendFactory> OpenBackendModule() {
#if defined(DARTSERVE_SANITIZER_RUNTIME) && !defined(DARTSERVE_SENTENCEPIECE_NO_DEEPBIND)
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
    void* handle = dlopen(path.c_str(), kDlopenFlags);
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

// ---- A model's normalization tries, checked before SentencePiece uses them ----
//
// A model's normalizer (and denormalizer) may carry a `precompiled_charsmap`: a 4-byte
// little-endian trie size, a darts-clone double-array trie of that many bytes (32-bit units)
// mapping input prefixes to offsets, and the NUL-separated replacement strings those offsets point
// into. SentencePiece 0.1.97 (Debian 12) trusts it: every Encode and Decode walks the trie without
// bounds checks, keeps at most 32 prefix matches in a stack array but reads as many as the trie
// yields, and reads the replacement at whatever offset a leaf holds. A corrupt tokenizer.model
// would crash the process at its first prompt (found by fuzz/tokenizer_fuzzer.cc). The checks
// below walk every state the search can reach, as the search does, and refuse the model when one of
// those reads could leave the trie or the strings.

// NormalizePrefix's array of prefix matches (Normalizer::kMaxTrieResultsSize).
constexpr int kMaxTrieMatches = 32;

absl::Status BadCharsMap(absl::string_view why) {
  return absl::DataLossError(
      absl::StrCat("corrupt normalization rules (precompiled_charsmap): ", why));
}

absl::Status CheckCharsMap(std::string_view blob) {
  if (blob.empty()) return absl::OkStatus();  // no rules: SentencePiece builds no trie
  uint32_t trie_bytes = 0;
  if (blob.size() < sizeof(trie_bytes)) return BadCharsMap("shorter than its trie size");
  std::memcpy(&trie_bytes, blob.data(), sizeof(trie_bytes));  // little-endian, as on x86 and arm
  if (trie_bytes > blob.size() - sizeof(trie_bytes)) {
    return BadCharsMap("the trie runs past its end");
  }
  const size_t units = trie_bytes / 4;
  if (units == 0) return BadCharsMap("the trie is empty");
  const char* const trie = blob.data() + sizeof(trie_bytes);
  const size_t strings = blob.size() - sizeof(trie_bytes) - trie_bytes;  // replacement bytes
  const auto unit = [trie](size_t i) {
    uint32_t u;
    std::memcpy(&u, trie + 4 * i, sizeof(u));
    return u;
  };
  // darts-clone's unit layout (DoubleArrayUnit).
  const auto offset = [](uint32_t u) -> size_t { return (u >> 10) << ((u & (1u << 9)) >> 6); };
  const auto has_leaf = [](uint32_t u) { return ((u >> 8) & 1) == 1; };
  const auto label = [](uint32_t u) { return u & ((1u << 31) | 0xFF); };
  const auto value = [](uint32_t u) { return u & ((1u << 31) - 1); };

  // A state is the position the search XORs the next input byte into: it then reads unit
  // state ^ byte for any byte, so the state's whole 256-unit block must be inside the trie. Depth
  // first over every reachable state; matches[s] is the most prefix matches a walk from s yields.
  enum : uint8_t { kNew, kOnPath, kDone };
  std::vector<uint8_t> mark(units, kNew);
  std::vector<uint8_t> matches(units, 0);
  struct Frame {
    size_t state;
    int next_byte;     // the next byte to try from this state
    int pending_leaf;  // 1 when the transition to the child being walked matched a rule
    int best;          // the most matches found from this state so far
  };
  const size_t root = offset(unit(0));  // the search starts at unit 0 and moves by its offset
  if ((root | 0xFF) >= units) return BadCharsMap("the trie's root points outside it");
  std::vector<Frame> stack = {{root, 0, 0, 0}};
  mark[root] = kOnPath;
  while (!stack.empty()) {
    Frame& frame = stack.back();
    if (frame.next_byte > 0xFF) {
      mark[frame.state] = kDone;
      matches[frame.state] = static_cast<uint8_t>(frame.best);
      const int found = frame.best;
      stack.pop_back();
      if (!stack.empty()) {
        Frame& parent = stack.back();
        parent.best = std::max(parent.best, parent.pending_leaf + found);
        if (parent.best > kMaxTrieMatches) {
          return BadCharsMap("an input matches more rules than SentencePiece can hold");
        }
      }
      continue;
    }
    const uint32_t byte = static_cast<uint32_t>(frame.next_byte++);
    const size_t id = frame.state ^ byte;
    const uint32_t u = unit(id);
    if (label(u) != byte) continue;  // no transition on this byte
    const size_t child = id ^ offset(u);
    const int leaf = has_leaf(u) ? 1 : 0;
    // After a matching rule the search reads the leaf unit at the child; it holds an offset into
    // the replacement strings.
    if (leaf == 1 && (child >= units || value(unit(child)) >= strings)) {
      return BadCharsMap("a rule points outside the trie or its replacement strings");
    }
    if ((child | 0xFF) >= units) return BadCharsMap("a transition leads outside the trie");
    if (mark[child] == kOnPath) return BadCharsMap("the trie has a cycle");
    if (mark[child] == kDone) {
      frame.best = std::max(frame.best, leaf + matches[child]);
      if (frame.best > kMaxTrieMatches) {
        return BadCharsMap("an input matches more rules than SentencePiece can hold");
      }
      continue;
    }
    frame.pending_leaf = leaf;
    mark[child] = kOnPath;
    stack.push_back({child, 0, 0, 0});  // invalidates `frame`
  }
  return absl::OkStatus();
}

// Reads a protobuf varint at `*pos`.
bool ReadVarint(std::string_view s, size_t* pos, uint64_t* out) {
  *out = 0;
  for (int shift = 0; shift < 64 && *pos < s.size(); shift += 7) {
    const uint8_t b = static_cast<uint8_t>(s[(*pos)++]);
    *out |= static_cast<uint64_t>(b & 0x7F) << shift;
    if ((b & 0x80) == 0) return true;
  }
  return false;
}

// Calls on_bytes(field number, payload) for every length-delimited field of the protobuf message
// `s`, in order, and skips the others. False when `s` is malformed (or uses groups).
template <typename OnBytes>
bool ForEachBytesField(std::string_view s, OnBytes on_bytes) {
  size_t pos = 0;
  while (pos < s.size()) {
    uint64_t tag = 0, n = 0;
    if (!ReadVarint(s, &pos, &tag)) return false;
    switch (tag & 7) {
      case 0:  // varint
        if (!ReadVarint(s, &pos, &n)) return false;
        break;
      case 1:  // fixed64
        if (s.size() - pos < 8) return false;
        pos += 8;
        break;
      case 2:  // length-delimited
        if (!ReadVarint(s, &pos, &n) || n > s.size() - pos) return false;
        if (!on_bytes(tag >> 3, s.substr(pos, n))) return false;
        pos += n;
        break;
      case 5:  // fixed32
        if (s.size() - pos < 4) return false;
        pos += 4;
        break;
      default:
        return false;
    }
  }
  return true;
}

// Checks every precompiled_charsmap (NormalizerSpec field 2) of the model's normalizer_spec
// (ModelProto field 3) and denormalizer_spec (field 5). Protobuf keeps the last occurrence of a
// field; every occurrence is checked. Runs after SentencePiece parsed `model`.
absl::Status CheckCharsMaps(std::string_view model) {
  constexpr uint64_t kNormalizerSpec = 3, kDenormalizerSpec = 5, kPrecompiledCharsMap = 2;
  absl::Status status;
  const bool parsed = ForEachBytesField(model, [&](uint64_t field, std::string_view spec) {
    if (field != kNormalizerSpec && field != kDenormalizerSpec) return true;
    return ForEachBytesField(spec, [&](uint64_t spec_field, std::string_view bytes) {
      if (spec_field == kPrecompiledCharsMap) status.Update(CheckCharsMap(bytes));
      return status.ok();
    });
  });
  if (!status.ok()) return status;
  if (!parsed) return absl::DataLossError("not a SentencePiece model: malformed protobuf");
  return absl::OkStatus();
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
  if (absl::Status s = CheckCharsMaps(serialized); !s.ok()) return s;
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

// The emoji data as tensors (docs/data.md, "Emoji"): the folder data/emoji_prep.h writes
// (index.tsv plus 64x64 PNGs of ~1.7k concepts in up to seven styles), read into an
// InMemoryDataset whose labels are concept ids and whose captions vary the wording, and the fixed
// prompt sets the evaluator scores a model with.
//
// Captions (EmojiCaption), one of several templates per image and variant: the concept's label
// with its style ("red apple, twemoji style", "a red apple drawn in the noto style"), with some of
// its keywords, with its category, or the label alone (style unspecified), so a model learns
// words, styles and prompts without a style. Which template an (image, variant) gets is a fixed
// function of the seed, so a dataset is the same bytes on every load.
//
// Held-out pairs: entries whose split is "heldout" are never in EmojiSplit::kTrain; their concept
// and style are each in it elsewhere (data/emoji_prep.h).
//
// Thread-compatibility: free functions, pure apart from reading files.
#ifndef DARTSERVE_DATA_EMOJI_H_
#define DARTSERVE_DATA_EMOJI_H_

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/dataset.h"

namespace dartserve::data {

struct EmojiEntry {
  std::string file;      // relative to the folder
  std::string name;      // the concept's normalised Iconify name: "red-apple"
  std::string style;     // EmojiStyle::id
  std::string category;  // Unicode group ("Food & Drink"), may be empty
  std::string label;     // CLDR label: "red apple"
  std::vector<std::string> keywords;
  bool held_out = false;
  int concept_id = 0;  // index into EmojiIndex::concepts
  int style_id = 0;    // index into EmojiStyles()
};

struct EmojiIndex {
  std::vector<EmojiEntry> entries;
  std::vector<std::string> concepts;  // sorted names; a concept's id is its position
  std::vector<std::string> labels;    // [concepts.size()] each concept's label
};

// `dir`/index.tsv. NOT_FOUND (naming scripts/prepare-emoji-data.sh) when absent; INVALID_ARGUMENT
// naming the line for a malformed one or an unknown style.
absl::StatusOr<EmojiIndex> LoadEmojiIndex(const std::string& dir);

// How a style is named in captions: "twemoji", "noto v1", "fluent 3d".
const std::string& EmojiStyleCaption(int style_id);

// Caption template `variant` (any int; taken modulo the number of templates) of `entry`; keyword
// picks come from `seed`.
std::string EmojiCaption(const EmojiEntry& entry, int variant, uint64_t seed);
// The evaluator's prompts: "<label>, <style> style" and, without a style, "<label>".
std::string EmojiStylePrompt(const EmojiEntry& entry);
std::string EmojiConceptPrompt(const EmojiEntry& entry);

// Shuffles `items` in place: Fisher-Yates on mt19937_64(seed) with plain modulo, so the order is
// the same from every standard library (std::shuffle's is not).
template <typename T>
void StableShuffle(std::vector<T>& items, uint64_t seed) {
  std::mt19937_64 rng(seed);
  for (size_t i = items.size(); i > 1; --i) std::swap(items[i - 1], items[rng() % i]);
}

enum class EmojiSplit { kTrain, kHeldOut, kAll };

struct EmojiDataset {
  EmojiIndex index;
  std::vector<int> entry_of;  // [data.size()] the index entry each dataset row shows
  InMemoryDataset data;       // [N, 3, 64, 64]; labels: concept ids; captions (text models)
};

// The images of `split`, each repeated `captions_per_image` times with different caption
// templates, rows in a fixed shuffled order (so a sample grid's first captions are varied).
// num_classes is the number of concepts.
absl::StatusOr<EmojiDataset> LoadEmojiDataset(const std::string& dir, EmojiSplit split,
                                              int captions_per_image = 1, uint64_t seed = 0);

}  // namespace dartserve::data

#endif  // DARTSERVE_DATA_EMOJI_H_

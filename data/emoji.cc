#include "data/emoji.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <random>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "common/file_io.h"
#include "common/png.h"
#include "data/emoji_prep.h"

namespace dartserve::data {
namespace {

constexpr int kColumns = 7;  // file concept style category split label keywords
constexpr int kTemplates = 8;

int StyleId(const std::string& id) {
  const std::vector<EmojiStyle>& styles = EmojiStyles();
  for (int i = 0; i < static_cast<int>(styles.size()); ++i) {
    if (styles[i].id == id) return i;
  }
  return -1;
}

// Up to `n` of the entry's keywords other than its label, picked by `rng`.
std::string Keywords(const EmojiEntry& e, int n, std::mt19937_64& rng) {
  std::vector<std::string> pool;
  for (const std::string& k : e.keywords) {
    if (k != e.label && !k.empty()) pool.push_back(k);
  }
  std::vector<std::string> picked;
  while (!pool.empty() && static_cast<int>(picked.size()) < n) {
    const size_t i = rng() % pool.size();
    picked.push_back(pool[i]);
    pool.erase(pool.begin() + i);
  }
  return absl::StrJoin(picked, ", ");
}

}  // namespace

const std::string& EmojiStyleCaption(int style_id) { return EmojiStyles().at(style_id).caption; }

std::string EmojiCaption(const EmojiEntry& e, int variant, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const std::string& style = EmojiStyleCaption(e.style_id);
  const std::string category =
      absl::AsciiStrToLower(absl::StrReplaceAll(e.category, {{"&", "and"}}));
  const std::string keywords = Keywords(e, 1 + static_cast<int>(rng() % 2), rng);
  switch (((variant % kTemplates) + kTemplates) % kTemplates) {
    case 1:
      return absl::StrCat("a ", e.label, " drawn in the ", style, " style");
    case 2:
      return e.label;
    case 3:
      return absl::StrCat(e.label, " emoji, ", style);
    case 4:
      if (keywords.empty()) break;
      return absl::StrCat(e.label, ", ", keywords, ", ", style, " style");
    case 5:
      if (category.empty()) break;
      return absl::StrCat(style, " style ", category, " emoji: ", e.label);
    case 6:
      if (keywords.empty()) return e.label;
      return absl::StrCat(keywords, ": ", e.label);
    case 7:
      return absl::StrCat("an emoji of ", e.label, " in ", style, " style");
    default:
      break;
  }
  return EmojiStylePrompt(e);
}

std::string EmojiStylePrompt(const EmojiEntry& e) {
  return absl::StrCat(e.label, ", ", EmojiStyleCaption(e.style_id), " style");
}

std::string EmojiConceptPrompt(const EmojiEntry& e) { return e.label; }

absl::StatusOr<EmojiIndex> LoadEmojiIndex(const std::string& dir) {
  const std::string path = absl::StrCat(dir, "/index.tsv");
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) {
    return absl::NotFoundError(
        absl::StrCat(text.status().message(), " (make it with scripts/prepare-emoji-data.sh)"));
  }
  EmojiIndex index;
  std::map<std::string, std::string> label_of;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
    if (++line_no == 1) continue;  // header
    std::vector<std::string> f = absl::StrSplit(line, '\t');
    const int style_id = f.size() == kColumns ? StyleId(f[2]) : -1;
    if (style_id < 0 || f[0].empty() || f[1].empty() || (f[4] != "train" && f[4] != "heldout")) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", line_no,
                       ": expected file, concept, known style, category, train|heldout, "
                       "label, keywords"));
    }
    EmojiEntry e{.file = f[0], .name = f[1], .style = f[2], .category = f[3], .label = f[5]};
    if (!f[6].empty()) e.keywords = absl::StrSplit(f[6], ';');
    e.held_out = f[4] == "heldout";
    e.style_id = style_id;
    label_of.emplace(e.name, e.label);
    index.entries.push_back(std::move(e));
  }
  if (index.entries.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no images"));
  for (const auto& [name, label] : label_of) {
    index.concepts.push_back(name);
    index.labels.push_back(label);
  }
  for (EmojiEntry& e : index.entries) {
    e.concept_id =
        static_cast<int>(std::lower_bound(index.concepts.begin(), index.concepts.end(), e.name) -
                         index.concepts.begin());
  }
  return index;
}

absl::StatusOr<EmojiDataset> LoadEmojiDataset(const std::string& dir, EmojiSplit split,
                                              int captions_per_image, uint64_t seed) {
  absl::StatusOr<EmojiIndex> index = LoadEmojiIndex(dir);
  if (!index.ok()) return index.status();
  EmojiDataset out;
  out.index = *std::move(index);
  std::vector<int> chosen;
  for (int i = 0; i < static_cast<int>(out.index.entries.size()); ++i) {
    const bool held_out = out.index.entries[i].held_out;
    if (split == EmojiSplit::kAll || held_out == (split == EmojiSplit::kHeldOut)) {
      chosen.push_back(i);
    }
  }
  if (chosen.empty()) return absl::InvalidArgumentError(absl::StrCat(dir, ": no images in split"));
  std::vector<torch::Tensor> images;
  for (int i : chosen) {
    const std::string& file = out.index.entries[i].file;
    absl::StatusOr<std::string> png = ReadFile(absl::StrCat(dir, "/", file));
    if (!png.ok()) return png.status();
    absl::StatusOr<Pixels> px = DecodePng(*png);
    if (!px.ok() || px->channels != 3 || (!images.empty() && px->width != images.front().size(2)) ||
        px->width != px->height) {
      return absl::InvalidArgumentError(
          absl::StrCat(file, ": not a square RGB PNG of the first image's size"));
    }
    torch::Tensor t = torch::empty({px->height, px->width, 3}, torch::kUInt8);
    std::memcpy(t.data_ptr(), px->data.data(), px->data.size());
    images.push_back(t.permute({2, 0, 1}).contiguous());
  }
  // Rows: (image, variant) pairs in a fixed shuffled order.
  const int per = std::max(1, captions_per_image);
  std::vector<std::pair<int, int>> rows;
  for (int v = 0; v < per; ++v) {
    for (int c = 0; c < static_cast<int>(chosen.size()); ++c) rows.push_back({c, v});
  }
  StableShuffle(rows, seed ^ 0xe1170ULL);
  std::vector<torch::Tensor> row_images;
  std::vector<int64_t> labels;
  for (const auto& [c, v] : rows) {
    const EmojiEntry& e = out.index.entries[chosen[c]];
    row_images.push_back(images[c]);
    labels.push_back(e.concept_id);
    out.entry_of.push_back(chosen[c]);
    // Consecutive variants of one image take consecutive templates from a per-image start, so an
    // image's captions differ from each other.
    const uint64_t h = seed * 0x9e3779b97f4a7c15ULL + static_cast<uint64_t>(chosen[c]) * 7919;
    out.data.captions.push_back(EmojiCaption(e, static_cast<int>(h % 8) + v, h + v));
  }
  out.data.images = torch::stack(row_images);
  out.data.labels = torch::tensor(labels, torch::kLong);
  out.data.num_classes = static_cast<int>(out.index.concepts.size());
  return out;
}

}  // namespace dartserve::data

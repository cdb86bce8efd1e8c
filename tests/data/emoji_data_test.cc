#include <gtest/gtest.h>

#include <filesystem>
#include <set>

#include "common/file_io.h"
#include "data/emoji.h"
#include "data/emoji_prep.h"
#include "tests/data/emoji_fixture.h"

namespace dartserve::data {
namespace {

namespace fs = std::filesystem;

// The fixture's packages prepared at 16 px, with every cat-face pair but one forced into the
// training split and the twemoji cat face held out (the hash decides otherwise).
std::string PreparedFolder(const std::string& name) {
  const std::string npm = testing::WriteFakeEmojiPackages(name);
  const std::string out = (fs::path(npm).parent_path() / "images").string();
  absl::StatusOr<EmojiPrepSummary> summary =
      PrepareEmojiData({.npm_dir = npm, .out_dir = out, .size = 16, .held_out_fraction = 0});
  EXPECT_TRUE(summary.ok()) << summary.status();
  absl::StatusOr<std::string> index = ReadFile(out + "/index.tsv");
  EXPECT_TRUE(index.ok());
  const std::string from = "cat-face\ttwemoji\tAnimals & Nature\ttrain";
  const size_t at = index->find(from);
  EXPECT_NE(at, std::string::npos);
  index->replace(at, from.size(), "cat-face\ttwemoji\tAnimals & Nature\theldout");
  EXPECT_TRUE(WriteFileAtomically(out + "/index.tsv", *index).ok());
  return out;
}

TEST(EmojiIndexTest, ConceptsAreSortedAndEntriesKnowTheirIds) {
  absl::StatusOr<EmojiIndex> index = LoadEmojiIndex(PreparedFolder("emoji_index"));
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_EQ(index->concepts, (std::vector<std::string>{"cat-face", "red-apple"}));
  EXPECT_EQ(index->labels, (std::vector<std::string>{"cat face", "red apple"}));
  ASSERT_EQ(index->entries.size(), 13u);
  for (const EmojiEntry& e : index->entries) {
    EXPECT_EQ(index->concepts[e.concept_id], e.name);
    EXPECT_EQ(EmojiStyles()[e.style_id].id, e.style);
    EXPECT_EQ(e.held_out, e.name == "cat-face" && e.style == "twemoji");
  }
}

TEST(EmojiIndexTest, MalformedLinesAreNamed) {
  const std::string dir = PreparedFolder("emoji_index_bad");
  absl::StatusOr<std::string> index = ReadFile(dir + "/index.tsv");
  ASSERT_TRUE(index.ok());
  ASSERT_TRUE(
      WriteFileAtomically(dir + "/index.tsv", *index + "x.png\tx\tcrayon\t\ttrain\tx\t\n").ok());
  absl::StatusOr<EmojiIndex> loaded = LoadEmojiIndex(dir);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(loaded.status().message().find("index.tsv:15"), std::string::npos);
  EXPECT_EQ(LoadEmojiIndex(dir + "/absent").status().code(), absl::StatusCode::kNotFound);
}

TEST(EmojiDatasetTest, TrainSplitLeavesHeldOutPairsOutAndVariesCaptions) {
  const std::string dir = PreparedFolder("emoji_dataset");
  absl::StatusOr<EmojiDataset> train = LoadEmojiDataset(dir, EmojiSplit::kTrain, 3, 7);
  ASSERT_TRUE(train.ok()) << train.status();
  const InMemoryDataset& d = train->data;
  ASSERT_EQ(d.size(), 12 * 3);
  EXPECT_EQ(d.images.sizes(), (std::vector<int64_t>{36, 3, 16, 16}));
  EXPECT_EQ(d.num_classes, 2);
  std::map<int, std::set<std::string>> captions_of;
  for (int64_t i = 0; i < d.size(); ++i) {
    const EmojiEntry& e = train->index.entries[train->entry_of[i]];
    EXPECT_FALSE(e.held_out);
    EXPECT_EQ(d.labels[i].item<int64_t>(), e.concept_id);
    EXPECT_NE(d.captions[i].find(e.label), std::string::npos) << d.captions[i];
    captions_of[train->entry_of[i]].insert(d.captions[i]);
  }
  for (const auto& [entry, captions] : captions_of) EXPECT_EQ(captions.size(), 3u);
  // The same bytes on every load.
  absl::StatusOr<EmojiDataset> again = LoadEmojiDataset(dir, EmojiSplit::kTrain, 3, 7);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->data.captions, d.captions);
  EXPECT_TRUE(torch::equal(again->data.images, d.images));

  absl::StatusOr<EmojiDataset> held_out = LoadEmojiDataset(dir, EmojiSplit::kHeldOut);
  ASSERT_TRUE(held_out.ok());
  ASSERT_EQ(held_out->data.size(), 1);
  EXPECT_NE(held_out->data.captions[0].find("cat face"), std::string::npos);
}

TEST(EmojiCaptionTest, EveryTemplateNamesTheConceptAndStyledOnesTheStyle) {
  EmojiEntry e{.name = "red-apple",
               .style = "noto-v1",
               .category = "Food & Drink",
               .label = "red apple",
               .keywords = {"apple", "fruit"},
               .style_id = 2};
  int styled = 0;
  for (int v = 0; v < 8; ++v) {
    const std::string caption = EmojiCaption(e, v, 1);
    EXPECT_NE(caption.find("red apple"), std::string::npos) << caption;
    styled += caption.find("noto v1") != std::string::npos;
  }
  EXPECT_EQ(styled, 6);
  EXPECT_EQ(EmojiStylePrompt(e), "red apple, noto v1 style");
  EXPECT_EQ(EmojiConceptPrompt(e), "red apple");
}

}  // namespace
}  // namespace dartserve::data

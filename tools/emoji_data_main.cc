// dartserve-emoji-data: rasterises the emoji sets of the emoji text-to-image model into a folder of
// 64x64 PNGs with an index of captions' parts (data/emoji_prep.h). Training-time only;
// scripts/prepare-emoji-data.sh installs the pinned npm packages and runs this.
//
//   dartserve-emoji-data --npm data/cache/emoji/node_modules --out data/cache/emoji/images64
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "data/emoji_prep.h"

ABSL_FLAG(std::string, npm, "", "node_modules folder holding the pinned packages (required).");
ABSL_FLAG(std::string, out, "", "Output folder (required).");
ABSL_FLAG(int, size, dartserve::data::EmojiPrepOptions{}.size, "Image side in pixels.");
ABSL_FLAG(int, min_styles, dartserve::data::EmojiPrepOptions{}.min_styles,
          "Keep concepts drawn in at least this many styles.");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Rasterise the emoji sets: dartserve-emoji-data --npm DIR --out DIR");
  absl::ParseCommandLine(argc, argv);
  if (absl::GetFlag(FLAGS_npm).empty() || absl::GetFlag(FLAGS_out).empty()) {
    std::cerr << "dartserve-emoji-data: --npm and --out are required\n";
    return 1;
  }
  absl::StatusOr<dartserve::data::EmojiPrepSummary> summary =
      dartserve::data::PrepareEmojiData({.npm_dir = absl::GetFlag(FLAGS_npm),
                                         .out_dir = absl::GetFlag(FLAGS_out),
                                         .size = absl::GetFlag(FLAGS_size),
                                         .min_styles = absl::GetFlag(FLAGS_min_styles)});
  if (!summary.ok()) {
    std::cerr << "dartserve-emoji-data: " << summary.status().message() << "\n";
    return 1;
  }
  std::cout << "dartserve-emoji-data: " << summary->images << " images of " << summary->concepts
            << " concepts in " << absl::GetFlag(FLAGS_out) << "; " << summary->held_out_pairs
            << " held-out (concept, style) pairs; " << summary->dropped_variants
            << " skin-tone variants dropped; " << summary->failed << " failed to render\n";
  return 0;
}

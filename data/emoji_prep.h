// Data preparation for the emoji text-to-image model (docs/data.md, "Emoji"): seven emoji sets
// published as Iconify JSON npm packages, rasterised once at training time into a folder of PNGs
// with an index of concept, style, category, label and keywords per image. Never run at build or
// serve time; scripts/prepare-emoji-data.sh installs the pinned packages and runs it.
//
// What it makes, in `out_dir`:
//   images/<style>/<concept>.png   size x size RGB, the icon on white, centred in its viewBox
//   index.tsv                      one line per image (EmojiIndexEntry's fields, tab-separated,
//                                  keywords joined by ';'), after a header line
//   NOTICE                         each set's name, author, licence and package version
//
// Concepts: an icon's Iconify name, normalised across sets (NormalizeEmojiName): skin-tone
// variants are dropped, a set's numbered redraws ("bird-1") become the base name, and flag names
// share one scheme. Only concepts drawn in at least `min_styles` styles are kept, so each can be
// recognised across styles and a held-out pair still leaves its concept in other styles.
// Held-out pairs: about `held_out_fraction` of the (concept, style) pairs, at most one per
// concept, chosen by a fixed hash of the pair (not an RNG), so the split never changes.
//
// Thread-compatibility: free functions; RasterizeSvg is reentrant (librsvg and cairo objects are
// per call).
#ifndef DARTSERVE_DATA_EMOJI_PREP_H_
#define DARTSERVE_DATA_EMOJI_PREP_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/pixels.h"

namespace dartserve::data {

struct EmojiStyle {
  std::string id;       // folder and index name: "twemoji"
  std::string package;  // npm package: "@iconify-json/twemoji"
  std::string caption;  // how captions name the style: "twemoji"
};

// The seven styles in a fixed order (a style's position is its class id).
const std::vector<EmojiStyle>& EmojiStyles();

// The concept an icon of set `style_id` named `name` draws, or "" for a variant to drop (a skin
// tone). `set_names` holds every icon name of that set (a fluent "-dark" suffix is a skin tone only
// when the base name is in the set too).
std::string NormalizeEmojiName(std::string_view style_id, std::string_view name,
                               const std::vector<std::string>& set_names);

// The SVG document of an Iconify icon body with its viewBox.
std::string IconifySvg(std::string_view body, double left, double top, double width, double height);

// `svg` rendered to size x size RGB over white, keeping its aspect ratio. INVALID_ARGUMENT when
// librsvg cannot parse or render it.
absl::StatusOr<Pixels> RasterizeSvg(std::string_view svg, int size);

struct EmojiPrepOptions {
  std::string npm_dir;  // node_modules holding the packages of EmojiStyles() and emojibase-data
  std::string out_dir;
  int size = 64;
  int min_styles = 3;
  double held_out_fraction = 0.05;
};

struct EmojiPrepSummary {
  int images = 0;
  int concepts = 0;
  int held_out_pairs = 0;
  int dropped_variants = 0;  // skin tones
  int failed = 0;            // icons librsvg could not render (listed on stderr, skipped)
};

// Reads the sets from options.npm_dir and writes out_dir (see the file comment). NOT_FOUND naming
// the package when one is missing; progress on stderr.
absl::StatusOr<EmojiPrepSummary> PrepareEmojiData(const EmojiPrepOptions& options);

}  // namespace dartserve::data

#endif  // DARTSERVE_DATA_EMOJI_PREP_H_

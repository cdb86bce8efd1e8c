// A tiny stand-in for the emoji npm packages (data/emoji_prep.h): every style's Iconify JSON with
// a few icons of solid shapes, and emojibase's English data, written to a temporary folder.
#ifndef DARTSERVE_TESTS_DATA_EMOJI_FIXTURE_H_
#define DARTSERVE_TESTS_DATA_EMOJI_FIXTURE_H_

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "data/emoji_prep.h"
#include "nlohmann/json.hpp"

namespace dartserve::testing {

inline void WriteJson(const std::filesystem::path& path, const nlohmann::json& j) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream(path) << j.dump();
}

// Concepts "red-apple" (all seven styles), "cat-face" (all but the last) and "rocket" (two
// styles only), plus a skin-tone variant in each set; colours differ by concept.
inline std::string WriteFakeEmojiPackages(const std::string& name) {
  namespace fs = std::filesystem;
  const fs::path root = fs::temp_directory_path() / ("dartserve_" + name) / "node_modules";
  fs::remove_all(root.parent_path());
  const auto& styles = data::EmojiStyles();
  for (size_t s = 0; s < styles.size(); ++s) {
    nlohmann::json icons = {{"prefix", styles[s].id}, {"width", 32}, {"height", 32}};
    // The same shape in every style, but the stroke width differs by style.
    const std::string w = std::to_string(1 + s);
    icons["icons"]["red-apple"]["body"] =
        "<circle cx=\"16\" cy=\"16\" r=\"12\" fill=\"#e00\" stroke=\"#000\" stroke-width=\"" + w +
        "\"/>";
    icons["icons"]["red-apple-dark-skin-tone"]["body"] = "<circle cx=\"16\" cy=\"16\" r=\"4\"/>";
    if (s + 1 < styles.size()) {
      icons["icons"]["cat-face"]["body"] =
          "<rect x=\"4\" y=\"4\" width=\"24\" height=\"24\" "
          "fill=\"#fa0\" stroke=\"#000\" stroke-width=\"" +
          w + "\"/>";
    }
    if (s < 2) icons["icons"]["rocket"]["body"] = "<rect width=\"32\" height=\"8\" fill=\"#00f\"/>";
    const fs::path dir = root / styles[s].package;
    WriteJson(dir / "icons.json", icons);
    WriteJson(dir / "package.json", {{"version", "1.0.0"}, {"license", "MIT"}});
    WriteJson(dir / "info.json", {{"author", {{"name", "Test"}, {"url", "https://example.org"}}},
                                  {"license", {{"spdx", "MIT"}}}});
    if (s == 0) {
      WriteJson(dir / "chars.json", {{"1f34e", "red-apple"}, {"1f431", "cat-face"}});
      WriteJson(
          dir / "metadata.json",
          {{"categories", {{"Food & Drink", {"red-apple"}}, {"Animals & Nature", {"cat-face"}}}}});
    }
  }
  WriteJson(
      root / "emojibase-data" / "en" / "data.json",
      nlohmann::json::array(
          {{{"label", "red apple"}, {"hexcode", "1F34E"}, {"tags", {"apple", "fruit", "red"}}},
           {{"label", "cat face"}, {"hexcode", "1F431"}, {"tags", {"cat", "pet"}}}}));
  return root.string();
}

}  // namespace dartserve::testing

#endif  // DARTSERVE_TESTS_DATA_EMOJI_FIXTURE_H_

#include "data/emoji_prep.h"

#include <cairo.h>
#include <librsvg/rsvg.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <map>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "common/file_io.h"
#include "common/png.h"
#include "nlohmann/json.hpp"

namespace dartserve::data {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// A stable 64-bit hash (FNV-1a): the held-out split must not depend on std::hash.
uint64_t Fnv1a(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

absl::StatusOr<json> ReadJson(const fs::path& path) {
  absl::StatusOr<std::string> text = ReadFile(path.string());
  if (!text.ok()) return text.status();
  json j = json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::DataLossError(absl::StrCat(path.string(), ": not JSON"));
  return j;
}

// One style's icons, by key.
struct LoadedSet {
  const EmojiStyle* style = nullptr;
  json icons;  // the package's icons.json
  std::map<std::string, std::string> concept_to_icon;
  std::map<std::string, std::string> icon_to_hex;  // chars.json inverted, where the set has one
  std::string version, license, author;
  int dropped = 0;
};

absl::StatusOr<LoadedSet> LoadSet(const fs::path& npm_dir, const EmojiStyle& style) {
  const fs::path dir = npm_dir / style.package;
  LoadedSet set;
  set.style = &style;
  absl::StatusOr<json> icons = ReadJson(dir / "icons.json");
  if (!icons.ok()) {
    return absl::NotFoundError(absl::StrCat("npm package ", style.package, " is missing from ",
                                            npm_dir.string(), " (", icons.status().message(),
                                            "); run scripts/prepare-emoji-data.sh"));
  }
  set.icons = *std::move(icons);
  if (absl::StatusOr<json> pkg = ReadJson(dir / "package.json"); pkg.ok()) {
    set.version = pkg->value("version", "");
  }
  if (absl::StatusOr<json> info = ReadJson(dir / "info.json"); info.ok()) {
    set.license = (*info)["license"].value("spdx", "");
    set.author = absl::StrCat((*info)["author"].value("name", ""), " <",
                              (*info)["author"].value("url", ""), ">");
  }
  if (absl::StatusOr<json> chars = ReadJson(dir / "chars.json"); chars.ok()) {
    for (const auto& [hex, name] : chars->items()) set.icon_to_hex[name.get<std::string>()] = hex;
  }
  std::vector<std::string> names;
  for (const auto& [name, icon] : set.icons["icons"].items()) names.push_back(name);
  std::sort(names.begin(), names.end());  // "bird" < "bird-1" < "bird-2": the first drawing wins
  for (const std::string& name : names) {
    const std::string key = NormalizeEmojiName(style.id, name, names);
    if (key.empty()) {
      ++set.dropped;
      continue;
    }
    set.concept_to_icon.emplace(key, name);
  }
  return set;
}

// emojibase's label and keywords by lowercase hex code sequence without FE0F.
struct EmojiText {
  std::string label;
  std::vector<std::string> tags;
};

std::string NormalizeHex(std::string hex) {
  hex = absl::AsciiStrToLower(hex);
  return absl::StrReplaceAll(hex, {{"-fe0f", ""}});
}

absl::StatusOr<std::map<std::string, EmojiText>> LoadEmojibase(const fs::path& npm_dir) {
  absl::StatusOr<json> data = ReadJson(npm_dir / "emojibase-data" / "en" / "data.json");
  if (!data.ok()) {
    return absl::NotFoundError(absl::StrCat("npm package emojibase-data is missing from ",
                                            npm_dir.string(), ": ", data.status().message()));
  }
  std::map<std::string, EmojiText> out;
  for (const json& e : *data) {
    EmojiText t{.label = e.value("label", "")};
    if (e.contains("tags")) t.tags = e["tags"].get<std::vector<std::string>>();
    out[NormalizeHex(e.value("hexcode", ""))] = std::move(t);
  }
  return out;
}

// The sets whose metadata.json uses the nine Unicode emoji groups, in the order their category of
// a key is taken.
constexpr const char* kCategorySets[] = {"twemoji", "noto", "noto-v1", "fluent-flat"};

std::string Sanitize(std::string s) {
  for (char& c : s) {
    if (c == '\t' || c == '\n' || c == '\r' || c == ';') c = ' ';
  }
  return s;
}

}  // namespace

const std::vector<EmojiStyle>& EmojiStyles() {
  static const auto* styles = new std::vector<EmojiStyle>{
      {"twemoji", "@iconify-json/twemoji", "twemoji"},
      {"noto", "@iconify-json/noto", "noto"},
      {"noto-v1", "@iconify-json/noto-v1", "noto v1"},
      {"fluent-flat", "@iconify-json/fluent-emoji-flat", "fluent flat"},
      {"fluent-3d", "@iconify-json/fluent-emoji", "fluent 3d"},
      {"emojione", "@iconify-json/emojione", "emojione"},
      {"streamline", "@iconify-json/streamline-emojis", "streamline"},
  };
  return *styles;
}

std::string NormalizeEmojiName(std::string_view style_id, std::string_view name,
                               const std::vector<std::string>& set_names) {
  std::string n(name);
  if (absl::StrContains(n, "skin-tone") || absl::StrContains(n, "-tone1") ||
      absl::StrContains(n, "-tone2") || absl::StrContains(n, "-tone3") ||
      absl::StrContains(n, "-tone4") || absl::StrContains(n, "-tone5")) {
    return "";
  }
  // Fluent names its skin tones by suffix; "-dark" is one only when the base name exists.
  for (const char* suffix : {"-medium-light", "-medium-dark", "-light", "-medium", "-dark"}) {
    if (absl::EndsWith(n, suffix)) {
      const std::string base = n.substr(0, n.size() - std::string_view(suffix).size());
      if (std::binary_search(set_names.begin(), set_names.end(), base)) return "";
    }
  }
  // Streamline draws some concepts several times: "bird-1", "bird-2".
  const size_t dash = n.find_last_of('-');
  if (style_id == "streamline" && dash != std::string::npos && dash + 1 < n.size() &&
      std::all_of(n.begin() + dash + 1, n.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    n.resize(dash);
  }
  // One flag scheme: "flag-for-flag-france" (noto-v1) and "flag-for-france" (emojione) are
  // twemoji's "flag-france".
  for (const char* prefix : {"flag-for-flag-", "flag-for-"}) {
    if (absl::StartsWith(n, prefix)) n = absl::StrCat("flag-", n.substr(std::strlen(prefix)));
  }
  return n;
}

std::string IconifySvg(std::string_view body, double left, double top, double width,
                       double height) {
  return absl::StrFormat(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" xmlns:xlink=\"http://www.w3.org/1999/xlink\" "
      "viewBox=\"%g %g %g %g\" width=\"%g\" height=\"%g\">%s</svg>",
      left, top, width, height, width, height, body);
}

absl::StatusOr<Pixels> RasterizeSvg(std::string_view svg, int size) {
  GError* error = nullptr;
  RsvgHandle* handle =
      rsvg_handle_new_from_data(reinterpret_cast<const guint8*>(svg.data()), svg.size(), &error);
  if (handle == nullptr) {
    std::string message = error != nullptr ? error->message : "unknown error";
    if (error != nullptr) g_error_free(error);
    return absl::InvalidArgumentError(absl::StrCat("librsvg cannot parse the SVG: ", message));
  }
  cairo_surface_t* surface = cairo_image_surface_create(CAIRO_FORMAT_ARGB32, size, size);
  cairo_t* cr = cairo_create(surface);
  cairo_set_source_rgb(cr, 1, 1, 1);
  cairo_paint(cr);
  const RsvgRectangle viewport{0, 0, static_cast<double>(size), static_cast<double>(size)};
  const bool ok = rsvg_handle_render_document(handle, cr, &viewport, &error);
  cairo_surface_flush(surface);
  Pixels px{.width = size, .height = size, .channels = 3};
  px.data.resize(static_cast<size_t>(size) * size * 3);
  const unsigned char* data = cairo_image_surface_get_data(surface);
  const int stride = cairo_image_surface_get_stride(surface);
  for (int y = 0; y < size; ++y) {
    for (int x = 0; x < size; ++x) {
      // Native-endian ARGB32, opaque after the white fill, so premultiplication is moot.
      uint32_t argb;
      std::memcpy(&argb, data + y * stride + 4 * x, 4);
      uint8_t* out = &px.data[(static_cast<size_t>(y) * size + x) * 3];
      out[0] = (argb >> 16) & 0xff;
      out[1] = (argb >> 8) & 0xff;
      out[2] = argb & 0xff;
    }
  }
  cairo_destroy(cr);
  cairo_surface_destroy(surface);
  g_object_unref(handle);
  if (!ok) {
    std::string message = error != nullptr ? error->message : "unknown error";
    if (error != nullptr) g_error_free(error);
    return absl::InvalidArgumentError(absl::StrCat("librsvg cannot render the SVG: ", message));
  }
  return px;
}

absl::StatusOr<EmojiPrepSummary> PrepareEmojiData(const EmojiPrepOptions& options) {
  const fs::path npm_dir(options.npm_dir), out_dir(options.out_dir);
  std::vector<LoadedSet> sets;
  EmojiPrepSummary summary;
  for (const EmojiStyle& style : EmojiStyles()) {
    absl::StatusOr<LoadedSet> set = LoadSet(npm_dir, style);
    if (!set.ok()) return set.status();
    summary.dropped_variants += set->dropped;
    sets.push_back(*std::move(set));
  }
  absl::StatusOr<std::map<std::string, EmojiText>> emojibase = LoadEmojibase(npm_dir);
  if (!emojibase.ok()) return emojibase.status();

  std::map<std::string, std::vector<int>> styles_of;  // key -> indices into sets
  for (int s = 0; s < static_cast<int>(sets.size()); ++s) {
    for (const auto& [key, icon] : sets[s].concept_to_icon) styles_of[key].push_back(s);
  }
  // Category and text of each key: the first set that knows them.
  std::map<std::string, std::string> category_of;
  std::map<std::string, EmojiText> text_of;
  for (const LoadedSet& set : sets) {
    std::map<std::string, std::string> icon_to_concept;
    for (const auto& [key, icon] : set.concept_to_icon) icon_to_concept[icon] = key;
    for (const auto& [icon, hex] : set.icon_to_hex) {
      auto c = icon_to_concept.find(icon);
      auto t = emojibase->find(NormalizeHex(hex));
      if (c != icon_to_concept.end() && t != emojibase->end())
        text_of.emplace(c->second, t->second);
    }
    if (std::find(std::begin(kCategorySets), std::end(kCategorySets), set.style->id) ==
        std::end(kCategorySets)) {
      continue;
    }
    absl::StatusOr<json> meta = ReadJson(npm_dir / set.style->package / "metadata.json");
    if (!meta.ok() || !meta->contains("categories")) continue;
    for (const auto& [category, icons] : (*meta)["categories"].items()) {
      for (const json& icon : icons) {
        auto c = icon_to_concept.find(icon.get<std::string>());
        if (c != icon_to_concept.end()) category_of.emplace(c->second, category);
      }
    }
  }

  std::error_code ec;
  fs::create_directories(out_dir / "images", ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create ", out_dir.string()));
  std::string index = "file\tconcept\tstyle\tcategory\tsplit\tlabel\tkeywords\n";
  for (const auto& [key, style_indices] : styles_of) {
    if (static_cast<int>(style_indices.size()) < options.min_styles) continue;
    ++summary.concepts;
    // At most one held-out style per key: the one whose pair hashes lowest, with probability
    // held_out_fraction * styles so that about that fraction of all pairs is held out.
    int held_out = -1;
    if ((Fnv1a(key) % 10000) < options.held_out_fraction * style_indices.size() * 10000.0) {
      uint64_t best = UINT64_MAX;
      for (int s : style_indices) {
        const uint64_t h = Fnv1a(absl::StrCat(key, "/", sets[s].style->id));
        if (h < best) best = h, held_out = s;
      }
    }
    const auto text = text_of.find(key);
    const std::string label = text != text_of.end() && !text->second.label.empty()
                                  ? text->second.label
                                  : absl::StrReplaceAll(key, {{"-", " "}});
    std::vector<std::string> keywords;
    if (text != text_of.end()) {
      for (const std::string& k : text->second.tags) keywords.push_back(Sanitize(k));
    }
    for (int s : style_indices) {
      const LoadedSet& set = sets[s];
      const json& icons = set.icons;
      const json& icon = icons["icons"][set.concept_to_icon.at(key)];
      const double width = icon.value("width", icons.value("width", 16.0));
      const double height = icon.value("height", icons.value("height", 16.0));
      const std::string svg = IconifySvg(icon.value("body", ""), icon.value("left", 0.0),
                                         icon.value("top", 0.0), width, height);
      absl::StatusOr<Pixels> px = RasterizeSvg(svg, options.size);
      absl::StatusOr<std::string> png = px.ok() ? EncodePng(*px) : px.status();
      if (!png.ok()) {
        std::cerr << "emoji-data: skipping " << set.style->id << "/" << key << ": "
                  << png.status().message() << "\n";
        ++summary.failed;
        continue;
      }
      const std::string file = absl::StrCat("images/", set.style->id, "/", key, ".png");
      fs::create_directories((out_dir / file).parent_path());
      if (absl::Status st = WriteFileAtomically((out_dir / file).string(), *png); !st.ok())
        return st;
      const auto category = category_of.find(key);
      absl::StrAppend(&index, file, "\t", key, "\t", set.style->id, "\t",
                      category != category_of.end() ? Sanitize(category->second) : "", "\t",
                      s == held_out ? "heldout" : "train", "\t", Sanitize(label), "\t",
                      absl::StrJoin(keywords, ";"), "\n");
      ++summary.images;
      summary.held_out_pairs += s == held_out;
      if (summary.images % 1000 == 0) {
        std::cerr << "emoji-data: " << summary.images << " images\n";
      }
    }
  }
  if (absl::Status st = WriteFileAtomically((out_dir / "index.tsv").string(), index); !st.ok()) {
    return st;
  }
  std::string notice =
      "Training images of the emoji model: icons of these sets, rasterised at training time.\n\n";
  for (const LoadedSet& set : sets) {
    absl::StrAppend(&notice, set.style->package, " ", set.version, ": ", set.author, ", licence ",
                    set.license, "\n");
  }
  absl::StrAppend(&notice,
                  "emojibase-data (labels and keywords): MIT\n\n"
                  "CC-BY-4.0 sets are used under https://creativecommons.org/licenses/by/4.0/ ; "
                  "Apache-2.0 under https://www.apache.org/licenses/LICENSE-2.0 ; MIT under "
                  "https://opensource.org/licenses/MIT .\n");
  if (absl::Status st = WriteFileAtomically((out_dir / "NOTICE").string(), notice); !st.ok())
    return st;
  return summary;
}

}  // namespace dartserve::data

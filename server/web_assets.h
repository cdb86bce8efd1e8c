// The web page's files (web/), embedded in the binary at build time (web/embed.cmake), so the page
// works on a machine without network access and needs no build step of its own.
#ifndef DARTSERVE_SERVER_WEB_ASSETS_H_
#define DARTSERVE_SERVER_WEB_ASSETS_H_

#include <cstddef>

#include "absl/strings/string_view.h"

namespace dartserve::server {

struct WebAsset {
  const char* path;          // "/" for index.html, else "/<file name>"
  const char* content_type;  // from the file's extension
  const unsigned char* data;
  size_t size;
};

// Defined in the generated web_assets.cc.
extern const WebAsset kWebAssets[];
extern const size_t kWebAssetCount;

// The asset served at `path`, or nullptr.
inline const WebAsset* FindWebAsset(absl::string_view path) {
  for (size_t i = 0; i < kWebAssetCount; ++i) {
    if (path == kWebAssets[i].path) return &kWebAssets[i];
  }
  return nullptr;
}

}  // namespace dartserve::server

#endif  // DARTSERVE_SERVER_WEB_ASSETS_H_

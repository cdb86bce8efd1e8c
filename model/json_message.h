// How error messages about a JSON file (config.json, a safetensors header) show a value the file
// holds.
//
// Never dump() a value of unknown shape into a message: nlohmann's dump() recurses once per
// nesting level, and a value nested some tens of thousands of levels deep overflows the stack
// (80,000 levels, 160 KB of "[]", with an 8 MiB stack in a release build; 20,000 under
// AddressSanitizer). The parser itself is iterative and accepts such a value.
#ifndef DARTSERVE_MODEL_JSON_MESSAGE_H_
#define DARTSERVE_MODEL_JSON_MESSAGE_H_

#include <cstddef>
#include <string>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace dartserve::model {

// Longest part of a string a message shows.
inline constexpr size_t kMaxShownJsonBytes = 40;

// A string, number, boolean or null as JSON (a string cut to its first kMaxShownJsonBytes bytes,
// then "..."); an array or object by its type only ("an array", "an object"). Works for any
// nlohmann::basic_json (json, ordered_json).
template <typename Json>
std::string ShowJsonValue(const Json& j) {
  if (j.is_array() || j.is_object()) return absl::StrCat("an ", j.type_name());
  if (!j.is_string()) return j.dump();  // a scalar: short and not recursive
  const auto& s = j.template get_ref<const std::string&>();
  // A cut inside a UTF-8 character shows as U+FFFD (the replace handler) instead of throwing.
  return absl::StrCat(Json(s.substr(0, kMaxShownJsonBytes))
                          .dump(-1, ' ', /*ensure_ascii=*/false, Json::error_handler_t::replace),
                      s.size() > kMaxShownJsonBytes ? "..." : "");
}

}  // namespace dartserve::model

#endif  // DARTSERVE_MODEL_JSON_MESSAGE_H_

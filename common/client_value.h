// Quoting values a client sent (model names, request ids, prompts, paths) in error messages. Every
// layer that echoes one uses this, so an error about a huge field stays a short error about that
// field, never a message (a gRPC trailer, an HTTP body) over the client's metadata limit.
#ifndef DARTSERVE_COMMON_CLIENT_VALUE_H_
#define DARTSERVE_COMMON_CLIENT_VALUE_H_

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace dartserve {

// `value` in single quotes, cut to its first kMaxQuotedBytes bytes (at a UTF-8 character
// boundary) with "..." and its length when longer, e.g. 'xxxx...' (10000 bytes).
inline constexpr size_t kMaxQuotedBytes = 64;
std::string QuoteClientValue(absl::string_view value);

}  // namespace dartserve

#endif  // DARTSERVE_COMMON_CLIENT_VALUE_H_

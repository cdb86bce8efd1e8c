// Whole-file reads and atomic writes. Thread-compatible: concurrent writers of one path race on
// its temporary file.
#ifndef DARTSERVE_COMMON_FILE_IO_H_
#define DARTSERVE_COMMON_FILE_IO_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace dartserve {

// Reads a whole file. NOT_FOUND when it cannot be opened, DATA_LOSS on a read error.
absl::StatusOr<std::string> ReadFile(const std::string& path);

// Writes atomically: a temporary file beside `path`, then rename, so a reader (or a run stopped
// half-way) sees the old contents or the new ones, never a mix.
absl::Status WriteFileAtomically(const std::string& path, std::string_view contents);

}  // namespace dartserve

#endif  // DARTSERVE_COMMON_FILE_IO_H_

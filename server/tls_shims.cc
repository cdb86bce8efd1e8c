#include "server/tls_shims.h"

#include <dlfcn.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace dartserve::server {

// Defined in the generated tls_shim_objects.cc (server/embed_binary.cmake).
extern const unsigned char kLibcryptoShim[];
extern const size_t kLibcryptoShimSize;
extern const unsigned char kLibsslShim[];
extern const size_t kLibsslShimSize;

namespace {

// Loads a shared object from memory (no file on disk to install or clean up) through
// /proc/self/fd/<fd>. The loader keeps its own mapping, but the descriptor must stay open until
// every shim is loaded: the loader knows an object by its path, and a reused descriptor number
// would make the next shim's path that of an object already loaded.
absl::Status LoadFromMemory(const char* name, const unsigned char* data, size_t size,
                            std::vector<int>& fds) {
  const int fd = memfd_create(name, MFD_CLOEXEC);
  if (fd < 0) return absl::InternalError(absl::StrCat("tls: memfd_create for ", name, " failed"));
  fds.push_back(fd);
  size_t written = 0;
  while (written < size) {
    const ssize_t n = write(fd, data + written, size - written);
    if (n <= 0) break;
    written += static_cast<size_t>(n);
  }
  void* handle = written == size
                     ? dlopen(absl::StrCat("/proc/self/fd/", fd).c_str(), RTLD_NOW | RTLD_LOCAL)
                     : nullptr;
  if (handle == nullptr) {
    const char* error = dlerror();
    return absl::InternalError(
        absl::StrCat("tls: cannot load ", name, ": ", error != nullptr ? error : "short write"));
  }
  return absl::OkStatus();  // never unloaded
}

}  // namespace

absl::Status LoadTlsShims() {
  static const absl::Status* const loaded = [] {
    std::vector<int> fds;
    absl::Status s = LoadFromMemory("libcrypto.so", kLibcryptoShim, kLibcryptoShimSize, fds);
    if (s.ok()) s = LoadFromMemory("libssl.so", kLibsslShim, kLibsslShimSize, fds);
    for (const int fd : fds) close(fd);
    return new absl::Status(std::move(s));
  }();
  return *loaded;
}

}  // namespace dartserve::server

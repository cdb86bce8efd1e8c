// Helpers the procedural worlds (data/shapes.cc, data/scenes64.cc) share. Internal to data/.
#ifndef DARTSERVE_DATA_WORLD_UTIL_H_
#define DARTSERVE_DATA_WORLD_UTIL_H_

#include <cstdint>
#include <random>
#include <string>
#include <string_view>

namespace dartserve::data::internal {

// Concatenates std::string_views (Debian's Abseil has its own string_view, so absl::StrCat does
// not take the std::string_view vocabulary tables).
template <typename... T>
std::string Cat(const T&... parts) {
  std::string out;
  (out.append(std::string_view(parts)), ...);
  return out;
}

// rng output reduced by modulo; the bias (< 2^-50 for these n) does not matter, portability does
// (std's distributions are implementation-defined).
inline int Uniform(std::mt19937_64& rng, int n) { return static_cast<int>(rng() % uint64_t(n)); }
inline double Uniform01(std::mt19937_64& rng) {
  return static_cast<double>(rng() >> 11) * 0x1.0p-53;
}

}  // namespace dartserve::data::internal

#endif  // DARTSERVE_DATA_WORLD_UTIL_H_

#include "common/png.h"

#include <png.h>

#include "absl/strings/str_cat.h"

namespace dartserve {

absl::StatusOr<std::string> EncodePng(const Pixels& pixels) {
  if (pixels.width <= 0 || pixels.height <= 0 || pixels.width > 1 << 16 ||
      pixels.height > 1 << 16) {
    return absl::InvalidArgumentError("png: width and height must be in [1, 65536]");
  }
  if (pixels.channels != 1 && pixels.channels != 3) {
    return absl::InvalidArgumentError("png: channels must be 1 or 3");
  }
  if (pixels.data.size() != static_cast<size_t>(pixels.width) * pixels.height * pixels.channels) {
    return absl::InvalidArgumentError("png: data size does not match width x height x channels");
  }
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  image.width = pixels.width;
  image.height = pixels.height;
  image.format = pixels.channels == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  // First call sizes the buffer, second fills it.
  if (!png_image_write_to_memory(&image, nullptr, &size, 0, pixels.data.data(), 0, nullptr)) {
    return absl::InternalError(absl::StrCat("png: ", image.message));
  }
  std::string out(size, '\0');
  if (!png_image_write_to_memory(&image, out.data(), &size, 0, pixels.data.data(), 0, nullptr)) {
    return absl::InternalError(absl::StrCat("png: ", image.message));
  }
  out.resize(size);
  return out;
}

absl::StatusOr<Pixels> DecodePng(std::string_view png, int64_t max_pixels) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&image, png.data(), png.size())) {
    return absl::InvalidArgumentError(absl::StrCat("png: ", image.message));
  }
  if (static_cast<int64_t>(image.width) * image.height > max_pixels) {
    png_image_free(&image);
    return absl::InvalidArgumentError("png: image is too large");
  }
  const bool color = (image.format & PNG_FORMAT_FLAG_COLOR) != 0;
  image.format = color ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
  Pixels out;
  out.width = image.width;
  out.height = image.height;
  out.channels = color ? 3 : 1;
  out.data.resize(PNG_IMAGE_SIZE(image));
  if (!png_image_finish_read(&image, nullptr, out.data.data(), 0, nullptr)) {
    return absl::InvalidArgumentError(absl::StrCat("png: ", image.message));
  }
  return out;
}

}  // namespace dartserve

#include "data/dataset.h"

#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/file_io.h"
#include "common/png.h"
#include "model/safetensors.h"

namespace dartserve::data {
namespace {

absl::StatusOr<std::string> ReadGzip(const std::string& path) {
  if (!std::filesystem::exists(path)) {
    return absl::NotFoundError(absl::StrCat(
        path,
        " not found: install Debian's dataset-fashion-mnist package (scripts/install-deps.sh)"));
  }
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::string out;
  char buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof(buf))) > 0) out.append(buf, n);
  const bool error = n < 0;
  gzclose(f);
  if (error) return absl::DataLossError(absl::StrCat(path, ": gzip stream is corrupt"));
  return out;
}

uint32_t BigEndian32(const std::string& s, size_t offset) {
  return (uint32_t{static_cast<uint8_t>(s[offset])} << 24) |
         (uint32_t{static_cast<uint8_t>(s[offset + 1])} << 16) |
         (uint32_t{static_cast<uint8_t>(s[offset + 2])} << 8) |
         uint32_t{static_cast<uint8_t>(s[offset + 3])};
}

}  // namespace

std::pair<torch::Tensor, torch::Tensor> InMemoryDataset::Batch(const torch::Tensor& indices) const {
  const torch::Tensor x = images.index_select(0, indices).to(torch::kFloat) / 127.5 - 1.0;
  return {x, labels.index_select(0, indices)};
}

absl::StatusOr<InMemoryDataset> LoadFashionMnist(const std::string& split, const std::string& dir) {
  if (split != "train" && split != "test") {
    return absl::InvalidArgumentError("split: must be \"train\" or \"test\"");
  }
  const std::string prefix = split == "train" ? "train" : "t10k";
  const std::string image_path = absl::StrCat(dir, "/", prefix, "-images-idx3-ubyte.gz");
  const std::string label_path = absl::StrCat(dir, "/", prefix, "-labels-idx1-ubyte.gz");
  absl::StatusOr<std::string> img = ReadGzip(image_path);
  if (!img.ok()) return img.status();
  absl::StatusOr<std::string> lab = ReadGzip(label_path);
  if (!lab.ok()) return lab.status();
  if (img->size() < 16 || BigEndian32(*img, 0) != 0x803) {
    return absl::DataLossError(absl::StrCat(image_path, ": not an idx3 image file"));
  }
  if (lab->size() < 8 || BigEndian32(*lab, 0) != 0x801) {
    return absl::DataLossError(absl::StrCat(label_path, ": not an idx1 label file"));
  }
  const int64_t n = BigEndian32(*img, 4), h = BigEndian32(*img, 8), w = BigEndian32(*img, 12);
  if (h != 28 || w != 28 || img->size() != static_cast<size_t>(16 + n * h * w) ||
      BigEndian32(*lab, 4) != n || lab->size() != static_cast<size_t>(8 + n)) {
    return absl::DataLossError(
        absl::StrCat(dir, ": Fashion-MNIST ", split, " files are inconsistent"));
  }
  InMemoryDataset ds;
  ds.num_classes = 10;
  ds.images = torch::empty({n, 1, h, w}, torch::kUInt8);
  std::memcpy(ds.images.data_ptr(), img->data() + 16, n * h * w);
  const torch::Tensor labels_u8 = torch::empty({n}, torch::kUInt8);
  std::memcpy(labels_u8.data_ptr(), lab->data() + 8, n);
  ds.labels = labels_u8.to(torch::kLong);
  if (ds.labels.max().item<int64_t>() >= 10) {
    return absl::DataLossError(absl::StrCat(label_path, ": label out of range"));
  }
  return ds;
}

absl::StatusOr<InMemoryDataset> LoadImageFolder(const std::string& dir) {
  const std::string labels_path = absl::StrCat(dir, "/labels.txt");
  absl::StatusOr<std::string> text = ReadFile(labels_path);
  if (!text.ok()) return text.status();
  std::istringstream lines(*text);
  std::string line;
  std::vector<torch::Tensor> images;
  std::vector<int64_t> labels;
  int line_no = 0;
  while (std::getline(lines, line)) {
    ++line_no;
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    std::string name;
    int64_t label = -1;
    if (!(fields >> name >> label) || label < 0 || label >= (1 << 20)) {
      return absl::InvalidArgumentError(
          absl::StrCat(labels_path, ":", line_no, ": expected \"<file> <class id >= 0>\""));
    }
    absl::StatusOr<std::string> png = ReadFile(absl::StrCat(dir, "/", name));
    if (!png.ok()) return png.status();
    absl::StatusOr<Pixels> px = DecodePng(*png);
    if (!px.ok())
      return absl::InvalidArgumentError(absl::StrCat(name, ": ", px.status().message()));
    torch::Tensor t = torch::empty({px->height, px->width, px->channels}, torch::kUInt8);
    std::memcpy(t.data_ptr(), px->data.data(), px->data.size());
    t = t.permute({2, 0, 1}).contiguous();
    if (!images.empty() && t.sizes() != images.front().sizes()) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": size or channels differ from the first image"));
    }
    images.push_back(t);
    labels.push_back(label);
  }
  if (images.empty()) return absl::InvalidArgumentError(absl::StrCat(labels_path, ": no images"));
  InMemoryDataset ds;
  ds.images = torch::stack(images);
  ds.labels = torch::tensor(labels, torch::kLong);
  ds.num_classes = static_cast<int>(ds.labels.max().item<int64_t>() + 1);
  return ds;
}

}  // namespace dartserve::data

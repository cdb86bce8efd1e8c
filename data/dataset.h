// Training datasets, held in memory as 8-bit images plus integer labels.
//
// Two sources: Fashion-MNIST from Debian's `dataset-fashion-mnist` package (idx files, gzip), and
// an image folder (PNG files plus a labels file) so users can train on their own images. Both
// produce the same InMemoryDataset, so the trainer has one data path.
#ifndef DARTSERVE_DATA_DATASET_H_
#define DARTSERVE_DATA_DATASET_H_

#include <torch/torch.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace dartserve::data {

inline constexpr char kFashionMnistDir[] = "/usr/share/datasets/fashion-mnist";

struct InMemoryDataset {
  torch::Tensor images;  // [N, C, H, W] uint8
  torch::Tensor labels;  // [N] int64
  int num_classes = 0;
  std::vector<std::string> captions;  // [N] for captioned data (text models), else empty

  int64_t size() const { return images.defined() ? images.size(0) : 0; }
  // Images `indices` ([B] int64) as floats in [-1, 1] and their labels.
  std::pair<torch::Tensor, torch::Tensor> Batch(const torch::Tensor& indices) const;
};

// Fashion-MNIST split "train" (60,000 images) or "test" (10,000) from `dir`. NOT_FOUND naming the
// Debian package when the files are absent; DATA_LOSS for corrupt files.
absl::StatusOr<InMemoryDataset> LoadFashionMnist(const std::string& split,
                                                 const std::string& dir = kFashionMnistDir);

// A folder of PNG images of one size and channel count, with `labels.txt` holding one line per
// image: "<file name> <class id>". num_classes is 1 + the largest id.
absl::StatusOr<InMemoryDataset> LoadImageFolder(const std::string& dir);

}  // namespace dartserve::data

#endif  // DARTSERVE_DATA_DATASET_H_

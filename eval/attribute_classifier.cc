#include "eval/attribute_classifier.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <random>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace dartserve::eval {

using ::dartserve::data::Box;
using ::dartserve::data::HoldOut;
using ::dartserve::data::InMemoryDataset;
using ::dartserve::data::kNumShapes;
using ::dartserve::data::kShapeChannels;
using ::dartserve::data::kShapeImageSize;
using ::dartserve::data::RenderScene;
using ::dartserve::data::SampleScene;
using ::dartserve::data::Scene;
using ::dartserve::data::SceneOptions;
using ::dartserve::data::Shape;
using ::dartserve::data::ShapeBox;
using ::dartserve::data::ShapeImage;

namespace {

constexpr int kSize = kShapeImageSize;
constexpr int kPlane = kSize * kSize;
constexpr int kCrop = kShapeMaskCrop;

// Plain modulo and 53-bit fractions of std::mt19937_64, like data/shapes.cc, so the masks are
// the same on every platform.
int Uniform(std::mt19937_64& rng, int n) { return static_cast<int>(rng() % uint64_t(n)); }
double Uniform01(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

// Uniform noise in [-amplitude, amplitude] on every channel of every pixel.
void AddNoise(ShapeImage& image, int amplitude, std::mt19937_64& rng) {
  for (uint8_t& v : image) {
    const int noisy = v + Uniform(rng, 2 * amplitude + 1) - amplitude;
    v = static_cast<uint8_t>(std::clamp(noisy, 0, 255));
  }
}

// One of six degradations, equally likely: clean, [1 2 1] blur, box blur, and each of the three
// with uniform noise of up to +-16 (the noise alone does not move AnalyzeImage's masks much;
// with a blur it raggeds their edges the way a sampler's residual noise does).
ShapeImage Degrade(const ShapeImage& image, std::mt19937_64& rng) {
  const int kind = Uniform(rng, 6);
  ShapeImage out = kind % 3 == 0 ? image : Blur(image, kind % 3 == 1 ? 2 : 1);
  if (kind >= 3) AddNoise(out, 4 + Uniform(rng, 13), rng);
  return out;
}

// Flips each pixel on the mask's edge with probability p. The edge is decided on the unflipped
// mask, so flips do not cascade inward.
void FlipEdges(ShapeMaskCrop& mask, double p, std::mt19937_64& rng) {
  const ShapeMaskCrop before = mask;
  auto at = [&](int x, int y) {
    return x >= 0 && y >= 0 && x < kCrop && y < kCrop && before[y * kCrop + x] != 0;
  };
  for (int y = 0; y < kCrop; ++y) {
    for (int x = 0; x < kCrop; ++x) {
      const bool in = at(x, y);
      const bool edge =
          at(x - 1, y) != in || at(x + 1, y) != in || at(x, y - 1) != in || at(x, y + 1) != in;
      if (edge && Uniform01(rng) < p) mask[y * kCrop + x] = in ? 0 : 255;
    }
  }
}

// Index of the scene shape whose box (grown by 1 px for blur) holds most of the object's pixels;
// -1 when none holds any.
int OwnerShape(const DetectedObject& object, const Scene& scene) {
  int best = -1, best_count = 0;
  for (size_t k = 0; k < scene.shapes.size(); ++k) {
    const Box box = ShapeBox(scene.shapes[k]);
    int count = 0;
    for (const int i : object.pixels) {
      const int x = i % kSize, y = i / kSize;
      count +=
          x >= box.x0 - 1 && x <= box.x0 + box.side && y >= box.y0 - 1 && y <= box.y0 + box.side;
    }
    if (count > best_count) best_count = count, best = static_cast<int>(k);
  }
  return best;
}

Shape ShapeFromIndex(int64_t index) {
  return static_cast<Shape>(std::clamp<int64_t>(index, 0, kNumShapes - 1));
}

}  // namespace

ShapeImage Blur(const ShapeImage& image, int centre) {
  ShapeImage out;
  const int norm = (centre + 2) * (centre + 2);
  for (int c = 0; c < kShapeChannels; ++c) {
    for (int y = 0; y < kSize; ++y) {
      for (int x = 0; x < kSize; ++x) {
        int sum = 0;
        for (int dy = -1; dy <= 1; ++dy) {
          for (int dx = -1; dx <= 1; ++dx) {
            const int sx = std::clamp(x + dx, 0, kSize - 1), sy = std::clamp(y + dy, 0, kSize - 1);
            const int w = (dx == 0 ? centre : 1) * (dy == 0 ? centre : 1);
            sum += w * image[c * kPlane + sy * kSize + sx];
          }
        }
        out[c * kPlane + y * kSize + x] = static_cast<uint8_t>((sum + norm / 2) / norm);
      }
    }
  }
  return out;
}

ShapeMaskCrop CropObjectMask(const DetectedObject& object) {
  const ShapeFeatures& f = object.features;
  // Offsets that put the box centre ((x0 + x1 + 1) / 2) on the crop centre.
  const int ox = (f.x0 + f.x1 + 1) / 2 - kCrop / 2;
  const int oy = (f.y0 + f.y1 + 1) / 2 - kCrop / 2;
  ShapeMaskCrop crop{};
  for (const int i : object.pixels) {
    const int x = i % kSize - ox, y = i / kSize - oy;
    if (x >= 0 && y >= 0 && x < kCrop && y < kCrop) crop[y * kCrop + x] = 255;
  }
  return crop;
}

InMemoryDataset MakeShapeMaskDataset(int64_t scenes, uint64_t seed,
                                     const ShapeMaskOptions& options) {
  // Scenes and degradations draw from separate streams, so the scenes are SampleScene(seed)'s
  // whatever the augmentation.
  std::mt19937_64 scene_rng(seed);
  std::mt19937_64 aug_rng(seed ^ 0x9e3779b97f4a7c15ULL);
  const SceneOptions scene_options{.two_shape_probability = options.two_shape_probability,
                                   .hold_out = HoldOut::kInclude};
  // The shape decision is what is being learned; AnalyzeImage's own guess is not needed.
  const ShapeClassifier unused = [](const ShapeImage&, const DetectedObject&) {
    return Shape::kCircle;
  };
  std::vector<ShapeMaskCrop> masks;
  std::vector<int64_t> labels;
  for (int64_t s = 0; s < scenes; ++s) {
    const Scene scene = SampleScene(scene_rng, scene_options);
    ShapeImage image = RenderScene(scene);
    if (options.augment) image = Degrade(image, aug_rng);
    const Analysis analysis = AnalyzeImage(image, unused);
    if (analysis.objects.size() != scene.shapes.size()) continue;
    std::vector<int> owners;
    for (const DetectedObject& obj : analysis.objects) owners.push_back(OwnerShape(obj, scene));
    if (owners.size() == 2 && owners[0] == owners[1]) continue;
    if (std::find(owners.begin(), owners.end(), -1) != owners.end()) continue;
    for (size_t k = 0; k < owners.size(); ++k) {
      ShapeMaskCrop mask = CropObjectMask(analysis.objects[k]);
      if (options.augment && Uniform(aug_rng, 2) == 0) {
        FlipEdges(mask, options.edge_flip_probability, aug_rng);
      }
      masks.push_back(mask);
      labels.push_back(static_cast<int64_t>(scene.shapes[owners[k]].shape));
    }
  }
  const int64_t m = static_cast<int64_t>(masks.size());
  InMemoryDataset ds;
  ds.num_classes = kNumShapes;
  ds.images = torch::empty({m, 1, kCrop, kCrop}, torch::kUInt8);
  ds.labels = torch::empty({m}, torch::kLong);
  for (int64_t i = 0; i < m; ++i) {
    std::memcpy(ds.images.data_ptr<uint8_t>() + i * kCrop * kCrop, masks[i].data(),
                masks[i].size());
    ds.labels.data_ptr<int64_t>()[i] = labels[i];
  }
  return ds;
}

TrainedShapeClassifier TrainShapeClassifier(const ShapeClassifierTraining& options) {
  const uint64_t seed = options.training.seed;
  const InMemoryDataset train = MakeShapeMaskDataset(options.train_scenes, seed, options.masks);
  const InMemoryDataset test =
      MakeShapeMaskDataset(options.test_scenes, seed + 1000003, options.masks);
  TrainedShapeClassifier out;
  out.model = TrainClassifier(train, test, options.training, &out.test_accuracy);
  return out;
}

absl::Status SaveShapeClassifier(const std::string& dir, Classifier& model, double test_accuracy) {
  return SaveClassifier(dir, model, test_accuracy);
}

absl::StatusOr<Classifier> LoadShapeClassifier(const std::string& dir, double* test_accuracy) {
  absl::StatusOr<Classifier> model = LoadClassifier(dir, test_accuracy);
  if (!model.ok()) return model.status();
  if ((*model)->channels() != 1 || (*model)->image_size() != kCrop ||
      (*model)->num_classes() != kNumShapes) {
    return absl::InvalidArgumentError(
        absl::StrCat(dir, ": not a shape classifier (channels ", (*model)->channels(),
                     ", image_size ", (*model)->image_size(), ", num_classes ",
                     (*model)->num_classes(), "; want 1, ", kCrop, ", ", kNumShapes, ")"));
  }
  return model;
}

torch::Tensor PredictShapes(Classifier& model, const torch::Tensor& masks) {
  return Predict(model, masks.to(torch::kFloat) / 127.5 - 1.0);
}

double ShapeAccuracy(Classifier& model, const InMemoryDataset& masks) {
  return (PredictShapes(model, masks.images) == masks.labels)
      .to(torch::kDouble)
      .mean()
      .item<double>();
}

ShapeClassifier LearnedShapeClassifier(Classifier model) {
  return [model](const ShapeImage&, const DetectedObject& object) mutable {
    const ShapeMaskCrop crop = CropObjectMask(object);
    // from_blob does not copy; the crop outlives the call.
    const torch::Tensor x =
        torch::from_blob(const_cast<uint8_t*>(crop.data()), {1, 1, kCrop, kCrop}, torch::kUInt8);
    torch::NoGradGuard no_grad;
    return ShapeFromIndex(
        model->forward(x.to(torch::kFloat) / 127.5 - 1.0).argmax(1).item<int64_t>());
  };
}

}  // namespace dartserve::eval

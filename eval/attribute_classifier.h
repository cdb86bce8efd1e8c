// A learned shape classifier for the procedural shapes world (data/shapes.h), the learned half of
// the GenEval-style prompt-adherence check: it plugs into AnalyzeImage (eval/shape_analysis.h)
// as a ShapeClassifier and decides each detected object's shape.
//
// What it sees: the object's binary mask (DetectedObject::pixels, after AnalyzeImage's
// half-maximum trimming) as a 1-channel kShapeMaskCrop x kShapeMaskCrop image with the object's
// bounding box centred. Colour, background and position are therefore invisible to it, so they
// cannot leak into the shape decision, and held-out (shape, colour) combinations look exactly
// like trained ones. The crop is 16 px because the largest rendered shape is 11 px; pixels of a
// bigger object fall outside it and are dropped.
//
// How it is trained: on the masks AnalyzeImage finds in rendered scenes (one and two shapes,
// every combination), each scene first degraded the way a generated image is (a [1 2 1] or a
// 3x3 box blur, uniform noise, or clean), and each mask then given random flips of pixels on its
// edge, so imperfect samples are judged by their shape rather than by their ragged outline. The
// network is eval/classifier.h's Classifier (1 channel, 16x16, 5 classes) trained by
// TrainClassifier and stored in its folder format.
#ifndef DARTSERVE_EVAL_ATTRIBUTE_CLASSIFIER_H_
#define DARTSERVE_EVAL_ATTRIBUTE_CLASSIFIER_H_

#include <torch/torch.h>

#include <array>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "data/dataset.h"
#include "eval/classifier.h"
#include "eval/shape_analysis.h"

namespace dartserve::eval {

inline constexpr int kShapeMaskCrop = 16;
// The shipped classifier, relative to the repository root.
inline constexpr char kShapeClassifierDir[] = "weights/shapes-classifier";

// The classifier's view of one object: row-major kShapeMaskCrop^2 bytes, 255 on the object's
// pixels and 0 elsewhere, translated so the centre of the object's bounding box falls on the
// crop's centre (pixel kShapeMaskCrop / 2 for an odd extent).
using ShapeMaskCrop = std::array<uint8_t, kShapeMaskCrop * kShapeMaskCrop>;
ShapeMaskCrop CropObjectMask(const DetectedObject& object);

// A separable 3x3 blur with edge-clamped borders: taps (1, centre, 1) / (centre + 2) per axis.
// centre 2 is the [1 2 1] blur, centre 1 the box blur. One of the degradations the classifier
// trains on, standing in for a generated image's soft edges.
data::ShapeImage Blur(const data::ShapeImage& image, int centre);

struct ShapeMaskOptions {
  // Degrade each scene before analysis (blur/noise) and flip mask-edge pixels afterwards.
  bool augment = true;
  double two_shape_probability = 0.35;
  // Probability of flipping each pixel on the mask's edge (object pixels with a background
  // 4-neighbour and background pixels with an object 4-neighbour), on the half of the masks that
  // get edge flips.
  double edge_flip_probability = 0.15;
};

// Masks of the objects AnalyzeImage finds in `scenes` scenes drawn from SampleScene(seed, every
// combination), labelled with the shape of the scene shape whose box holds most of the object's
// pixels. Scenes where the analysis does not find exactly one object per shape are skipped (the
// checker would fail their count anyway), so the result may hold a few fewer masks than shapes.
// images [M, 1, 16, 16] uint8, labels [M] = Shape, num_classes = kNumShapes. Deterministic by
// `seed`.
data::InMemoryDataset MakeShapeMaskDataset(int64_t scenes, uint64_t seed,
                                           const ShapeMaskOptions& options = {});

struct ShapeClassifierTraining {
  int64_t train_scenes = 30000;  // ~40k masks
  int64_t test_scenes = 3000;
  ShapeMaskOptions masks;
  // Passed to TrainClassifier (its seed also picks the training scenes; the test scenes use
  // seed + 1000003, so they never repeat a training scene's random stream).
  ClassifierTraining training{.epochs = 5, .batch_size = 64, .lr = 2e-3, .seed = 1};
};

struct TrainedShapeClassifier {
  Classifier model{nullptr};
  double test_accuracy = 0;  // on the test scenes' masks (made with the same ShapeMaskOptions)
};

// Trains on MakeShapeMaskDataset masks. Deterministic for a given seed and torch thread count; the
// default takes about 35 s on one CPU thread.
TrainedShapeClassifier TrainShapeClassifier(const ShapeClassifierTraining& options = {});

// SaveClassifier's folder format (classifier.json with test_accuracy, classifier.safetensors).
absl::Status SaveShapeClassifier(const std::string& dir, Classifier& model, double test_accuracy);
// LoadClassifier, plus INVALID_ARGUMENT when the folder holds a classifier of another geometry
// (anything but 1 channel, kShapeMaskCrop px, kNumShapes classes).
absl::StatusOr<Classifier> LoadShapeClassifier(const std::string& dir,
                                               double* test_accuracy = nullptr);

// Shapes of a batch of crops ([M, 1, 16, 16] uint8, as MakeShapeMaskDataset makes): [M] int64.
torch::Tensor PredictShapes(Classifier& model, const torch::Tensor& masks);
// Fraction of a MakeShapeMaskDataset set that PredictShapes gets right.
double ShapeAccuracy(Classifier& model, const data::InMemoryDataset& masks);

// A ShapeClassifier that runs `model` on CropObjectMask(object). The function shares `model`
// (a module holder), which must stay in eval mode; calls run without autograd and only read the
// weights, so one function may be used from several threads.
ShapeClassifier LearnedShapeClassifier(Classifier model);

}  // namespace dartserve::eval

#endif  // DARTSERVE_EVAL_ATTRIBUTE_CLASSIFIER_H_

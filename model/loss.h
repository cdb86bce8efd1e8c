// DART training loss (docs/model.md, "Schedule and loss").
//
// For each image, every x_t (t = 1..T) is drawn independently from x_0 (non-Markovian forward
// process); the whole trajectory [x_T | ... | x_1] goes through the model in one teacher-forced,
// block-causal forward pass, and each block's x_0 prediction is scored by MSE, weighted by the
// schedule's per-block weight. Conditions are replaced by the null class (text: the empty prompt)
// with probability config.cond_dropout so the same model provides the unconditional branch for
// guidance.
#ifndef DARTSERVE_MODEL_LOSS_H_
#define DARTSERVE_MODEL_LOSS_H_

#include <torch/torch.h>

#include <functional>

#include "model/dart.h"
#include "model/schedule.h"

namespace dartserve::model {

struct DartLoss {
  torch::Tensor loss;  // scalar, differentiable
  torch::Tensor
      per_block;       // [T] unweighted MSE of the mean head per block (block 0 = x_T), detached
  torch::Tensor flow;  // flow head: weighted flow-matching loss, detached (else undefined)
};

// images: [B, C, H, W] in [-1, 1]; cond_ids: [B] int64 (class ids; ignored for unconditional
// models). All randomness (noise, dropout) comes from `generator`, so a step is reproducible.
// For dart_ar the sequence is shifted by one token and ends with the clean block (docs/model.md,
// "Token-level autoregression"); the prediction of each token of x_{t-1} is scored like DART's
// prediction at block x_t. With a flow head (docs/model.md, "Flow head") the loss is the
// block-weighted rectified-flow loss of the head, at config.flow_times flow times per token, plus
// flow_mean_weight times the mean-head loss.
DartLoss ComputeDartLoss(Dart& model, const NoiseSchedule& schedule, const torch::Tensor& images,
                         const torch::Tensor& cond_ids, torch::Generator& generator);
// The same for text models: `prompts` are the images' captions as padded ids (Dart::EncodePrompts
// or PadBatch); dropout replaces a caption with the empty prompt [BOS, EOS].
DartLoss ComputeDartLoss(Dart& model, const NoiseSchedule& schedule, const torch::Tensor& images,
                         const TextBatch& prompts, torch::Generator& generator);

}  // namespace dartserve::model

#endif  // DARTSERVE_MODEL_LOSS_H_

#include "model/loss.h"

#include <cmath>
#include <vector>

namespace dartserve::model {
namespace {

// The condition of a batch given which rows dropout replaces with the null condition ([B] bool, or
// undefined when nothing is dropped).
using ConditionFn = std::function<Condition(const torch::Tensor& drop)>;

DartLoss Loss(Dart& model, const NoiseSchedule& schedule, const torch::Tensor& images,
              const ConditionFn& condition, torch::Generator& generator) {
  const ModelConfig& c = model->config();
  const int64_t b = images.size(0);
  const int64_t t_steps = c.num_steps;
  const int64_t k = c.tokens_per_block();
  const int64_t d = c.token_dim();
  const auto opts = images.options();

  // Per-block coefficients, block index i holds t = T - i.
  std::vector<float> signal(t_steps), noise(t_steps), weight(t_steps);
  for (int64_t i = 0; i < t_steps; ++i) {
    const int t = StepOfBlock(static_cast<int>(i), c.num_steps);
    signal[i] = static_cast<float>(std::sqrt(schedule.alpha(t)));
    noise[i] = static_cast<float>(std::sqrt(1.0 - schedule.alpha(t)));
    weight[i] = static_cast<float>(schedule.weight(t));
  }
  const auto to_tensor = [&](const std::vector<float>& v) {
    return torch::tensor(v, torch::kFloat).to(images.device()).view({1, t_steps, 1, 1});
  };

  const torch::Tensor x0 = Patchify(images, c.patch_size).unsqueeze(1);  // [B, 1, K, d]
  // Independent noise for every step: drawn on the CPU generator for device-independent runs.
  const torch::Tensor eps =
      torch::randn({b, t_steps, k, d}, generator, torch::kFloat).to(opts.device());
  const torch::Tensor xt = to_tensor(signal) * x0 + to_tensor(noise) * eps;  // [B, T, K, d]

  torch::Tensor drop;
  if (c.conditioning != Conditioning::kNone && c.cond_dropout > 0) {
    drop = torch::rand({b}, generator, torch::kFloat) < c.cond_dropout;
  }
  const Condition cond = condition(drop);

  torch::Tensor features;
  if (c.autoregressive()) {
    // dart_ar (docs/model.md, "Token-level autoregression"): teacher-force [x_T | ... | x_1 | x_0]
    // minus the last token; position i predicts token i + 1, so the outputs from the last token of
    // x_T on predict the blocks x_{T-1} ... x_0 in order. Predicting x_{t-1}'s tokens is weighted
    // like DART's block x_t, so the targets and weights line up with the dart path below.
    const torch::Tensor seq = torch::cat({xt, x0}, 1).reshape({b, (t_steps + 1) * k, d});
    features = model->ForwardFeatures(seq.narrow(1, 0, seq.size(1) - 1), cond)
                   .narrow(1, k - 1, t_steps * k);
  } else {
    features = model->ForwardFeatures(xt.reshape({b, t_steps * k, d}), cond);
  }
  const torch::Tensor pred = model->MeanHead(features);
  const torch::Tensor per_block =
      (pred.view({b, t_steps, k, d}) - x0).pow(2).mean({2, 3}).mean(0);  // [T]
  const torch::Tensor w = to_tensor(weight).view({t_steps});
  // Weights sum to T, so this is a weighted mean over blocks.
  const torch::Tensor mean_loss = (per_block * w).sum() / static_cast<double>(t_steps);
  if (!c.flow()) return {mean_loss, per_block.detach(), torch::Tensor()};

  // Rectified flow to each token's x_0 patch, at `flow_times` independent times per token. The
  // modulation depends only on the backbone output, so it is computed once per token and shared.
  const int64_t n = b * t_steps * k, f = c.flow_times;
  const torch::Tensor modulation =
      model->flow_head()->Modulation(features.reshape({n, -1})).repeat_interleave(f, 0);
  const torch::Tensor target =
      x0.expand({b, t_steps, k, d}).reshape({n, d}).repeat_interleave(f, 0);
  const torch::Tensor s = torch::rand({n * f}, generator, torch::kFloat).to(opts.device());
  const torch::Tensor flow_noise =
      torch::randn({n * f, d}, generator, torch::kFloat).to(opts.device());
  const torch::Tensor y = s.unsqueeze(1) * target + (1 - s).unsqueeze(1) * flow_noise;
  const torch::Tensor v = model->flow_head()->Velocity(y, s, modulation);
  const torch::Tensor flow_per_block =
      (v - (target - flow_noise)).pow(2).view({b, t_steps, k * f, d}).mean({2, 3}).mean(0);  // [T]
  const torch::Tensor flow_loss = (flow_per_block * w).sum() / static_cast<double>(t_steps);
  return {flow_loss + c.flow_mean_weight * mean_loss, per_block.detach(), flow_loss.detach()};
}

}  // namespace

DartLoss ComputeDartLoss(Dart& model, const NoiseSchedule& schedule, const torch::Tensor& images,
                         const torch::Tensor& cond_ids, torch::Generator& generator) {
  const ModelConfig& c = model->config();
  return Loss(
      model, schedule, images,
      [&](const torch::Tensor& drop) {
        torch::Tensor ids = cond_ids.to(torch::kLong).cpu();
        if (c.conditioning == Conditioning::kNone) {
          ids = torch::zeros_like(ids);
        } else if (drop.defined()) {
          ids = torch::where(drop, torch::full_like(ids, c.null_class()), ids);
        }
        return model->ClassCondition(ids);
      },
      generator);
}

DartLoss ComputeDartLoss(Dart& model, const NoiseSchedule& schedule, const torch::Tensor& images,
                         const TextBatch& prompts, torch::Generator& generator) {
  return Loss(
      model, schedule, images,
      [&](const torch::Tensor& drop) {
        if (!drop.defined()) return model->TextCondition(prompts);
        // The empty prompt, padded like the batch: [BOS, EOS, pad, ...].
        const int64_t length = prompts.tokens.size(1);
        torch::Tensor empty_ids = torch::full({length}, Tokenizer::kPadId, torch::kLong);
        torch::Tensor empty_mask = torch::zeros({length}, torch::kBool);
        empty_ids[0] = Tokenizer::kBosId;
        empty_ids[1] = Tokenizer::kEosId;
        empty_mask.narrow(0, 0, 2).fill_(true);
        const torch::Tensor row = drop.cpu().unsqueeze(1);
        return model->TextCondition(
            {torch::where(row, empty_ids.unsqueeze(0), prompts.tokens.cpu()),
             torch::where(row, empty_mask.unsqueeze(0), prompts.mask.cpu())});
      },
      generator);
}

}  // namespace dartserve::model

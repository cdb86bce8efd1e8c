#include "train/batch_loader.h"

#include <vector>

namespace dartserve::train {

uint64_t MixSeed(uint64_t a, uint64_t b) {
  uint64_t z = a + 0x9e3779b97f4a7c15ULL * (b + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

BatchLoader::BatchLoader(const data::InMemoryDataset& data, int batch_size, uint64_t seed,
                         int64_t start)
    : data_(data), batch_size_(batch_size), seed_(seed), next_to_make_(start) {
  thread_ = std::thread([this] { Loop(); });
}

BatchLoader::~BatchLoader() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

BatchLoader::Item BatchLoader::Next(int64_t step) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return !ready_.empty(); });
  Item item = std::move(ready_.front());
  ready_.pop_front();
  cv_.notify_all();
  TORCH_CHECK(item.step == step, "batch loader out of sync");
  return item;
}

torch::Tensor BatchLoader::Permutation(int64_t epoch) {
  if (epoch != perm_epoch_) {
    torch::Generator gen =
        at::make_generator<at::CPUGeneratorImpl>(MixSeed(seed_, 0x5eed0000 + epoch));
    perm_ = torch::randperm(data_.size(), gen, torch::kLong);
    perm_epoch_ = epoch;
  }
  return perm_;
}

void BatchLoader::Loop() {
  const int64_t n = data_.size();
  while (true) {
    int64_t step;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stop_ || ready_.size() < kDepth; });
      if (stop_) return;
      step = next_to_make_++;
    }
    std::vector<int64_t> idx(batch_size_);
    for (int i = 0; i < batch_size_; ++i) {
      const int64_t g = step * batch_size_ + i;
      idx[i] = Permutation(g / n)[g % n].item<int64_t>();
    }
    const torch::Tensor indices = torch::tensor(idx, torch::kLong);
    auto [images, labels] = data_.Batch(indices);
    {
      std::lock_guard<std::mutex> lock(mu_);
      ready_.push_back({step, images, labels, indices});
    }
    cv_.notify_all();
  }
}

}  // namespace dartserve::train

// Training batches prepared on a thread of their own, a few steps ahead, in an order that depends
// only on (seed, step): batch s holds global sample positions [s*B, (s+1)*B), each mapped through
// its epoch's permutation. That is what makes resuming at step s reproduce step s exactly.
// Thread-compatibility: one thread calls Next(); the loader's own thread is internal.
#ifndef DARTSERVE_TRAIN_BATCH_LOADER_H_
#define DARTSERVE_TRAIN_BATCH_LOADER_H_

#include <torch/torch.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>

#include "data/dataset.h"

namespace dartserve::train {

// A 64-bit mix (splitmix64), used to derive per-step and per-epoch generator seeds.
uint64_t MixSeed(uint64_t a, uint64_t b);

class BatchLoader {
 public:
  struct Item {
    int64_t step;
    torch::Tensor images, labels, indices;  // images as floats in [-1, 1]
  };

  // `data` must outlive the loader; the first batch made is that of step `start`.
  BatchLoader(const data::InMemoryDataset& data, int batch_size, uint64_t seed, int64_t start);
  ~BatchLoader();

  // The batch of `step`, which must be the step after the previous call's.
  Item Next(int64_t step);

 private:
  static constexpr size_t kDepth = 4;

  torch::Tensor Permutation(int64_t epoch);
  void Loop();

  const data::InMemoryDataset& data_;
  const int batch_size_;
  const uint64_t seed_;
  torch::Tensor perm_;
  int64_t perm_epoch_ = -1;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> ready_;
  int64_t next_to_make_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace dartserve::train

#endif  // DARTSERVE_TRAIN_BATCH_LOADER_H_

// KvArena: the KV caches of a sampler's requests as rows of a few large per-layer tensors, so that
// rows allocated one after another sit next to each other and a batched step attends over them in
// place (docs/model.md, "KV arena").
//
// Without it each row had tensors of its own, and every step stacked the cache prefixes of the
// rows it attended together (DartImpl::ForwardStepFeatures): a copy of every row's whole prefix,
// per layer and per step. With it, rows that a step attends together and that hold consecutive
// slots of one block are one view of the block: K/V are written and read in place.
//
// Allocation is next-fit: a row takes the first free slot at or after the previous allocation's
// (wrapping around), and a block of `rows_per_block` slots is added only when every block is full,
// so the rows of requests started together (and a guided request's two rows) are consecutive. A
// block is freed when its last row is, except the last block left. Memory: at most
// rows_per_block - 1 rows beyond the peak of live rows, rounded up to whole blocks.
//
// Thread-safety: Allocate is called by the sampler's thread; a row is given back when its cache is
// destroyed, which may be on another thread (a scheduler drops finished requests on its own
// worker), so the free lists are guarded. The rows' tensors are used only by the sampler's thread.
#ifndef DARTSERVE_MODEL_KV_ARENA_H_
#define DARTSERVE_MODEL_KV_ARENA_H_

#include <torch/torch.h>

#include <cstdint>
#include <memory>

#include "model/config.h"
#include "model/dart.h"

namespace dartserve::model {

class KvArena {
 public:
  // Rows shaped for `config`'s caches, made with `options` (dtype and device: the model's).
  KvArena(const ModelConfig& config, const torch::TensorOptions& options,
          int64_t rows_per_block = 16);
  ~KvArena();
  KvArena(const KvArena&) = delete;
  KvArena& operator=(const KvArena&) = delete;

  // One row: a KvCache whose k and v are views of its slot, with KvCache::block_* set. The row
  // stays allocated until the returned cache (and every copy of it) is destroyed, even if the
  // arena goes first. Throws what LibTorch throws when a new block cannot be allocated.
  KvCache Allocate();

  // Blocks held now (for tests and metrics).
  int64_t blocks() const;

 private:
  struct Shared;
  std::shared_ptr<Shared> shared_;
};

}  // namespace dartserve::model

#endif  // DARTSERVE_MODEL_KV_ARENA_H_

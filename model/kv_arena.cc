#include "model/kv_arena.h"

#include <list>
#include <mutex>
#include <vector>

namespace dartserve::model {

namespace {

struct Block {
  std::vector<torch::Tensor> k, v;  // per layer [slots, heads, L, head_dim]
  std::vector<bool> used;
  int64_t live = 0;
};

}  // namespace

struct KvArena::Shared {
  ModelConfig config;
  torch::TensorOptions options;
  int64_t rows_per_block = 0;

  std::mutex mu;
  std::list<Block> blocks;  // guarded by mu; a list, so a block's address is stable
  // Where the previous allocation was (guarded by mu): next-fit starts right after it.
  std::list<Block>::iterator cursor_block;
  int64_t cursor_slot = 0;

  // Gives back row `slot` of `block`; frees the block once it is empty, unless it is the last.
  void Release(Block* block, int64_t slot) {
    std::lock_guard<std::mutex> lock(mu);
    block->used[slot] = false;
    if (--block->live > 0 || blocks.size() == 1) return;
    for (auto it = blocks.begin(); it != blocks.end(); ++it) {
      if (&*it != block) continue;
      if (it == cursor_block) {  // next fit goes on from the following block (or the first)
        cursor_block = std::next(it);
        cursor_slot = 0;
      }
      blocks.erase(it);
      return;
    }
  }

  struct Lease;

  Block& AddBlock() {
    Block block;
    const std::vector<int64_t> shape = {rows_per_block, config.heads, config.sequence_length(),
                                        config.head_dim()};
    for (int layer = 0; layer < config.depth; ++layer) {
      block.k.push_back(torch::empty(shape, options));
      block.v.push_back(torch::empty(shape, options));
    }
    block.used.assign(rows_per_block, false);
    blocks.push_back(std::move(block));
    return blocks.back();
  }
};

// Returns its row to the arena when the last copy of the cache holding it goes.
struct KvArena::Shared::Lease {
  std::shared_ptr<Shared> arena;
  Block* block;
  int64_t slot;
  ~Lease() { arena->Release(block, slot); }
};

KvArena::KvArena(const ModelConfig& config, const torch::TensorOptions& options,
                 int64_t rows_per_block)
    : shared_(std::make_shared<Shared>()) {
  shared_->config = config;
  shared_->options = options;
  shared_->rows_per_block = std::max<int64_t>(1, rows_per_block);
  shared_->cursor_block = shared_->blocks.end();
}

KvArena::~KvArena() = default;

int64_t KvArena::blocks() const {
  std::lock_guard<std::mutex> lock(shared_->mu);
  return static_cast<int64_t>(shared_->blocks.size());
}

KvCache KvArena::Allocate() {
  Shared& a = *shared_;
  Block* block = nullptr;
  int64_t slot = -1;
  {
    std::lock_guard<std::mutex> lock(a.mu);
    // Next fit: from the cursor to the end of the blocks, then from the first block around.
    const size_t n = a.blocks.size();
    auto it = a.cursor_block == a.blocks.end() ? a.blocks.begin() : a.cursor_block;
    int64_t from = a.cursor_block == a.blocks.end() ? 0 : a.cursor_slot;
    for (size_t tried = 0; tried <= n && n > 0 && slot < 0; ++tried) {
      for (int64_t s = from; s < a.rows_per_block; ++s) {
        if (!it->used[s]) {
          block = &*it;
          slot = s;
          break;
        }
      }
      if (slot >= 0) break;
      if (++it == a.blocks.end()) it = a.blocks.begin();
      from = 0;
    }
    if (slot < 0) {
      block = &a.AddBlock();
      it = std::prev(a.blocks.end());
      slot = 0;
    }
    block->used[slot] = true;
    ++block->live;
    a.cursor_block = it;
    a.cursor_slot = slot + 1;
  }
  KvCache cache;
  cache.block_k = block->k;
  cache.block_v = block->v;
  cache.slot = slot;
  for (size_t layer = 0; layer < block->k.size(); ++layer) {
    cache.k.push_back(block->k[layer][slot]);
    cache.v.push_back(block->v[layer][slot]);
  }
  // Constructed in place: a temporary Lease would give the row back when it is destroyed.
  cache.lease = std::shared_ptr<Shared::Lease>(new Shared::Lease{shared_, block, slot});
  return cache;
}

}  // namespace dartserve::model

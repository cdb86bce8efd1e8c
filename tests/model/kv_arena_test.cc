#include "model/kv_arena.h"

#include <gtest/gtest.h>

#include <vector>

namespace dartserve::model {
namespace {

// Rows allocated one after another are consecutive slots of one block; a full arena adds a block;
// freed rows are reused next-fit; an empty block is freed unless it is the last.
TEST(KvArenaTest, NextFitRowsInBlocks) {
  const ModelConfig config = ModelConfig::Tiny();
  KvArena arena(config, torch::TensorOptions(), /*rows_per_block=*/4);
  EXPECT_EQ(arena.blocks(), 0);
  std::vector<KvCache> rows;
  for (int i = 0; i < 4; ++i) rows.push_back(arena.Allocate());
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(rows[i].slot, i);
    EXPECT_TRUE(rows[i].block_k[0].is_same(rows[0].block_k[0]));
    ASSERT_EQ(rows[i].k.size(), static_cast<size_t>(config.depth));
    EXPECT_EQ(rows[i].k[0].sizes(), (std::vector<int64_t>{config.heads, config.sequence_length(),
                                                           config.head_dim()}));
    // The row is a view of its slot: what it writes, the block holds.
    rows[i].k[1].fill_(static_cast<float>(i));
    EXPECT_EQ(rows[i].block_k[1][i].max().item<float>(), static_cast<float>(i));
  }
  EXPECT_EQ(arena.blocks(), 1);
  rows.push_back(arena.Allocate());  // full: a second block
  EXPECT_EQ(arena.blocks(), 2);
  EXPECT_EQ(rows.back().slot, 0);
  EXPECT_FALSE(rows.back().block_k[0].is_same(rows[0].block_k[0]));

  rows[1] = KvCache();  // frees slot 1 of the first block
  rows[2] = KvCache();
  KvCache next = arena.Allocate();  // next fit goes on in the second block
  EXPECT_EQ(next.slot, 1);
  EXPECT_TRUE(next.block_k[0].is_same(rows[4].block_k[0]));
  rows[4] = KvCache();
  next = KvCache();  // the second block is empty: freed
  EXPECT_EQ(arena.blocks(), 1);
  KvCache again = arena.Allocate();  // wraps around to the first block's free slots
  EXPECT_EQ(again.slot, 1);
  EXPECT_TRUE(again.block_k[0].is_same(rows[0].block_k[0]));
  rows.clear();
  again = KvCache();
  EXPECT_EQ(arena.blocks(), 1);  // the last block stays for the next request
}

// A row outlives the arena that made it.
TEST(KvArenaTest, RowsOutliveTheArena) {
  KvCache row;
  {
    KvArena arena(ModelConfig::Tiny(), torch::TensorOptions(), 2);
    row = arena.Allocate();
  }
  row.v[0].fill_(1.0f);
  EXPECT_EQ(row.v[0].sum().item<float>(), static_cast<float>(row.v[0].numel()));
}

}  // namespace
}  // namespace dartserve::model

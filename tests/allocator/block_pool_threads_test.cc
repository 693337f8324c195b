// Several threads share one PoolConcurrency::kShared pool, each with its own
// tables and reservation. Meant to run under --config=tsan as well; the books
// must balance exactly at the end.
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "allocator/block_id.h"
#include "allocator/block_pool.h"
#include "allocator/block_table.h"
#include "allocator/copy_on_write.h"
#include "allocator/pool_stats.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace pagedkv {
namespace {

using ::pagedkv::testing::IsOk;

std::unique_ptr<BlockPool> MakeSharedPool(int32_t num_blocks) {
  BlockPool::Options options;
  options.num_blocks = num_blocks;
  options.concurrency = PoolConcurrency::kShared;
  return *BlockPool::Create(options);
}

// One thread's workload: its own tables (a sequence and its forks) and an
// optional reservation, on the shared pool. Counts its own failures.
void RunWorker(BlockPool* pool, uint32_t seed, int num_ops) {
  std::mt19937 rng(seed);
  std::optional<Reservation> reservation;
  std::vector<BlockTable> tables;
  tables.emplace_back(pool);
  for (int op = 0; op < num_ops; ++op) {
    Reservation* r =
        reservation.has_value() && rng() % 2 == 0 ? &*reservation : nullptr;
    const int t = static_cast<int>(rng() % tables.size());
    switch (rng() % 9) {
      case 0:
      case 1: {
        const absl::Status s =
            tables[t].Grow(static_cast<int32_t>(rng() % 4), r);
        EXPECT_TRUE(s.ok() || s.code() == absl::StatusCode::kResourceExhausted)
            << s;
        break;
      }
      case 2:
        if (tables.size() < 6) tables.push_back(tables[t].Fork());
        break;
      case 3:
        if (!tables[t].empty()) {
          const int32_t i =
              static_cast<int32_t>(rng() % tables[t].num_blocks());
          absl::StatusOr<std::optional<CopyOp>> cow =
              tables[t].PrepareWrite(i, r);
          EXPECT_TRUE(cow.ok() || cow.status().code() ==
                                      absl::StatusCode::kResourceExhausted)
              << cow.status();
        }
        break;
      case 4:
        tables[t].DropFront(
            static_cast<int32_t>(rng() % (tables[t].num_blocks() + 1)));
        break;
      case 5:
        tables[t].DropBack(
            static_cast<int32_t>(rng() % (tables[t].num_blocks() + 1)));
        break;
      case 6: {
        std::vector<int32_t> indices;
        const int n = 1 + static_cast<int>(rng() % 4);
        for (int k = 0; k < n; ++k) {
          indices.push_back(static_cast<int32_t>(rng() % tables.size()));
        }
        tables = GatherTables(tables, indices);
        break;
      }
      case 7:
        if (reservation.has_value()) {
          if (rng() % 4 == 0) {
            reservation.reset();
          } else {
            const absl::Status s =
                reservation->Resize(static_cast<int32_t>(rng() % 6));
            EXPECT_TRUE(s.ok() ||
                        s.code() == absl::StatusCode::kResourceExhausted ||
                        s.code() == absl::StatusCode::kFailedPrecondition)
                << s;
          }
        } else {
          absl::StatusOr<Reservation> got =
              pool->Reserve(static_cast<int32_t>(rng() % 4));
          if (got.ok()) reservation.emplace(*std::move(got));
        }
        break;
      case 8:
        if (tables.size() > 1) tables.erase(tables.begin() + t);
        break;
    }
    for (const BlockTable& table : tables) table.CheckInvariants();
    if (op % 1024 == 0) pool->CheckInvariants();
  }
}

TEST(BlockPoolThreadsTest, FourThreadsKeepTheBooksBalanced) {
  std::unique_ptr<BlockPool> pool = MakeSharedPool(96);
  constexpr int kThreads = 4;
  constexpr int kOps = 20000;
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back(RunWorker, pool.get(), 1000 + i, kOps);
  }
  for (std::thread& t : threads) t.join();
  pool->CheckInvariants();
  const PoolStats s = pool->stats();
  EXPECT_EQ(s.num_free_blocks, s.num_blocks);
  EXPECT_EQ(s.num_reserved_blocks, 0);
  EXPECT_EQ(s.num_reservations, 0);
  EXPECT_EQ(s.num_shared_blocks, 0);
  EXPECT_GT(s.num_allocations, 0);
}

// The reservation guarantee under concurrency: greedy threads never make the
// reserved owner fail.
TEST(BlockPoolThreadsTest, ReservedOwnerNeverFailsAgainstGreedyThreads) {
  std::unique_ptr<BlockPool> pool = MakeSharedPool(32);
  constexpr int32_t kCapacity = 8;
  absl::StatusOr<Reservation> reservation = pool->Reserve(kCapacity);
  ASSERT_THAT(reservation, IsOk());

  std::vector<std::thread> greedy;
  for (int g = 0; g < 2; ++g) {
    greedy.emplace_back([&pool, g] {
      std::mt19937 rng(g);
      std::vector<BlockId> held;
      for (int op = 0; op < 20000; ++op) {
        if (rng() % 3 != 0) {
          if (std::optional<BlockId> id = pool->TryAllocate()) {
            held.push_back(*id);
          }
        } else if (!held.empty()) {
          pool->Release(held.back());
          held.pop_back();
        }
      }
      pool->ReleaseAll(held);
    });
  }
  std::mt19937 rng(7);
  BlockTable table(pool.get());
  for (int op = 0; op < 20000; ++op) {
    if (table.num_blocks() < kCapacity) {
      ASSERT_THAT(table.Grow(1, &*reservation), IsOk()) << "op " << op;
    } else {
      table.DropFront(static_cast<int32_t>(1 + rng() % kCapacity));
    }
  }
  for (std::thread& t : greedy) t.join();
  table.Clear();
  pool->CheckInvariants();
  EXPECT_EQ(reservation->num_reserved_free(), kCapacity);
  EXPECT_EQ(pool->num_unreserved_free_blocks(), 32 - kCapacity);
}

}  // namespace
}  // namespace pagedkv

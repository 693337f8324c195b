// Several threads share one PoolConcurrency::kShared pool, each with its own
// tables and reservation. Meant to run under --config=tsan as well; the books
// must balance exactly at the end.
#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
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
using ::pagedkv::testing::StatusIs;

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
  PendingCopies held;  // Copies not yet marked done: their sources stay.
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
          const WriteTarget target[] = {{&tables[t], i}};
          WriteRequest request;
          request.targets = target;
          request.reservation = r;
          absl::StatusOr<PendingCopies> cow = PrepareWrite(*pool, request);
          EXPECT_TRUE(cow.ok() || cow.status().code() ==
                                      absl::StatusCode::kResourceExhausted)
              << cow.status();
          // Sometimes the copies stay pending over later operations.
          if (cow.ok()) held.Append(*std::move(cow));
        }
        if (rng() % 4 == 0) held.MarkDone();
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
        ReorderTables(&tables, indices);
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

// Copy-on-write across threads. The writer thread owns two rows (a fork
// pair) and, round after round, writes into both tails through one
// PrepareWrite; after each write it forks a row and hands the fork to the
// holder thread. The holder concurrently drops, re-forks, reads and writes
// (through its own PrepareWrite) the tables it was handed. So holders drop
// their references between a writer's decision and its copy, and write into
// blocks the writer's pending copies still read, unless the pending copy's
// reference keeps them shared.
//
// The bytes are one plain int64 per block (not atomic, on purpose): under
// TSan a write racing with a copy's read is a report; in any build a stamp
// that changed under a copy fails a check. The books must balance at the end.
class BlockBytes {
 public:
  explicit BlockBytes(int32_t num_blocks) : bytes_(num_blocks, 0) {}
  int64_t Read(BlockId id) const { return bytes_[id.value()]; }
  void Write(BlockId id, int64_t stamp) { bytes_[id.value()] = stamp; }
  void Copy(const CopyOp& op) { Write(op.dst, Read(op.src)); }

 private:
  std::vector<int64_t> bytes_;
};

// A fork handed from the writer to the holder, with the stamp its last block
// must hold.
struct HandedFork {
  BlockTable table;
  int64_t tail_stamp;
};

// std::mutex rather than absl::Mutex: TSan sees its happens-before edges
// (Debian's Abseil is not built with TSan; see base/maybe_lock.h).
class ForkQueue {
 public:
  static constexpr size_t kCapacity = 4;

  // Returns false (and keeps `fork`) when the queue is full.
  bool TryPush(HandedFork* fork) {
    std::lock_guard<std::mutex> lock(mu_);
    if (forks_.size() >= kCapacity) return false;
    forks_.push_back(std::move(*fork));
    return true;
  }
  std::optional<HandedFork> TryPop() {
    std::lock_guard<std::mutex> lock(mu_);
    if (forks_.empty()) return std::nullopt;
    HandedFork fork = std::move(forks_.front());
    forks_.pop_front();
    return fork;
  }

 private:
  std::mutex mu_;
  std::deque<HandedFork> forks_;
};

void RunCopyOnWriteWriter(BlockPool* pool, BlockBytes* bytes, ForkQueue* queue,
                          int num_rounds) {
  std::mt19937 rng(11);
  std::vector<BlockTable> rows;
  rows.emplace_back(pool);
  ASSERT_THAT(rows[0].Grow(2), IsOk());
  rows.push_back(rows[0].Fork());
  int64_t stamp = 1;
  bytes->Write(rows[0][1], stamp);  // The shared tail of both rows.
  int copies_made = 0;
  for (int round = 0; round < num_rounds; ++round) {
    SCOPED_TRACE(::testing::Message() << "writer round " << round);
    if (rng() % 8 == 0) {
      // Move on to a new block in both rows (a block boundary).
      const TableGrowth growth[] = {{&rows[0], 1}, {&rows[1], 1}};
      WriteRequest request;
      request.growth = growth;
      absl::StatusOr<PendingCopies> grown = PrepareWrite(*pool, request);
      if (!grown.ok()) {
        ASSERT_THAT(grown, StatusIs(absl::StatusCode::kResourceExhausted));
        continue;
      }
      ASSERT_TRUE(grown->empty());
      for (BlockTable& row : rows) {
        if (row.num_blocks() > 4) row.DropFront(1);
      }
    } else {
      // A write into both tails.
      const WriteTarget targets[] = {{&rows[0], rows[0].num_blocks() - 1},
                                     {&rows[1], rows[1].num_blocks() - 1}};
      const BlockId before[] = {rows[0][targets[0].block_index],
                                rows[1][targets[1].block_index]};
      WriteRequest request;
      request.targets = targets;
      absl::StatusOr<PendingCopies> copies = PrepareWrite(*pool, request);
      if (!copies.ok()) {
        ASSERT_THAT(copies, StatusIs(absl::StatusCode::kResourceExhausted));
        continue;
      }
      size_t next = 0;
      for (int k = 0; k < 2; ++k) {
        const BlockId now = rows[k][targets[k].block_index];
        if (now == before[k]) continue;  // Kept: no copy for this row.
        ASSERT_LT(next, copies->ops().size());
        const CopyOp& op = copies->ops()[next++];
        EXPECT_EQ(op.src, before[k]);
        EXPECT_EQ(op.dst, now);
        EXPECT_EQ(pool->ref_count(op.dst), 1);  // Only this row has it.
      }
      ASSERT_EQ(next, copies->ops().size());
      std::this_thread::yield();  // Let the holder drop references now.
      for (const CopyOp& op : copies->ops()) {
        EXPECT_GE(pool->ref_count(op.src), 1) << op;  // Held by the copy.
        bytes->Copy(op);
        EXPECT_EQ(bytes->Read(op.dst), stamp) << op;
      }
      copies_made += copies->size();
      copies->MarkDone();
      for (const WriteTarget& t : targets) {
        // Private now: nobody else can read what is written next.
        EXPECT_EQ(pool->ref_count((*t.table)[t.block_index]), 1);
      }
    }
    ++stamp;
    for (BlockTable& row : rows) bytes->Write(row[row.num_blocks() - 1], stamp);
    if (rng() % 2 == 0) {
      HandedFork fork{rows[rng() % 2].Fork(), stamp};
      queue->TryPush(&fork);  // If full, the fork just goes.
    }
  }
  EXPECT_GT(copies_made, 0);
}

void RunCopyOnWriteHolder(BlockPool* pool, BlockBytes* bytes, ForkQueue* queue,
                          const std::atomic<bool>* writer_done) {
  std::mt19937 rng(12);
  std::vector<HandedFork> mine;
  int64_t stamp = 0;  // The holder's stamps are negative.
  for (;;) {
    const bool finished = writer_done->load(std::memory_order_acquire);
    if (std::optional<HandedFork> fork = queue->TryPop()) {
      mine.push_back(*std::move(fork));
    } else if (finished) {
      break;  // Nothing more will come.
    }
    if (mine.empty()) {
      std::this_thread::yield();
      continue;
    }
    const size_t k = rng() % mine.size();
    BlockTable& table = mine[k].table;
    switch (rng() % 5) {
      case 0:
      case 1:  // Done with it: drops its references.
        mine.erase(mine.begin() + k);
        break;
      case 2:  // Shares it further (one more holder).
        if (mine.size() < 8) {
          mine.push_back({table.Fork(), mine[k].tail_stamp});
        }
        break;
      case 3:  // Reads what it holds.
        EXPECT_EQ(bytes->Read(table[table.num_blocks() - 1]),
                  mine[k].tail_stamp);
        break;
      case 4: {  // Writes into its tail.
        const WriteTarget target[] = {{&table, table.num_blocks() - 1}};
        WriteRequest request;
        request.targets = target;
        absl::StatusOr<PendingCopies> copies = PrepareWrite(*pool, request);
        if (!copies.ok()) {
          EXPECT_THAT(copies, StatusIs(absl::StatusCode::kResourceExhausted));
          break;
        }
        for (const CopyOp& op : copies->ops()) {
          bytes->Copy(op);
          EXPECT_EQ(bytes->Read(op.dst), mine[k].tail_stamp) << op;
        }
        copies->MarkDone();
        EXPECT_EQ(pool->ref_count(target[0].table->blocks().back()), 1);
        bytes->Write(table[table.num_blocks() - 1], --stamp);
        mine[k].tail_stamp = stamp;
        break;
      }
    }
  }
}

TEST(BlockPoolThreadsTest, CopyOnWriteSourcesSurviveHoldersDroppingThem) {
  constexpr int32_t kBlocks = 64;
  std::unique_ptr<BlockPool> pool = MakeSharedPool(kBlocks);
  BlockBytes bytes(kBlocks);
  ForkQueue queue;
  std::atomic<bool> writer_done{false};
  std::thread holder(RunCopyOnWriteHolder, pool.get(), &bytes, &queue,
                     &writer_done);
  std::thread writer([&] {
    RunCopyOnWriteWriter(pool.get(), &bytes, &queue, 20000);
    writer_done.store(true, std::memory_order_release);
  });
  writer.join();
  holder.join();
  pool->CheckInvariants();
  const PoolStats s = pool->stats();
  EXPECT_EQ(s.num_free_blocks, kBlocks);
  EXPECT_EQ(s.num_shared_blocks, 0);
  EXPECT_GT(s.num_allocations, 0);
}

}  // namespace
}  // namespace pagedkv

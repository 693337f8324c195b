// WriteBehindQueue's spare buffers: the buffers of values already put come
// back through TakeSpare (at most max_spare_values of them), so the caller
// encodes the next value without a fresh allocation; a value enqueued in a
// reused buffer is put with exactly its new bytes. Its batches: what is
// queued goes out in PutMany calls within max_batch_values and
// max_batch_bytes, in order, each value's own result counted.
#include "cache/remote/write_behind_queue.h"

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "cache/remote/remote_block_store.h"
#include "gtest/gtest.h"

namespace pagedkv {
namespace {

// Records each put's value (a copy) and where its bytes were.
class RecordingStore final : public RemoteBlockStore {
 public:
  int32_t CountLeadingHits(absl::Span<const std::string>) override { return 0; }
  int32_t Fetch(absl::Span<const std::string>, FetchSink&) override {
    return 0;
  }
  absl::Status Put(std::string_view, std::string_view value) override {
    std::lock_guard<std::mutex> lock(mu_);
    values.emplace_back(value);
    data.push_back(value.data());
    return absl::OkStatus();
  }
  RemoteStoreStats stats() const override { return {}; }

  std::mutex mu_;
  std::vector<std::string> values;
  std::vector<const char*> data;
};

// Fails the put of every key that starts with "x".
class PickyStore final : public RemoteBlockStore {
 public:
  int32_t CountLeadingHits(absl::Span<const std::string>) override { return 0; }
  int32_t Fetch(absl::Span<const std::string>, FetchSink&) override {
    return 0;
  }
  absl::Status Put(std::string_view key, std::string_view) override {
    if (!key.empty() && key[0] == 'x') {
      return absl::UnavailableError("refused");
    }
    return absl::OkStatus();
  }
  RemoteStoreStats stats() const override { return {}; }
};

TEST(WriteBehindQueueTest, FailedPutsAreNamedByTheirTagsOnce) {
  PickyStore store;
  WriteBehindQueue queue(&store, {.max_values = 8});
  std::vector<uint64_t> tags = {99};
  EXPECT_TRUE(queue.TakeFailedTags(&tags));
  EXPECT_TRUE(tags.empty());  // Cleared: nothing failed.
  const char* keys[] = {"a", "x1", "b", "x2", "x3"};
  for (uint64_t i = 0; i < 5; ++i) {
    ASSERT_TRUE(queue.Enqueue(keys[i], "v", /*tag=*/100 + i));
  }
  queue.Flush();
  EXPECT_EQ(queue.stats().failed, 3);
  EXPECT_TRUE(queue.TakeFailedTags(&tags));
  EXPECT_EQ(tags, (std::vector<uint64_t>{101, 103, 104}));
  EXPECT_TRUE(queue.TakeFailedTags(&tags));  // Taken once.
  EXPECT_TRUE(tags.empty());
}

TEST(WriteBehindQueueTest, MoreFailuresThanMaxValuesSayTheCountWasLost) {
  PickyStore store;
  WriteBehindQueue queue(&store, {.max_values = 2});
  for (uint64_t i = 0; i < 3; ++i) {
    ASSERT_TRUE(queue.Enqueue("x", "v", i));
    queue.Flush();
  }
  std::vector<uint64_t> tags;
  EXPECT_FALSE(queue.TakeFailedTags(&tags));
  EXPECT_EQ(tags, (std::vector<uint64_t>{0, 1}));
  EXPECT_TRUE(queue.TakeFailedTags(&tags));  // A fresh start.
}

TEST(WriteBehindQueueTest, TakeSpareIsEmptyUntilAValueWasPut) {
  RecordingStore store;
  WriteBehindQueue queue(&store, {});
  EXPECT_EQ(queue.TakeSpare().capacity(), std::string().capacity());
  ASSERT_TRUE(queue.Enqueue("k", std::string(1000, 'a')));
  queue.Flush();
  const std::string spare = queue.TakeSpare();
  EXPECT_GE(spare.capacity(), 1000u);
  EXPECT_EQ(queue.TakeSpare().capacity(), std::string().capacity());
}

TEST(WriteBehindQueueTest, AReusedBufferIsPutWithItsNewBytes) {
  RecordingStore store;
  WriteBehindQueue queue(&store, {});
  for (int i = 0; i < 6; ++i) {
    std::string v = queue.TakeSpare();
    v.assign(4096, static_cast<char>('a' + i));
    ASSERT_TRUE(queue.Enqueue("k", std::move(v)));
    queue.Flush();
  }
  ASSERT_EQ(store.values.size(), 6u);
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(store.values[i], std::string(4096, static_cast<char>('a' + i)));
    // One buffer went round: each put after the first reused the first's.
    EXPECT_EQ(store.data[i], store.data[0]) << i;
  }
}

TEST(WriteBehindQueueTest, KeepsAtMostMaxSpareValues) {
  for (int32_t max_spares : {0, 2}) {
    RecordingStore store;
    WriteBehindQueue queue(&store, {.max_spare_values = max_spares});
    for (int i = 0; i < 5; ++i) {
      ASSERT_TRUE(queue.Enqueue("k", std::string(1000, 'x')));
    }
    queue.Flush();
    int32_t spares = 0;
    for (int i = 0; i < 5; ++i) {
      spares += queue.TakeSpare().capacity() >= 1000 ? 1 : 0;
    }
    EXPECT_EQ(spares, max_spares);
    EXPECT_EQ(queue.stats().stored, 5);
  }
}

TEST(WriteBehindQueueTest, KeepsAtMostMaxSpareBytes) {
  const size_t capacity = std::string(1000, 'x').capacity();
  for (size_t max_bytes : {size_t{0}, capacity - 1, 2 * capacity + 10}) {
    RecordingStore store;
    WriteBehindQueue queue(&store, {.max_spare_bytes = max_bytes});
    for (int i = 0; i < 5; ++i) {
      ASSERT_TRUE(queue.Enqueue("k", std::string(1000, 'x')));
    }
    queue.Flush();
    size_t spares = 0;
    for (int i = 0; i < 5; ++i) {
      spares += queue.TakeSpare().capacity() >= 1000 ? 1 : 0;
    }
    EXPECT_EQ(spares, max_bytes / capacity) << max_bytes;
    // Taken spares free their share: put values are kept again.
    ASSERT_TRUE(queue.Enqueue("k", std::string(1000, 'y')));
    queue.Flush();
    EXPECT_EQ(queue.TakeSpare().capacity() >= 1000, max_bytes >= capacity);
  }
}

// Records every PutMany batch; the first waits until released, so the rest
// queue up behind it. Values starting with "fail" fail.
class BatchRecordingStore final : public RemoteBlockStore {
 public:
  int32_t CountLeadingHits(absl::Span<const std::string>) override { return 0; }
  int32_t Fetch(absl::Span<const std::string>, FetchSink&) override {
    return 0;
  }
  absl::Status Put(std::string_view, std::string_view) override {
    ADD_FAILURE() << "the queue puts through PutMany";
    return absl::InternalError("Put");
  }
  void PutMany(absl::Span<const KeyValue> items,
               absl::Span<absl::Status> results) override {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return open_ || batches.empty(); });
    std::vector<std::string> batch;
    for (size_t i = 0; i < items.size(); ++i) {
      batch.emplace_back(items[i].key);
      results[i] = items[i].value.substr(0, 4) == "fail"
                       ? absl::UnavailableError("fail")
                       : absl::OkStatus();
    }
    batches.push_back(std::move(batch));
    first_taken_ = true;
    cv_.notify_all();
    // Hold the first batch until Open().
    cv_.wait(lock, [this] { return open_; });
  }
  RemoteStoreStats stats() const override { return {}; }
  void WaitFirst() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return first_taken_; });
  }
  void Open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }

  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
  bool first_taken_ = false;
  std::vector<std::vector<std::string>> batches;
};

TEST(WriteBehindQueueTest, PutsWhatIsQueuedInBoundedBatchesInOrder) {
  BatchRecordingStore store;
  WriteBehindQueue queue(&store,
                         {.max_batch_values = 3, .max_batch_bytes = 2500});
  ASSERT_TRUE(queue.Enqueue("k0", std::string(100, 'v')));
  store.WaitFirst();  // The worker holds k0; the rest queue behind it.
  // 1000-byte values: at most 2 fit 2500 bytes; 100-byte ones: 3 per batch.
  // One value larger than a batch goes alone.
  const std::vector<size_t> sizes = {1000, 1000, 1000, 100, 100,
                                     100,  100,  5000, 100, 1000};
  for (size_t i = 0; i < sizes.size(); ++i) {
    const std::string value = (i == 4 ? std::string("fail") : std::string()) +
                              std::string(sizes[i], 'v');
    ASSERT_TRUE(queue.Enqueue(absl::StrCat("k", i + 1), value));
  }
  store.Open();
  queue.Flush();
  // k3 would pass 2,500 bytes after k1 and k2; k3 to k5 reach 3 values;
  // k8 (5,000 bytes) would pass it after k6 and k7, and goes alone.
  const std::vector<std::vector<std::string>> want = {
      {"k0"},       {"k1", "k2"}, {"k3", "k4", "k5"},
      {"k6", "k7"}, {"k8"},       {"k9", "k10"}};
  EXPECT_EQ(store.batches, want);
  const WriteBehindStats s = queue.stats();
  EXPECT_EQ(s.stored, 10);
  EXPECT_EQ(s.failed, 1);  // k5, the "fail" one.
  EXPECT_EQ(s.pending, 0);
}

TEST(WriteBehindQueueDeathTest, BatchBoundsMustBePositive) {
  RecordingStore store;
  EXPECT_DEATH(WriteBehindQueue(&store, {.max_batch_values = 0}),
               "batch values 0");
  EXPECT_DEATH(WriteBehindQueue(&store, {.max_batch_bytes = 0}),
               "batch bytes 0");
}

}  // namespace
}  // namespace pagedkv

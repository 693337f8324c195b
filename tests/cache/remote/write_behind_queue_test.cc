// WriteBehindQueue's spare buffers: the buffers of values already put come
// back through TakeSpare (at most max_spare_values of them), so the caller
// encodes the next value without a fresh allocation; a value enqueued in a
// reused buffer is put with exactly its new bytes.
#include "cache/remote/write_behind_queue.h"

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
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

}  // namespace
}  // namespace pagedkv

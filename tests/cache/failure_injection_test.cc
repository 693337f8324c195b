// Failure injection for every lucid-cache call that can run out of blocks:
// each case builds a cache on a shared pool, then runs one call on pools of
// every size from the smallest that holds the state to one where the call
// fits, so the call runs out at each possible point (0, 1, ... of the
// blocks it needs free; between a copy-on-write copy and the fresh blocks of
// one update; in the second half of an encoder-decoder cache after the
// first half's part succeeded). Whenever it returns RESOURCE_EXHAUSTED the
// cache must be deep-equal to its state before (batch, every layer's
// length and K/V, stats, reservation, the pool's free blocks), and
// destroying it must return the pool to empty. Sizes at or past the first
// success must all succeed. Calls that cannot run out by design (a static
// cache's updates after Create) are scanned too and must never fail.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cache/cache.h"
#include "cache/cache_position.h"
#include "cache/dynamic_kv_cache.h"
#include "cache/encoder_decoder_cache.h"
#include "cache/static_kv_cache.h"
#include "cache/storage/kv_layout.h"
#include "cache/storage/kv_pool.h"
#include "gtest/gtest.h"
#include "tensor/dtype.h"
#include "tensor/factories.h"
#include "tensor/tensor.h"
#include "tests/cache/cache_snapshot.h"

namespace pagedkv {
namespace {

using ::pagedkv::testing::CacheSnapshot;
using ::pagedkv::testing::TakeSnapshot;

constexpr int32_t kMaxPool = 40;
const KVLayout kLayout{.num_layers = 2,
                       .num_kv_heads = 2,
                       .head_dim = 4,
                       .dtype = DType::kFloat32,
                       .block_tokens = 4};

// K and V of `rows` x `tokens`, every element `x` (V: -x).
absl::StatusOr<KVView> Put(Cache& c, int64_t rows, int64_t tokens,
                           int64_t layer, float x,
                           const CachePosition& at = CachePosition::None()) {
  const Tensor k = *Full(kLayout.dtype, {rows, 2, tokens, 4}, x);
  const Tensor v = *Full(kLayout.dtype, {rows, 2, tokens, 4}, -x);
  if (auto* edc = dynamic_cast<EncoderDecoderCache*>(&c)) {
    return edc->Update(k.view(), v.view(), layer, at);
  }
  return static_cast<KVCache&>(c).Update(k.view(), v.view(), layer, at);
}

// What a user can observe: one snapshot per KV cache (two for an
// encoder-decoder cache).
std::vector<CacheSnapshot> Snap(const Cache& c) {
  if (const auto* edc = dynamic_cast<const EncoderDecoderCache*>(&c)) {
    return {TakeSnapshot(edc->self_attention_cache()),
            TakeSnapshot(edc->cross_attention_cache())};
  }
  return {TakeSnapshot(static_cast<const KVCache&>(c))};
}

absl::Status Status(const absl::StatusOr<KVView>& kv) { return kv.status(); }

struct Case {
  std::string name;
  // Makes the cache on `pool`; RESOURCE_EXHAUSTED skips the size.
  std::function<absl::StatusOr<std::unique_ptr<Cache>>(KVPool*)> make;
  std::function<absl::Status(Cache&)> setup;
  std::function<absl::Status(Cache&)> op;
  // The call cannot run out once the cache exists.
  bool never_fails = false;
};

absl::StatusOr<std::unique_ptr<Cache>> Dynamic(KVPool* pool) {
  return std::unique_ptr<Cache>(std::make_unique<DynamicKVCache>(pool));
}

std::function<absl::StatusOr<std::unique_ptr<Cache>>(KVPool*)> Static(
    int64_t max_cache_len) {
  return [max_cache_len](
             KVPool* pool) -> absl::StatusOr<std::unique_ptr<Cache>> {
    absl::StatusOr<std::unique_ptr<StaticKVCache>> made = StaticKVCache::Create(
        {.max_cache_len = max_cache_len, .num_layers = 2, .pool = pool});
    if (!made.ok()) return made.status();
    return std::unique_ptr<Cache>(std::move(*made));
  };
}

std::vector<Case> Cases() {
  return {
      {"dynamic: prefill of layer 1, 2 rows x 9 tokens", Dynamic,
       [](Cache& c) { return Status(Put(c, 2, 5, 0, 1)); },
       [](Cache& c) { return Status(Put(c, 2, 9, 1, 2)); }},
      {"dynamic: append into rows that share a partial tail (copies + fresh)",
       Dynamic,
       [](Cache& c) {
         if (absl::Status s = Status(Put(c, 2, 6, 0, 1)); !s.ok()) return s;
         return c.ReorderCache({1, 1});
       },
       [](Cache& c) { return Status(Put(c, 2, 3, 0, 2)); }},
      {"dynamic: 0-D position past the end (zero-filled gap)", Dynamic,
       [](Cache& c) { return Status(Put(c, 1, 4, 0, 1)); },
       [](Cache& c) {
         return Status(Put(c, 1, 1, 0, 2, CachePosition::Scalar(13)));
       }},
      {"dynamic: 1-D positions, out of order, past the end", Dynamic,
       [](Cache& c) { return Status(Put(c, 1, 4, 0, 1)); },
       [](Cache& c) {
         return Status(Put(c, 1, 3, 0, 2, CachePosition::Vector({17, 3, 9})));
       }},
      {"dynamic: 2-D positions per row", Dynamic,
       [](Cache& c) { return Status(Put(c, 2, 3, 0, 1)); },
       [](Cache& c) {
         return Status(
             Put(c, 2, 2, 0, 2, CachePosition::Matrix(2, 2, {3, 10, 2, 15})));
       }},
      {"static: BatchRepeatInterleave(3) grows the reservation", Static(12),
       [](Cache& c) { return Status(Put(c, 1, 5, 0, 1)); },
       [](Cache& c) { return c.BatchRepeatInterleave(3); }},
      {"static: updates never run out after Create", Static(12),
       [](Cache& c) { return Status(Put(c, 2, 5, 0, 1)); },
       [](Cache& c) {
         if (absl::Status s = Status(Put(c, 2, 7, 0, 2)); !s.ok()) return s;
         return Status(Put(c, 2, 12, 1, 3));
       },
       /*never_fails=*/true},
      {"encoder-decoder: BatchRepeatInterleave(4), static self + dynamic "
       "cross",
       [](KVPool* pool) -> absl::StatusOr<std::unique_ptr<Cache>> {
         absl::StatusOr<std::unique_ptr<StaticKVCache>> self =
             StaticKVCache::Create(
                 {.max_cache_len = 8, .num_layers = 2, .pool = pool});
         if (!self.ok()) return self.status();
         return std::unique_ptr<Cache>(std::make_unique<EncoderDecoderCache>(
             std::move(*self), std::make_unique<DynamicKVCache>(pool)));
       },
       [](Cache& c) {
         auto& edc = static_cast<EncoderDecoderCache&>(c);
         const Tensor k = *Full(kLayout.dtype, {1, 2, 6, 4}, 5.0);
         if (absl::Status s =
                 Status(edc.Update(k.view(), k.view(), 0, CachePosition::None(),
                                   Attention::kCross));
             !s.ok()) {
           return s;
         }
         return Status(Put(c, 1, 3, 0, 1));
       },
       [](Cache& c) { return c.BatchRepeatInterleave(4); }},
  };
}

void Scan(const Case& c) {
  SCOPED_TRACE(c.name);
  int failures = 0;
  int successes = 0;
  for (int32_t size = 1; size <= kMaxPool; ++size) {
    SCOPED_TRACE("pool of " + std::to_string(size) + " blocks");
    absl::StatusOr<std::unique_ptr<KVPool>> pool =
        KVPool::Create({.layout = kLayout, .num_blocks = size});
    ASSERT_TRUE(pool.ok()) << pool.status();
    {
      absl::StatusOr<std::unique_ptr<Cache>> cache = c.make(pool->get());
      if (absl::IsResourceExhausted(cache.status())) {
        EXPECT_EQ((*pool)->books().num_free_blocks(), size);
        continue;
      }
      ASSERT_TRUE(cache.ok()) << cache.status();
      Cache& kv = **cache;
      const absl::Status setup = c.setup(kv);
      if (absl::IsResourceExhausted(setup)) continue;
      ASSERT_TRUE(setup.ok()) << setup;
      kv.CheckInvariants();

      const std::vector<CacheSnapshot> before = Snap(kv);
      const absl::Status status = c.op(kv);
      kv.CheckInvariants();
      if (status.ok()) {
        ++successes;
      } else {
        ASSERT_TRUE(absl::IsResourceExhausted(status)) << status;
        ASSERT_EQ(successes, 0) << "failed after a smaller pool succeeded";
        ++failures;
        EXPECT_TRUE(Snap(kv) == before) << status;
      }
    }
    // The cache is gone: no block leaked.
    (*pool)->books().CheckInvariants();
    EXPECT_EQ((*pool)->books().num_free_blocks(), size);
    EXPECT_EQ((*pool)->books().num_reserved_blocks(), 0);
  }
  EXPECT_GT(successes, 0);
  if (c.never_fails) {
    EXPECT_EQ(failures, 0);
  } else {
    EXPECT_GT(failures, 0);  // The scan reached every exhaustion point.
  }
}

TEST(CacheFailureInjectionTest, EveryCallThatRunsOutChangesNothing) {
  for (const Case& c : Cases()) Scan(c);
}

}  // namespace
}  // namespace pagedkv

// tests/cache/remote/remote_testing.h
//
// A chain of blocks for remote-tier tests: tokens, chained hashes and keys
// for n blocks of a layout, and block bytes that are a function of the
// block's hash (so a test can check every loaded byte).
//
//   TestChain c(layout, /*num_blocks=*/8, /*first_token=*/100);
//   tier->Store(c.chain(), 0, c.Bytes(0));
//
// Thread safety: a plain value.
#ifndef PAGEDKV_TESTS_CACHE_REMOTE_REMOTE_TESTING_H_
#define PAGEDKV_TESTS_CACHE_REMOTE_REMOTE_TESTING_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "allocator/prefix/block_hash.h"
#include "cache/remote/remote_tier.h"
#include "cache/storage/kv_layout.h"
#include "tensor/dtype.h"

namespace pagedkv::testing {

inline KVLayout RemoteTestLayout(int32_t head_dim = 2) {
  return KVLayout{.num_layers = 2,
                  .num_kv_heads = 2,
                  .head_dim = head_dim,
                  .dtype = DType::kFloat32,
                  .block_tokens = 4};
}

class TestChain {
 public:
  TestChain(const KVLayout& layout, int32_t num_blocks, int32_t first_token,
            uint64_t salt = 0)
      : block_bytes_(layout.block_bytes()) {
    const int32_t bt = layout.block_tokens;
    BlockHash parent = kRootBlockHash;
    for (int32_t b = 0; b < num_blocks; ++b) {
      BlockExtraKeys k;
      k.tenant_salt = salt;
      for (int32_t t = 0; t < bt; ++t) tokens_.push_back(first_token++);
      parent = Xxh3BlockHasher().Hash(
          parent, absl::MakeConstSpan(tokens_.data() + b * bt, bt), k);
      hashes_.push_back(parent);
      keys_.push_back(k);
    }
  }
  RemoteChain chain() const {
    return RemoteChain{.parent = kRootBlockHash,
                       .hashes = hashes_,
                       .keys = keys_,
                       .tokens = tokens_};
  }
  std::vector<std::byte> Bytes(size_t i) const {
    std::vector<std::byte> v(block_bytes_);
    uint64_t x = hashes_[i];
    for (std::byte& b : v) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      b = std::byte(x >> 56);
    }
    return v;
  }
  size_t size() const { return hashes_.size(); }

 private:
  size_t block_bytes_;
  std::vector<int32_t> tokens_;
  std::vector<BlockHash> hashes_;
  std::vector<BlockExtraKeys> keys_;
};

// n destination buffers of block_bytes each, and their pointers.
struct Destinations {
  Destinations(size_t n, size_t block_bytes)
      : bufs(n, std::vector<std::byte>(block_bytes)) {
    for (auto& b : bufs) ptrs.push_back(b.data());
  }
  std::vector<std::vector<std::byte>> bufs;
  std::vector<std::byte*> ptrs;
};

}  // namespace pagedkv::testing

#endif  // PAGEDKV_TESTS_CACHE_REMOTE_REMOTE_TESTING_H_

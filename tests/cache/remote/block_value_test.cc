// The block value format (cache/remote/block_value.h) and keys
// (remote_key.h): a value round-trips, and every kind of bad value is
// refused with its own verdict.
#include "cache/remote/block_value.h"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "allocator/prefix/block_hash.h"
#include "cache/remote/remote_key.h"
#include "cache/storage/kv_layout.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tensor/dtype.h"

namespace pagedkv {
namespace {

constexpr size_t kBytes = 1000;

struct Fixture {
  std::vector<int32_t> tokens = {1, 2, 3, 4};
  std::vector<std::byte> block = std::vector<std::byte>(kBytes);
  BlockIdentity id;
  std::string value;
  Fixture() {
    for (size_t i = 0; i < kBytes; ++i) block[i] = std::byte(i * 7 + 3);
    id.layout_fingerprint = 0x1234;
    id.hash = 0xabc;
    id.parent = kRootBlockHash;
    id.keys.tenant_salt = 42;
    id.tokens = tokens;
    EncodeBlockValue(id, block, &value);
  }
  BlockValueCheck Decode(const std::string& v, const BlockIdentity& want) {
    std::vector<std::byte> dst(kBytes);
    return DecodeBlockValue(v, want, absl::MakeSpan(dst));
  }
};

TEST(BlockValueTest, RoundTripsTheBytes) {
  Fixture f;
  EXPECT_EQ(f.value.size(), BlockValueBytes(4, kBytes));
  std::vector<std::byte> dst(kBytes);
  ASSERT_EQ(DecodeBlockValue(f.value, f.id, absl::MakeSpan(dst)),
            BlockValueCheck::kOk);
  EXPECT_EQ(dst, f.block);
}

TEST(BlockValueTest, RefusesEveryKindOfBadValue) {
  Fixture f;
  EXPECT_EQ(f.Decode("", f.id), BlockValueCheck::kTruncated);
  EXPECT_EQ(f.Decode(f.value.substr(0, 40), f.id), BlockValueCheck::kTruncated);
  EXPECT_EQ(f.Decode(f.value.substr(0, f.value.size() - 1), f.id),
            BlockValueCheck::kTruncated);
  EXPECT_EQ(f.Decode(f.value + "x", f.id), BlockValueCheck::kWrongSize);
  EXPECT_EQ(f.Decode(std::string(f.value.size(), 'g'), f.id),
            BlockValueCheck::kBadMagic);
  std::string v = f.value;
  v[4] = 2;  // Version 2.
  EXPECT_EQ(f.Decode(v, f.id), BlockValueCheck::kUnknownVersion);

  BlockIdentity other = f.id;
  other.layout_fingerprint = 0x9999;
  EXPECT_EQ(f.Decode(f.value, other), BlockValueCheck::kOtherLayout);
  other = f.id;
  other.parent = 77;
  EXPECT_EQ(f.Decode(f.value, other), BlockValueCheck::kOtherBlock);
  other = f.id;
  other.hash = 78;
  EXPECT_EQ(f.Decode(f.value, other), BlockValueCheck::kOtherBlock);
  other = f.id;
  other.keys.tenant_salt = 43;
  EXPECT_EQ(f.Decode(f.value, other), BlockValueCheck::kOtherBlock);
  const std::vector<int32_t> tokens = {1, 2, 3, 5};
  other = f.id;
  other.tokens = tokens;
  EXPECT_EQ(f.Decode(f.value, other), BlockValueCheck::kOtherTokens);
  const std::vector<int32_t> fewer = {1, 2, 3};
  other.tokens = fewer;
  EXPECT_EQ(f.Decode(f.value, other), BlockValueCheck::kWrongSize);
  std::vector<std::byte> small(kBytes - 1);
  EXPECT_EQ(DecodeBlockValue(f.value, f.id, absl::MakeSpan(small)),
            BlockValueCheck::kWrongSize);

  // One flipped bit anywhere in the bytes, the tokens' checksum or the
  // reserved header words.
  for (size_t pos : {f.value.size() - 1, f.value.size() / 2,
                     kBlockValueHeaderBytes + 16, size_t{60}, size_t{80}}) {
    std::string bad = f.value;
    bad[pos] ^= 1;
    EXPECT_EQ(f.Decode(bad, f.id), BlockValueCheck::kBadChecksum) << pos;
  }
}

TEST(RemoteKeyTest, NamesNamespaceLayoutTenantAndHash) {
  EXPECT_EQ(RemoteBlockKey("pkv", 0x1, 0x2a, 0xff),
            "pkv:0000000000000001:000000000000002a:00000000000000ff");
  const KVLayout a{.num_layers = 2,
                   .num_kv_heads = 2,
                   .head_dim = 2,
                   .dtype = DType::kFloat32,
                   .block_tokens = 4};
  KVLayout b = a;
  b.block_tokens = 8;
  KVLayout c = a;
  c.dtype = DType::kFloat16;
  const uint64_t fa = LayoutFingerprint(a, Xxh3BlockHasher());
  EXPECT_EQ(fa, LayoutFingerprint(a, Xxh3BlockHasher()));
  EXPECT_NE(fa, LayoutFingerprint(b, Xxh3BlockHasher()));
  EXPECT_NE(fa, LayoutFingerprint(c, Xxh3BlockHasher()));
  EXPECT_NE(fa, LayoutFingerprint(a, Sha256BlockHasher()));
}

}  // namespace
}  // namespace pagedkv

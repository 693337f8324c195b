// Model geometries by name: the published KV shapes, what a token costs,
// case-insensitive lookup, and a clear error for an unknown name.
#include "tools/kv_stress/model_presets.h"

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace pagedkv::kv_stress {
namespace {

using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::StatusIs;
using ::testing::HasSubstr;

struct Expected {
  const char* name;
  int32_t layers, kv_heads, head_dim;
  int64_t bytes_per_token;
};

TEST(ModelPresetsTest, GeometriesAreThePublishedOnes) {
  // bytes per token = 2 (K, V) * layers * kv_heads * head_dim * 2 (bf16).
  for (const Expected& e : {Expected{"llama-3.1-8b", 32, 8, 128, 131072},
                            Expected{"llama-3.1-70b", 80, 8, 128, 327680},
                            Expected{"mistral-7b", 32, 8, 128, 131072},
                            Expected{"qwen2.5-7b", 28, 4, 128, 57344}}) {
    absl::StatusOr<ModelGeometry> m = FindModelGeometry(e.name);
    ASSERT_THAT(m, IsOk()) << e.name;
    EXPECT_EQ(m->layers, e.layers) << e.name;
    EXPECT_EQ(m->kv_heads, e.kv_heads) << e.name;
    EXPECT_EQ(m->head_dim, e.head_dim) << e.name;
    EXPECT_EQ(m->bytes_per_token(), e.bytes_per_token) << e.name;
    const KVLayout layout = m->Layout(16);
    EXPECT_THAT(layout.Validate(), IsOk());
    EXPECT_EQ(layout.block_bytes(), size_t(16 * e.bytes_per_token)) << e.name;
  }
}

TEST(ModelPresetsTest, NamesAreCaseInsensitive) {
  absl::StatusOr<ModelGeometry> m = FindModelGeometry("Llama-3.1-70B");
  ASSERT_THAT(m, IsOk());
  EXPECT_EQ(m->layers, 80);
}

TEST(ModelPresetsTest, UnknownModelListsTheKnownOnes) {
  EXPECT_THAT(FindModelGeometry("gpt-5"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("llama-3.1-8b|llama-3.1-70b|mistral-7b|"
                                 "qwen2.5-7b")));
}

}  // namespace
}  // namespace pagedkv::kv_stress

// Tests of cache/serving/csr_decode_attention.h: the CSR kernel against
// attention over contiguous K/V gathered in the test from the same blocks
// (through block_table(seq), not through the CSR arrays), for ragged
// batches after forks, copy-on-write, truncation, preemption and swaps, in
// float32, float16 and bfloat16 pools; known answers; and every error
// leaving `out` untouched.
#include "cache/serving/csr_decode_attention.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "allocator/block_id.h"
#include "base/check.h"
#include "base/status_macros.h"
#include "cache/serving/block_table_export.h"
#include "cache/serving/kv_cache_manager.h"
#include "cache/serving/step_output.h"
#include "cache/storage/kv_layout.h"
#include "cache/storage/kv_pool.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tensor/dtype.h"
#include "tensor/shape.h"
#include "tensor/tensor.h"
#include "tests/cache/serving/export/serving_harness.h"
#include "tests/testing/status_matchers.h"

namespace pagedkv {
namespace {

using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::ServingHarness;
using ::pagedkv::testing::StatusIs;
using ::testing::HasSubstr;

// The CSR arrays of one batch, sized by ComputeExportSizes.
struct Csr {
  std::vector<int32_t> indptr, indices, last;
};

Csr ExportCsr(const KVCacheManager& m, absl::Span<const SequenceId> batch) {
  absl::StatusOr<ExportSizes> sizes = ComputeExportSizes(m, batch);
  PKV_CHECK(sizes.ok(), "%s", sizes.status().ToString());
  Csr csr;
  csr.indptr.resize(sizes->indptr_entries());
  csr.indices.resize(sizes->total_blocks);
  csr.last.resize(sizes->num_seqs);
  PKV_CHECK(
      ExportCsrPageTable(m, batch, absl::MakeSpan(csr.indptr),
                         absl::MakeSpan(csr.indices), absl::MakeSpan(csr.last))
          .ok(),
      "export");
  return csr;
}

Tensor MakeTensor(DType dtype, Shape shape) {
  absl::StatusOr<Tensor> t = Tensor::Create(dtype, shape);
  PKV_CHECK(t.ok(), "%s", t.status().ToString());
  return *std::move(t);
}

// A (batch, heads, dim) float32 query of multiples of 1/64 in [-1, 1].
Tensor RandomQuery(std::mt19937& rng, int64_t batch, int64_t heads,
                   int64_t dim) {
  Tensor q = MakeTensor(DType::kFloat32, Shape({batch, heads, dim}));
  float* data = q.data_as<float>();
  for (int64_t i = 0; i < q.num_elements(); ++i) {
    data[i] = static_cast<float>(static_cast<int32_t>(rng() % 129) - 64) / 64;
  }
  return q;
}

float Element(ConstTensorView t, int64_t i, int64_t j, int64_t k) {
  const int64_t index[3] = {i, j, k};
  return LoadAsFloat(t.dtype(), t.ElementPtr(index));
}

// The reference: gathers row b's K and V of `layer` into contiguous
// [kv_head][token][dim] arrays from block_table(seq), then runs two-pass
// softmax attention in double. Returns (batch, query_heads, dim) values.
std::vector<double> GatheredAttention(const KVCacheManager& m, int32_t layer,
                                      absl::Span<const SequenceId> batch,
                                      ConstTensorView query, double scale) {
  const KVLayout& L = m.layout();
  const KVPool& pool = *m.kv_pool();
  const int64_t heads = query.dim(1);
  const int64_t group = heads / L.num_kv_heads;
  const int64_t D = L.head_dim;
  std::vector<double> result;
  for (size_t b = 0; b < batch.size(); ++b) {
    const absl::Span<const BlockId> table = *m.block_table(batch[b]);
    const int64_t n = *m.num_tokens(batch[b]);
    // Gather.
    std::vector<float> k(L.num_kv_heads * n * D), v(k.size());
    for (int32_t h = 0; h < L.num_kv_heads; ++h) {
      for (int64_t t = 0; t < n; ++t) {
        const std::byte* block = pool.BlockData(table[t / L.block_tokens]);
        const int32_t slot = static_cast<int32_t>(t % L.block_tokens);
        for (int64_t d = 0; d < D; ++d) {
          const size_t e = SizeOf(L.dtype);
          k[(h * n + t) * D + d] = LoadAsFloat(
              L.dtype,
              block + (L.ElementOffset(layer, KV::kKey, h, slot) + d) * e);
          v[(h * n + t) * D + d] = LoadAsFloat(
              L.dtype,
              block + (L.ElementOffset(layer, KV::kValue, h, slot) + d) * e);
        }
      }
    }
    // Attend.
    for (int64_t qh = 0; qh < heads; ++qh) {
      const int64_t h = qh / group;
      std::vector<double> q(D);
      for (int64_t d = 0; d < D; ++d) q[d] = Element(query, b, qh, d);
      std::vector<double> s(n);
      double mx = -std::numeric_limits<double>::infinity();
      for (int64_t t = 0; t < n; ++t) {
        double dot = 0;
        for (int64_t d = 0; d < D; ++d) dot += q[d] * k[(h * n + t) * D + d];
        s[t] = dot * scale;
        mx = std::max(mx, s[t]);
      }
      double total = 0;
      for (double& x : s) total += (x = std::exp(x - mx));
      for (int64_t d = 0; d < D; ++d) {
        double acc = 0;
        for (int64_t t = 0; t < n; ++t) acc += s[t] * v[(h * n + t) * D + d];
        result.push_back(n == 0 ? 0.0 : acc / total);
      }
    }
  }
  return result;
}

void ExpectNear(ConstTensorView out, const std::vector<double>& want,
                double tolerance) {
  ASSERT_EQ(out.num_elements(), static_cast<int64_t>(want.size()));
  int32_t bad = 0;
  size_t i = 0;
  for (int64_t b = 0; b < out.dim(0); ++b) {
    for (int64_t h = 0; h < out.dim(1); ++h) {
      for (int64_t d = 0; d < out.dim(2); ++d, ++i) {
        const double got = Element(out, b, h, d);
        if (!(std::abs(got - want[i]) <= tolerance) && ++bad <= 5) {
          ADD_FAILURE() << "out[" << b << ", " << h << ", " << d
                        << "] = " << got << ", want " << want[i];
        }
      }
    }
  }
  EXPECT_EQ(bad, 0);
}

// ------------------------------------------------------ header example

absl::Status HeaderExample(const KVCacheManager& manager,
                           absl::Span<const SequenceId> batch,
                           const ExportSizes& sizes, const KVLayout& layout,
                           const Tensor& query, Tensor& out) {
  // clang-format off
  // BEGIN cache/serving/csr_decode_attention.h
  std::vector<int32_t> indptr(batch.size() + 1), last(batch.size());
  std::vector<int32_t> indices(sizes.total_blocks);
  PKV_RETURN_IF_ERROR(ExportCsrPageTable(manager, batch,
      absl::MakeSpan(indptr), absl::MakeSpan(indices),
      absl::MakeSpan(last)));
  const float scale =
      1.0f / std::sqrt(static_cast<float>(layout.head_dim));
  PKV_RETURN_IF_ERROR(CsrDecodeAttention(query.view(),
      *manager.kv_pool(), /*layer=*/0, indptr, indices, last, scale,
      out.view()));
  // END cache/serving/csr_decode_attention.h
  // clang-format on
  ExpectNear(out.view(),
             GatheredAttention(manager, 0, batch, query.view(), scale), 1e-5);
  return absl::OkStatus();
}

KVLayout SmallLayout(DType dtype, int32_t block_tokens = 4) {
  return KVLayout{.num_layers = 2,
                  .num_kv_heads = 2,
                  .head_dim = 8,
                  .dtype = dtype,
                  .block_tokens = block_tokens};
}

TEST(CsrDecodeAttentionTest, HeaderExampleMatchesGatheredAttention) {
  ServingHarness h({.layout = SmallLayout(DType::kFloat16),
                    .num_blocks = 32,
                    .seed = 3,
                    .write_kv = true});
  ASSERT_TRUE(h.Add(9));
  ASSERT_TRUE(h.Add(2));
  const std::vector<SequenceId> batch = h.Running();
  const ExportSizes sizes = *ComputeExportSizes(h.manager(), batch);
  Tensor query = RandomQuery(h.rng(), 2, 4, 8);
  Tensor out = MakeTensor(DType::kFloat32, Shape({2, 4, 8}));
  EXPECT_THAT(HeaderExample(h.manager(), batch, sizes, h.manager().layout(),
                            query, out),
              IsOk());
}

// --------------------------------------------- against the gathered one

class CsrDecodeAttentionRandomTest
    : public ::testing::TestWithParam<std::tuple<DType, int32_t, uint32_t>> {};

TEST_P(CsrDecodeAttentionRandomTest, MatchesGatheredAttention) {
  const auto [dtype, group, seed] = GetParam();
  const KVLayout layout = SmallLayout(dtype, 3 + seed % 3);
  // Odd seeds admit with kReservation, even ones with kWatermark.
  ServingHarness h({.layout = layout,
                    .num_blocks = 80,
                    .num_host_blocks = 24,
                    .admission = seed % 2 == 1 ? AdmissionMode::kReservation
                                               : AdmissionMode::kWatermark,
                    .seed = seed,
                    .write_kv = true});
  const int64_t heads = int64_t{layout.num_kv_heads} * group;
  const float scale = 1.0f / std::sqrt(static_cast<float>(layout.head_dim));
  int32_t checked = 0, empty_rows = 0;
  for (int step = 0; step < 240; ++step) {
    h.RandomStep();
    if (step % 6 != 5) continue;
    const std::vector<SequenceId> batch = h.RandomBatch();
    if (batch.empty()) continue;
    // The blocks hold exactly the model's tokens (a manager bug in
    // copy-on-write or swaps shows up here first).
    for (SequenceId seq : batch) {
      h.CheckContents(seq);
      if (*h.manager().num_tokens(seq) == 0) ++empty_rows;
    }
    const Csr csr = ExportCsr(h.manager(), batch);
    Tensor query = RandomQuery(h.rng(), static_cast<int64_t>(batch.size()),
                               heads, layout.head_dim);
    Tensor out = MakeTensor(DType::kFloat32, query.shape());
    for (int32_t layer = 0; layer < layout.num_layers; ++layer) {
      ASSERT_THAT(CsrDecodeAttention(query.view(), *h.manager().kv_pool(),
                                     layer, csr.indptr, csr.indices, csr.last,
                                     scale, out.view()),
                  IsOk());
      ExpectNear(
          out.view(),
          GatheredAttention(h.manager(), layer, batch, query.view(), scale),
          2e-5);
    }
    ++checked;
  }
  EXPECT_GT(checked, 20);
  const ManagerStats stats = h.manager().stats();
  EXPECT_GT(stats.cow_copies, 0) << "no copy-on-write was exercised";
  RecordProperty("empty_rows", empty_rows);
}

INSTANTIATE_TEST_SUITE_P(DTypesGroupsSeeds, CsrDecodeAttentionRandomTest,
                         ::testing::Combine(::testing::Values(DType::kFloat32,
                                                              DType::kFloat16,
                                                              DType::kBFloat16),
                                            ::testing::Values(1, 2, 4),
                                            ::testing::Values(1u, 2u)));

// Fork, then diverge on a shared partial tail: the child keeps the parent's
// first tokens (shared pages) and its own copy-on-write tail.
TEST(CsrDecodeAttentionTest, ForkedRowsReadSharedPagesAndTheirOwnTails) {
  for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    SCOPED_TRACE(DTypeName(dtype));
    ServingHarness h({.layout = SmallLayout(dtype),
                      .num_blocks = 32,
                      .seed = 5,
                      .write_kv = true});
    ASSERT_TRUE(h.Add(6));  // Seq 100: 1.5 blocks.
    const SequenceId parent = 100;
    ASSERT_TRUE(h.Fork(parent));  // 101
    ASSERT_TRUE(h.Fork(parent));  // 102
    const SequenceId seqs[] = {parent, 101, 102};
    const int32_t tokens[] = {1, 1, 3};
    ASSERT_TRUE(h.Append(seqs, tokens));
    ASSERT_EQ(h.manager().stats().cow_copies, 2);
    // Shared first page, three different tails.
    const auto t0 = *h.manager().block_table(parent);
    const auto t1 = *h.manager().block_table(101);
    const auto t2 = *h.manager().block_table(102);
    EXPECT_EQ(t0[0], t1[0]);
    EXPECT_EQ(t0[0], t2[0]);
    EXPECT_NE(t0[1], t1[1]);
    EXPECT_NE(t1[1], t2[1]);
    EXPECT_NE(t0[1], t2[1]);
    const std::vector<SequenceId> batch = {102, parent, 101};
    for (SequenceId s : batch) h.CheckContents(s);
    const Csr csr = ExportCsr(h.manager(), batch);
    Tensor query = RandomQuery(h.rng(), 3, 4, 8);
    Tensor out = MakeTensor(DType::kFloat32, query.shape());
    ASSERT_THAT(
        CsrDecodeAttention(query.view(), *h.manager().kv_pool(), 1, csr.indptr,
                           csr.indices, csr.last, 0.5f, out.view()),
        IsOk());
    ExpectNear(out.view(),
               GatheredAttention(h.manager(), 1, batch, query.view(), 0.5),
               2e-5);
  }
}

// ------------------------------------------------------- known answers

// A float32 pool with one layer, KV heads 2, head_dim 2, block_tokens 2,
// whose tokens the test writes by hand.
struct HandPool {
  HandPool() {
    manager =
        *KVCacheManager::Create({.layout = KVLayout{.num_layers = 1,
                                                    .num_kv_heads = 2,
                                                    .head_dim = 2,
                                                    .dtype = DType::kFloat32,
                                                    .block_tokens = 2},
                                 .num_blocks = 16});
  }
  // Sets K and V of token t of `seq`, KV head h, to (k, k) and (v, v).
  void Set(SequenceId seq, int64_t t, int32_t h, float k, float v) {
    const KVLayout& L = manager->layout();
    const BlockId block = (*manager->block_table(seq))[t / 2];
    float* data =
        reinterpret_cast<float*>(manager->kv_pool()->BlockData(block));
    const int32_t slot = static_cast<int32_t>(t % 2);
    for (int32_t d = 0; d < 2; ++d) {
      data[L.ElementOffset(0, KV::kKey, h, slot) + d] = k;
      data[L.ElementOffset(0, KV::kValue, h, slot) + d] = v;
    }
  }
  std::unique_ptr<KVCacheManager> manager;
};

TEST(CsrDecodeAttentionTest, EqualKeysAverageTheValuesPerKvHead) {
  HandPool p;
  StepOutput out_slots;
  ASSERT_THAT(p.manager->AddSequence(1, 5, 0, &out_slots), IsOk());  // 3 pages
  ASSERT_THAT(p.manager->AddSequence(2, 1, 0, &out_slots), IsOk());
  for (int64_t t = 0; t < 5; ++t) {
    p.Set(1, t, 0, 0.25f, static_cast<float>(t));          // mean 2
    p.Set(1, t, 1, 0.25f, 10.0f * static_cast<float>(t));  // mean 20
  }
  p.Set(2, 0, 0, 0.5f, 7.0f);
  p.Set(2, 0, 1, 0.5f, -3.0f);
  const SequenceId batch[] = {1, 2};
  const Csr csr = ExportCsr(*p.manager, batch);
  // Four query heads: 0 and 1 read KV head 0, 2 and 3 read KV head 1.
  Tensor query = MakeTensor(DType::kFloat32, Shape({2, 4, 2}));
  for (int64_t i = 0; i < 16; ++i) query.data_as<float>()[i] = 0.5f * (i % 3);
  Tensor out = MakeTensor(DType::kFloat32, Shape({2, 4, 2}));
  ASSERT_THAT(
      CsrDecodeAttention(query.view(), *p.manager->kv_pool(), 0, csr.indptr,
                         csr.indices, csr.last, 1.0f, out.view()),
      IsOk());
  const float* o = out.data_as<float>();
  for (int d = 0; d < 2; ++d) {
    EXPECT_FLOAT_EQ(o[0 * 2 + d], 2.0f);  // Row 0, head 0: KV head 0.
    EXPECT_FLOAT_EQ(o[1 * 2 + d], 2.0f);
    EXPECT_FLOAT_EQ(o[2 * 2 + d], 20.0f);  // Heads 2, 3: KV head 1.
    EXPECT_FLOAT_EQ(o[3 * 2 + d], 20.0f);
    // One token: softmax weight 1, exactly its value.
    EXPECT_EQ(o[8 + 0 * 2 + d], 7.0f);
    EXPECT_EQ(o[8 + 1 * 2 + d], 7.0f);
    EXPECT_EQ(o[8 + 2 * 2 + d], -3.0f);
    EXPECT_EQ(o[8 + 3 * 2 + d], -3.0f);
  }
}

TEST(CsrDecodeAttentionTest, LargerScoreWinsAcrossPages) {
  // Token 4 (on the third page) has a huge key: the online softmax must
  // rescale what the earlier pages summed, leaving ~only its value.
  HandPool p;
  StepOutput slots;
  ASSERT_THAT(p.manager->AddSequence(1, 5, 0, &slots), IsOk());
  for (int64_t t = 0; t < 5; ++t) {
    for (int32_t h = 0; h < 2; ++h) {
      p.Set(1, t, h, t == 4 ? 40.0f : 0.0f, static_cast<float>(t + 1));
    }
  }
  const SequenceId batch[] = {1};
  const Csr csr = ExportCsr(*p.manager, batch);
  Tensor query = MakeTensor(DType::kFloat32, Shape({1, 2, 2}));
  for (int64_t i = 0; i < 4; ++i) query.data_as<float>()[i] = 1.0f;
  Tensor out = MakeTensor(DType::kFloat32, Shape({1, 2, 2}));
  ASSERT_THAT(
      CsrDecodeAttention(query.view(), *p.manager->kv_pool(), 0, csr.indptr,
                         csr.indices, csr.last, 1.0f, out.view()),
      IsOk());
  // Weights: e^80 for token 4 against 4 * e^0: out = 5 - tiny.
  for (int64_t i = 0; i < 4; ++i)
    EXPECT_FLOAT_EQ(out.data_as<float>()[i], 5.0f);
}

TEST(CsrDecodeAttentionTest, RowWithoutPagesGivesZeros) {
  HandPool p;
  StepOutput slots;
  ASSERT_THAT(p.manager->AddSequence(1, 3, 0, &slots), IsOk());
  ASSERT_THAT(p.manager->AddSequence(2, 3, 0, &slots), IsOk());
  ASSERT_THAT(p.manager->Truncate(2, 0), IsOk());
  for (int64_t t = 0; t < 3; ++t) {
    p.Set(1, t, 0, 0, 1);
    p.Set(1, t, 1, 0, 1);
  }
  const SequenceId batch[] = {2, 1};
  const Csr csr = ExportCsr(*p.manager, batch);
  EXPECT_EQ(csr.indptr[1], 0);
  EXPECT_EQ(csr.last[0], 0);
  Tensor query = MakeTensor(DType::kFloat32, Shape({2, 2, 2}));
  Tensor out = MakeTensor(DType::kFloat32, Shape({2, 2, 2}));
  for (int64_t i = 0; i < 8; ++i) out.data_as<float>()[i] = 99;
  ASSERT_THAT(
      CsrDecodeAttention(query.view(), *p.manager->kv_pool(), 0, csr.indptr,
                         csr.indices, csr.last, 1.0f, out.view()),
      IsOk());
  for (int64_t i = 0; i < 4; ++i) EXPECT_EQ(out.data_as<float>()[i], 0.0f);
  for (int64_t i = 4; i < 8; ++i) EXPECT_EQ(out.data_as<float>()[i], 1.0f);
}

TEST(CsrDecodeAttentionTest, OutMayBeTheQueryAndAnyDtype) {
  ServingHarness h({.layout = SmallLayout(DType::kBFloat16),
                    .num_blocks = 32,
                    .seed = 9,
                    .write_kv = true});
  ASSERT_TRUE(h.Add(7));
  ASSERT_TRUE(h.Add(13));
  const std::vector<SequenceId> batch = h.Running();
  const Csr csr = ExportCsr(h.manager(), batch);
  Tensor query = RandomQuery(h.rng(), 2, 4, 8);
  const std::vector<double> want =
      GatheredAttention(h.manager(), 0, batch, query.view(), 0.3);
  // In place.
  ASSERT_THAT(
      CsrDecodeAttention(query.view(), *h.manager().kv_pool(), 0, csr.indptr,
                         csr.indices, csr.last, 0.3f, query.view()),
      IsOk());
  ExpectNear(query.view(), want, 2e-5);
  // A bfloat16 output: rounded once (relative error <= 2^-9).
  Tensor q2 = RandomQuery(h.rng(), 2, 4, 8);
  Tensor out = MakeTensor(DType::kBFloat16, Shape({2, 4, 8}));
  ASSERT_THAT(
      CsrDecodeAttention(q2.view(), *h.manager().kv_pool(), 1, csr.indptr,
                         csr.indices, csr.last, 0.3f, out.view()),
      IsOk());
  ExpectNear(out.view(),
             GatheredAttention(h.manager(), 1, batch, q2.view(), 0.3),
             1.0 / 256);
}

// ---------------------------------------------------------------- errors

TEST(CsrDecodeAttentionTest, BadInputsAreInvalidArgumentAndWriteNothing) {
  ServingHarness h({.layout = SmallLayout(DType::kFloat32),
                    .num_blocks = 16,
                    .seed = 4,
                    .write_kv = true});
  ASSERT_TRUE(h.Add(6));  // 2 pages of 4.
  ASSERT_TRUE(h.Add(3));  // 1 page.
  const std::vector<SequenceId> batch = h.Running();
  const Csr csr = ExportCsr(h.manager(), batch);
  const KVPool& pool = *h.manager().kv_pool();
  Tensor query = RandomQuery(h.rng(), 2, 4, 8);
  Tensor out = MakeTensor(DType::kFloat32, Shape({2, 4, 8}));
  for (int64_t i = 0; i < out.num_elements(); ++i) out.data_as<float>()[i] = 42;
  auto untouched = [&] {
    for (int64_t i = 0; i < out.num_elements(); ++i) {
      if (out.data_as<float>()[i] != 42) return false;
    }
    return true;
  };
  auto run = [&](ConstTensorView q, int32_t layer, std::vector<int32_t> indptr,
                 std::vector<int32_t> indices, std::vector<int32_t> last,
                 TensorView o) {
    return CsrDecodeAttention(q, pool, layer, indptr, indices, last, 1.0f, o);
  };
  const auto bad = absl::StatusCode::kInvalidArgument;
  Tensor q_rank2 = MakeTensor(DType::kFloat32, Shape({2, 32}));
  EXPECT_THAT(
      run(q_rank2.view(), 0, csr.indptr, csr.indices, csr.last, out.view()),
      StatusIs(bad, HasSubstr("head_dim 8")));
  Tensor q_dim = MakeTensor(DType::kFloat32, Shape({2, 4, 6}));
  EXPECT_THAT(
      run(q_dim.view(), 0, csr.indptr, csr.indices, csr.last, out.view()),
      StatusIs(bad, HasSubstr("got (2, 4, 6)")));
  Tensor q_heads = MakeTensor(DType::kFloat32, Shape({2, 3, 8}));
  EXPECT_THAT(
      run(q_heads.view(), 0, csr.indptr, csr.indices, csr.last, out.view()),
      StatusIs(bad, HasSubstr("query heads 3 must be a positive "
                              "multiple of the 2 KV heads")));
  Tensor out_small = MakeTensor(DType::kFloat32, Shape({1, 4, 8}));
  EXPECT_THAT(
      run(query.view(), 0, csr.indptr, csr.indices, csr.last, out_small.view()),
      StatusIs(bad, HasSubstr("out shape (1, 4, 8) differs")));
  EXPECT_THAT(
      run(query.view(), 2, csr.indptr, csr.indices, csr.last, out.view()),
      StatusIs(bad, HasSubstr("layer 2 outside [0, 2)")));
  EXPECT_THAT(
      run(query.view(), -1, csr.indptr, csr.indices, csr.last, out.view()),
      StatusIs(bad, HasSubstr("layer -1 outside [0, 2)")));
  EXPECT_THAT(run(query.view(), 0, {0, 2}, csr.indices, csr.last, out.view()),
              StatusIs(bad, HasSubstr("kv_indptr holds 2 entries, needs 3")));
  EXPECT_THAT(run(query.view(), 0, csr.indptr, csr.indices, {1}, out.view()),
              StatusIs(bad, HasSubstr("kv_last_page_len holds 1 entries, "
                                      "needs 2")));
  EXPECT_THAT(
      run(query.view(), 0, {0, 2, 1}, csr.indices, csr.last, out.view()),
      StatusIs(bad, HasSubstr("row 1: kv_indptr[2] = 1 must be in "
                              "[kv_indptr[1] = 2, 3]")));
  EXPECT_THAT(
      run(query.view(), 0, {0, 2, 4}, csr.indices, csr.last, out.view()),
      StatusIs(bad, HasSubstr("kv_indptr[2] = 4 must be in")));
  EXPECT_THAT(
      run(query.view(), 0, {-1, 2, 3}, csr.indices, csr.last, out.view()),
      StatusIs(bad, HasSubstr("kv_indptr[0] = -1 outside [0, 3]")));
  EXPECT_THAT(run(query.view(), 0, csr.indptr,
                  {csr.indices[0], 16, csr.indices[2]}, csr.last, out.view()),
              StatusIs(bad, HasSubstr("row 0: kv_indices[1] = 16 outside a "
                                      "pool of 16 blocks")));
  EXPECT_THAT(run(query.view(), 0, csr.indptr,
                  {csr.indices[0], -2, csr.indices[2]}, csr.last, out.view()),
              StatusIs(bad, HasSubstr("kv_indices[1] = -2")));
  EXPECT_THAT(run(query.view(), 0, csr.indptr, csr.indices, {2, 0}, out.view()),
              StatusIs(bad, HasSubstr("row 1: kv_last_page_len 0 outside "
                                      "[1, 4]")));
  EXPECT_THAT(run(query.view(), 0, csr.indptr, csr.indices, {5, 3}, out.view()),
              StatusIs(bad, HasSubstr("row 0: kv_last_page_len 5 outside")));
  EXPECT_TRUE(untouched());
  // The valid call on the same buffers works (the checks are not vacuous).
  EXPECT_THAT(
      run(query.view(), 0, csr.indptr, csr.indices, csr.last, out.view()),
      IsOk());
  EXPECT_FALSE(untouched());
}

}  // namespace
}  // namespace pagedkv

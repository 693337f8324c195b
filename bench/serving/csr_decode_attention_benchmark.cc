// bench/serving/csr_decode_attention_benchmark.cc
//
// The reference CSR decode-attention kernel (csr_decode_attention.h) against
// gather-then-attend on the same inputs, in the same run: a decode batch of
// 16 sequences of ragged lengths (128 to 1,021 tokens, 16 per block), 16
// query heads over 4 KV heads of 64 dims, one layer, for each pool dtype:
//
//   BM_CsrDecodeAttention  the kernel, reading pages in place through the
//                          CSR export (made once, before the loop)
//   BM_GatherThenAttend    copies every row's K and V into contiguous
//                          [row][kv_head][token][dim] buffers (one memcpy
//                          per row, head and page; buffers allocated before
//                          the loop), then runs the same arithmetic (widen
//                          16 tokens at a time, online softmax) over them
//   BM_GatherOnly          just the copies of BM_GatherThenAttend
//
// The target: the in-place kernel costs no more than gather-then-attend.
//
// Run (one command):
//   bazel run -c opt //bench/serving:csr_decode_attention_benchmark --
//       --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
//
// Thread safety: single-threaded benchmarks.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "allocator/block_id.h"
#include "base/check.h"
#include "benchmark/benchmark.h"
#include "cache/serving/block_table_export.h"
#include "cache/serving/csr_decode_attention.h"
#include "cache/serving/kv_cache_manager.h"
#include "cache/serving/step_output.h"
#include "cache/storage/kv_layout.h"
#include "cache/storage/kv_pool.h"
#include "tensor/dtype.h"
#include "tensor/shape.h"
#include "tensor/tensor.h"

namespace pagedkv {
namespace {

constexpr int32_t kBatch = 16;
constexpr int32_t kKvHeads = 4;
constexpr int32_t kQueryHeads = 16;
constexpr int32_t kHeadDim = 64;
constexpr int32_t kBlockTokens = 16;

int64_t Length(int32_t row) { return 128 + (int64_t{row} * 389) % 894; }

// The batch in a host-mode manager, every K/V element written, and its
// CSR export and query.
struct Workload {
  explicit Workload(DType dtype) {
    layout = KVLayout{.num_layers = 1,
                      .num_kv_heads = kKvHeads,
                      .head_dim = kHeadDim,
                      .dtype = dtype,
                      .block_tokens = kBlockTokens};
    absl::StatusOr<std::unique_ptr<KVCacheManager>> made =
        KVCacheManager::Create({.layout = layout, .num_blocks = 1200});
    PKV_CHECK(made.ok(), "%s", made.status().ToString());
    manager = *std::move(made);
    StepOutput out;
    for (int32_t b = 0; b < kBatch; ++b) {
      PKV_CHECK(manager->AddSequence(b, Length(b), 0, &out).ok(), "add");
      batch.push_back(b);
    }
    // Every element of every block: small values, so softmax stays tame.
    KVPool& pool = *manager->kv_pool();
    const size_t e = SizeOf(dtype);
    for (int32_t id = 0; id < pool.num_blocks(); ++id) {
      std::byte* block = pool.BlockData(BlockId(id));
      for (int64_t i = 0; i < layout.block_elements(); ++i) {
        StoreFromFloat(dtype, static_cast<float>((id * 7 + i) % 61 - 30) / 64,
                       block + i * e);
      }
    }
    const ExportSizes sizes = *ComputeExportSizes(*manager, batch);
    indptr.resize(sizes.indptr_entries());
    indices.resize(sizes.total_blocks);
    last.resize(kBatch);
    PKV_CHECK(ExportCsrPageTable(*manager, batch, absl::MakeSpan(indptr),
                                 absl::MakeSpan(indices), absl::MakeSpan(last))
                  .ok(),
              "export");
    query = *Tensor::Create(DType::kFloat32,
                            Shape({kBatch, kQueryHeads, kHeadDim}));
    out_tensor = *Tensor::Create(DType::kFloat32, query.shape());
    for (int64_t i = 0; i < query.num_elements(); ++i) {
      query.data_as<float>()[i] = static_cast<float>(i % 17 - 8) / 16;
    }
    for (int32_t b = 0; b < kBatch; ++b) {
      // Whole pages: the gather copies page runs.
      max_length = std::max(max_length, (Length(b) + kBlockTokens - 1) /
                                            kBlockTokens * kBlockTokens);
      tokens += Length(b);
    }
  }

  KVLayout layout;
  std::unique_ptr<KVCacheManager> manager;
  std::vector<SequenceId> batch;
  std::vector<int32_t> indptr, indices, last;
  Tensor query, out_tensor;
  int64_t max_length = 0;  // The longest row, in whole pages of tokens.
  int64_t tokens = 0;      // All rows.
};

const float kScale = 1.0f / 8;  // 1 / sqrt(kHeadDim)

void SetCounters(benchmark::State& state, const Workload& w) {
  state.SetItemsProcessed(state.iterations() * kBatch);
  state.SetBytesProcessed(state.iterations() * w.tokens * 2 * kKvHeads *
                          kHeadDim *
                          static_cast<int64_t>(SizeOf(w.layout.dtype)));
  state.counters["tokens"] = static_cast<double>(w.tokens);
  state.SetLabel(std::string(DTypeName(w.layout.dtype)));
}

// In place, through the CSR arrays.
void BM_CsrDecodeAttention(benchmark::State& state) {
  Workload w(static_cast<DType>(state.range(0)));
  for (auto _ : state) {
    PKV_CHECK(
        CsrDecodeAttention(w.query.view(), *w.manager->kv_pool(), 0, w.indptr,
                           w.indices, w.last, kScale, w.out_tensor.view())
            .ok(),
        "attention");
    benchmark::DoNotOptimize(w.out_tensor.data());
    benchmark::ClobberMemory();
  }
  SetCounters(state, w);
}

// The gather: row b's K (and V) of head g, token t, at
// ((b * kKvHeads + g) * max_length + t) * kHeadDim, in the pool's dtype.
void Gather(const Workload& w, std::vector<std::byte>& k,
            std::vector<std::byte>& v) {
  const KVPool& pool = *w.manager->kv_pool();
  const size_t e = SizeOf(w.layout.dtype);
  const size_t run = static_cast<size_t>(kBlockTokens) * kHeadDim * e;
  for (int32_t b = 0; b < kBatch; ++b) {
    for (int32_t g = 0; g < kKvHeads; ++g) {
      std::byte* kd =
          k.data() + (b * kKvHeads + g) * w.max_length * kHeadDim * e;
      std::byte* vd =
          v.data() + (b * kKvHeads + g) * w.max_length * kHeadDim * e;
      for (int32_t p = w.indptr[b]; p < w.indptr[b + 1]; ++p) {
        const std::byte* block = pool.BlockData(BlockId(w.indices[p]));
        const size_t bytes = p == w.indptr[b + 1] - 1
                                 ? static_cast<size_t>(w.last[b]) * kHeadDim * e
                                 : run;
        std::memcpy(kd, block + w.layout.ElementOffset(0, KV::kKey, g, 0) * e,
                    bytes);
        std::memcpy(vd, block + w.layout.ElementOffset(0, KV::kValue, g, 0) * e,
                    bytes);
        kd += run;
        vd += run;
      }
    }
  }
}

void Widen(DType dtype, const std::byte* src, int64_t n, float* dst) {
  switch (dtype) {
    case DType::kFloat32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case DType::kFloat16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t bits;
        std::memcpy(&bits, src + 2 * i, 2);
        dst[i] = HalfToFloat(bits);
      }
      return;
    case DType::kBFloat16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t bits;
        std::memcpy(&bits, src + 2 * i, 2);
        dst[i] = BFloat16ToFloat(bits);
      }
      return;
  }
}

// The kernel's Dot (csr_decode_attention.cc).
float Dot(const float* a, const float* b, int64_t n) {
  float partial[8] = {};
  int64_t d = 0;
  for (; d + 8 <= n; d += 8) {
    for (int k = 0; k < 8; ++k) partial[k] += a[d + k] * b[d + k];
  }
  for (; d < n; ++d) partial[0] += a[d] * b[d];
  return ((partial[0] + partial[1]) + (partial[2] + partial[3])) +
         ((partial[4] + partial[5]) + (partial[6] + partial[7]));
}

// The kernel's arithmetic over the contiguous buffers, a page of tokens at a
// time; the sizes are run-time values, as in the kernel.
void AttendContiguous(const Workload& w, const std::vector<std::byte>& kbuf,
                      const std::vector<std::byte>& vbuf, float* out) {
  const int64_t kv_heads = w.layout.num_kv_heads;
  const int64_t head_dim = w.layout.head_dim;
  const int64_t bt = w.layout.block_tokens;
  const int64_t query_heads = w.query.dim(1);
  const int64_t group = query_heads / kv_heads;
  const DType dtype = w.layout.dtype;
  const size_t e = SizeOf(dtype);
  const float* query = w.query.data_as<float>();
  std::vector<float> keys(bt * head_dim), values(keys.size());
  std::vector<float> acc(group * head_dim), scores(group * bt);
  std::vector<float> running_max(group), running_sum(group);
  for (int32_t b = 0; b < kBatch; ++b) {
    const int64_t n = (w.indptr[b + 1] - w.indptr[b] - 1) * bt + w.last[b];
    for (int64_t g = 0; g < kv_heads; ++g) {
      const size_t base = (b * kv_heads + g) * w.max_length * head_dim;
      const float* q = query + (b * query_heads + g * group) * head_dim;
      std::fill(acc.begin(), acc.end(), 0.0f);
      std::fill(running_max.begin(), running_max.end(),
                -std::numeric_limits<float>::infinity());
      std::fill(running_sum.begin(), running_sum.end(), 0.0f);
      for (int64_t t0 = 0; t0 < n; t0 += bt) {
        const int64_t tokens = std::min<int64_t>(bt, n - t0);
        Widen(dtype, kbuf.data() + (base + t0 * head_dim) * e,
              tokens * head_dim, keys.data());
        Widen(dtype, vbuf.data() + (base + t0 * head_dim) * e,
              tokens * head_dim, values.data());
        for (int64_t j = 0; j < group; ++j) {
          const float* qj = q + j * head_dim;
          float* sj = &scores[j * bt];
          float page_max = running_max[j];
          for (int64_t t = 0; t < tokens; ++t) {
            sj[t] = Dot(qj, &keys[t * head_dim], head_dim) * kScale;
            page_max = std::max(page_max, sj[t]);
          }
          const float correction = std::exp(running_max[j] - page_max);
          running_max[j] = page_max;
          running_sum[j] *= correction;
          float* aj = &acc[j * head_dim];
          for (int64_t d = 0; d < head_dim; ++d) aj[d] *= correction;
          for (int64_t t = 0; t < tokens; ++t) {
            const float weight = std::exp(sj[t] - page_max);
            running_sum[j] += weight;
            const float* vt = &values[t * head_dim];
            for (int64_t d = 0; d < head_dim; ++d) aj[d] += weight * vt[d];
          }
        }
      }
      for (int64_t j = 0; j < group; ++j) {
        float* o = out + (b * query_heads + g * group + j) * head_dim;
        for (int64_t d = 0; d < head_dim; ++d) {
          o[d] = acc[j * head_dim + d] / running_sum[j];
        }
      }
    }
  }
}

void BM_GatherThenAttend(benchmark::State& state) {
  Workload w(static_cast<DType>(state.range(0)));
  const size_t bytes = static_cast<size_t>(kBatch) * kKvHeads * w.max_length *
                       kHeadDim * SizeOf(w.layout.dtype);
  std::vector<std::byte> k(bytes), v(bytes);
  std::vector<float> out(static_cast<size_t>(w.query.num_elements()));
  for (auto _ : state) {
    Gather(w, k, v);
    AttendContiguous(w, k, v, out.data());
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  // Same inputs, same answer as the kernel (checked once, untimed).
  PKV_CHECK(
      CsrDecodeAttention(w.query.view(), *w.manager->kv_pool(), 0, w.indptr,
                         w.indices, w.last, kScale, w.out_tensor.view())
          .ok(),
      "attention");
  for (size_t i = 0; i < out.size(); ++i) {
    PKV_CHECK(std::abs(out[i] - w.out_tensor.data_as<float>()[i]) < 1e-5f,
              "element %d: gathered %g, CSR %g", i, out[i],
              w.out_tensor.data_as<float>()[i]);
  }
  SetCounters(state, w);
}

void BM_GatherOnly(benchmark::State& state) {
  Workload w(static_cast<DType>(state.range(0)));
  const size_t bytes = static_cast<size_t>(kBatch) * kKvHeads * w.max_length *
                       kHeadDim * SizeOf(w.layout.dtype);
  std::vector<std::byte> k(bytes), v(bytes);
  for (auto _ : state) {
    Gather(w, k, v);
    benchmark::DoNotOptimize(k.data());
    benchmark::DoNotOptimize(v.data());
    benchmark::ClobberMemory();
  }
  SetCounters(state, w);
}

// Args: the pool dtype (DType's value: 0 float32, 1 float16, 2 bfloat16).
void DTypes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"dtype"});
  for (DType d : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    b->Arg(static_cast<int64_t>(d));
  }
  b->Unit(benchmark::kMicrosecond);
}

BENCHMARK(BM_CsrDecodeAttention)->Apply(DTypes);
BENCHMARK(BM_GatherThenAttend)->Apply(DTypes);
BENCHMARK(BM_GatherOnly)->Apply(DTypes);

}  // namespace
}  // namespace pagedkv

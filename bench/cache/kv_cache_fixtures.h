// bench/cache/kv_cache_fixtures.h
//
// Workloads shared by the cache benchmarks (kv_cache_benchmark.cc) and the
// summary tool (//bench:summary). A Workload (workload.h) is one operation at
// one shape, measured one of four ways (Impl):
//
//   kPaged       the paged cache through its public API: KVPool::Create,
//                DynamicKVCache / StaticKVCache::Create, Update, Get,
//                KVView::GatherInto, ReorderCache, ...; for the books-only
//                operations, BlockPool and BlockTable::Fork (this file);
//   kBaseline    HuggingFace's DynamicCache/StaticCache in plain C++ over
//                contiguous buffers (contiguous_baseline.h);
//   kMemcpy      memcpy of the bytes the operation must move at least, or
//                for zero-copy remaps the bytes the baseline moves (ditto);
//   kColdMemcpy  the same bytes from a warm source into memory that is not
//                in cache (a walk through a 1 GiB ring; ditto).
//
// Paged beam workloads hold one sequence of storage shared by 4 rows
// (prefill, then BatchRepeatInterleave); baselines hold 4 contiguous beams.
// Pools are pre-touched (a serving pool is warm after its first pass), so
// page faults do not land in the timed calls. The largest workloads (the
// 8,192-token float32 baselines) peak near 9 GiB (9.2 GiB max RSS over a full
// //bench:summary run); a workload frees everything when destroyed, so
// callers make one at a time.
//
//   WorkloadOptions options;
//   options.op = Op::kReorderCache;  // impl kPaged, float16, 2,048 tokens
//   absl::StatusOr<std::unique_ptr<Workload>> w = MakeWorkload(options);
//   if (!w.ok()) return w.status();
//   for (int i = 0; i < reps; ++i) {
//     Time([&] { (*w)->Run(); });  // the operation, once
//     (*w)->Restore();             // untimed: back to where Run can repeat
//   }
//
// Thread safety: a Workload is used by one thread at a time.
#ifndef PAGEDKV_BENCH_CACHE_KV_CACHE_FIXTURES_H_
#define PAGEDKV_BENCH_CACHE_KV_CACHE_FIXTURES_H_

#include <memory>

#include "absl/status/statusor.h"
#include "bench/cache/workload.h"

namespace pagedkv::bench {

// Returns a ready workload, or the error of its setup (InvalidArgument for an
// unsupported combination such as kMemcpy of kAllocFree, ResourceExhausted
// when memory runs out).
absl::StatusOr<std::unique_ptr<Workload>> MakeWorkload(
    const WorkloadOptions& options);

}  // namespace pagedkv::bench

#endif  // PAGEDKV_BENCH_CACHE_KV_CACHE_FIXTURES_H_

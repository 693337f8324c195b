// bench/cache/contiguous_baseline.h
//
// The two references the paged cache is measured against (see
// kv_cache_fixtures.h):
//   - the baseline: what HuggingFace's DynamicCache/StaticCache do, in plain
//     C++ over contiguous per-layer buffers [batch][heads][len][dim] from
//     malloc: torch.cat on append (allocate len + n, copy old and new, free
//     old), index_select copies for reorder/select/repeat_interleave,
//     slice-and-copy on crop, index_copy_ into a preallocated buffer for the
//     static cache, clone() for an owned copy of a layer, and for the books
//     malloc+free of a block / a copy of 256 blocks' bytes;
//   - memcpy: one std::memcpy stream of the bytes the operation must move at
//     least (for zero-copy remaps, the bytes the baseline moves) between
//     preallocated, already-touched buffers, in pieces of at most 256 MiB.
//     The same buffers every call, so below the 32 MiB L3 it runs in cache;
//   - cold memcpy: the same bytes from a warm source (min(bytes, 4 MiB),
//     read over and over, as a step's fresh K/V are warm) into the next
//     bytes of a pre-touched 1 GiB ring (32x the L3): each call writes
//     memory last written a whole ring ago, as a decode step writes blocks
//     that are not in cache. The bound of an append (the summary reports it
//     for the appends only: for ops that read cold blocks, its warm source
//     makes it faster than those bytes can move).
//
//   absl::StatusOr<std::unique_ptr<Workload>> w = MakeBaselineWorkload(
//       {.op = Op::kCrop, .impl = Impl::kBaseline, .context = 4096});
//
// Thread safety: a Workload is used by one thread at a time.
#ifndef PAGEDKV_BENCH_CACHE_CONTIGUOUS_BASELINE_H_
#define PAGEDKV_BENCH_CACHE_CONTIGUOUS_BASELINE_H_

#include <memory>

#include "absl/status/statusor.h"
#include "bench/cache/workload.h"

namespace pagedkv::bench {

// Returns the baseline of options.op, set up and ready to Run.
// InvalidArgument for a context the op cannot take (prefill below 512, crop
// keep outside (0, context)).
absl::StatusOr<std::unique_ptr<Workload>> MakeBaselineWorkload(
    const WorkloadOptions& options);

// Returns the memcpy reference of options.op. InvalidArgument for kAllocFree,
// which moves no bytes.
absl::StatusOr<std::unique_ptr<Workload>> MakeMemcpyWorkload(
    const WorkloadOptions& options);

// Returns the cold memcpy reference of options.op (the same bytes as
// MakeMemcpyWorkload). InvalidArgument for kAllocFree.
absl::StatusOr<std::unique_ptr<Workload>> MakeColdMemcpyWorkload(
    const WorkloadOptions& options);

}  // namespace pagedkv::bench

#endif  // PAGEDKV_BENCH_CACHE_CONTIGUOUS_BASELINE_H_

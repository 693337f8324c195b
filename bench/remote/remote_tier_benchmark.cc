// bench/remote/remote_tier_benchmark.cc
//
// The remote tier's throughput and lookup latency on Redis (issue #13),
// against baselines measured in the same run. The binary starts its own
// redis-server on a free loopback TCP port (no persistence; killed at exit)
// and runs Redis's own client, redis-benchmark, against it:
//
//   BM_StorePut/value_bytes:N          RedisBlockStore::Put of an N-byte
//                                      value (one SET, wait for the reply),
//                                      against redis-benchmark -t set -c 1
//                                      -P 1: ratio_to_redis_set
//   BM_StoreFetch/value_bytes:N/keys:K RedisBlockStore::Fetch of K values
//                                      (one round trip), each copied into a
//                                      block, against -t get -P K:
//                                      ratio_to_redis_get
//   BM_TierStore/value_bytes:N/blocks:B
//                                      RemoteTier::Store of B blocks of N
//                                      bytes (encode with checksum, queue),
//                                      as a prompt's blocks are published,
//                                      and Flush (the worker's SETs, one at
//                                      a time), against -t set -P 1
//   BM_TierLookupAndLoad/value_bytes:N RemoteTier::LookupAndLoad of an
//                                      8-block chain (one EXISTS round trip,
//                                      one of 8 GETs, each value verified
//                                      and copied into its block), against
//                                      -t get -P 8 (ratio_to_redis_get) and
//                                      -P 1 (ratio_to_redis_get_p1)
//   BM_LookupOneByOne/blocks:128       128 EXISTS, one round trip each
//                                      (CountLeadingHitsOneByOne)
//   BM_TierLookup/blocks:128           RemoteTier::Lookup of the same chain,
//                                      one pipelined round trip, against
//                                      one-by-one lookups interleaved with
//                                      it: speedup_vs_one_by_one
//
// The machine is shared, so each row interleaves its baseline with itself:
// every repetition runs in kChunks chunks, each preceded (untimed) by a
// baseline run of the same number of values (redis-benchmark -n, or
// one-by-one chains). A row's time is manual: its calls only. A ratio is
// baseline seconds over ours for the same values, so > 1 is faster than
// redis-benchmark (Google Benchmark prints rate counters with "/s"). Bytes
// count block bytes; the tier's values are 88 + 64 bytes longer (header,
// token ids). Target: every ratio_to_redis_* >= 0.8. Each row compares what
// it stored or loaded with the original bytes after its timed loop and
// aborts on a mismatch. Without redis-server or redis-benchmark the binary
// prints why and exits 0.
//
//   bazel run -c opt //bench/remote:remote_tier_benchmark --
//       --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
//
// Thread safety: single-threaded benchmarks (plus the tier's write-behind
// worker).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "allocator/prefix/block_hash.h"
#include "base/check.h"
#include "benchmark/benchmark.h"
#include "cache/remote/redis_block_store.h"
#include "cache/remote/remote_block_store.h"
#include "cache/remote/remote_tier.h"
#include "cache/storage/kv_layout.h"
#include "tensor/dtype.h"
#include "tests/testing/redis_server.h"

namespace pagedkv {
namespace {

constexpr int64_t k64KiB = int64_t{64} << 10;
constexpr int64_t k2MiB = int64_t{2} << 20;
constexpr int32_t kBlockTokens = 16;
constexpr int32_t kChainBlocks = 8;      // Blocks per store/load call.
constexpr int32_t kLookupBlocks = 128;   // The lookup-latency chain.
constexpr int64_t kChunks = 4;           // Baseline/ours alternations.
constexpr uint64_t kSeed = 0x5eed'0013;  // Block contents.

testing::RedisServer* g_server = nullptr;

bool OnPath(const char* exe) {
  const char* path = std::getenv("PATH");
  const std::string dirs = path != nullptr ? path : "/usr/bin:/bin";
  for (absl::string_view d : absl::StrSplit(dirs, ':')) {
    if (access(absl::StrCat(d, "/", exe).c_str(), X_OK) == 0) return true;
  }
  return false;
}

// A redis-benchmark run: `test` ("set" or "get") of `requests` values of
// `value_bytes` on one connection with `pipeline` requests in flight.
struct RedisBenchmarkRun {
  const char* test;
  int64_t value_bytes;
  int64_t requests;
  int pipeline;
  std::string Command() const {
    return absl::StrFormat(
        "redis-benchmark -h 127.0.0.1 -p %d -t %s -d %d -n %d -c 1 -P %d "
        "--csv",
        g_server->tcp_port(), test, value_bytes, requests, pipeline);
  }
};

// Runs redis-benchmark; returns the seconds it took by its own count
// (requests over its requests/s: its start-up is not in it). Its GET reads
// the key "key:__rand_int__", which the caller sets to a value of
// value_bytes (PrimeRedisBenchmarkKey).
absl::StatusOr<double> RedisBenchmarkSeconds(const RedisBenchmarkRun& run) {
  const std::string cmd = run.Command() + " 2>&1";
  std::FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return absl::InternalError("cannot run " + cmd);
  std::string text;
  char buf[4096];
  size_t got;
  while ((got = std::fread(buf, 1, sizeof(buf), pipe)) > 0) {
    text.append(buf, got);
  }
  const int status = pclose(pipe);
  // A line like "SET","10449.32","0.091",... after the CSV header.
  double rps = -1;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    std::vector<absl::string_view> f = absl::StrSplit(line, ',');
    if (f.size() < 2) continue;
    const absl::string_view name =
        absl::StripPrefix(absl::StripSuffix(f[0], "\""), "\"");
    const absl::string_view value =
        absl::StripPrefix(absl::StripSuffix(f[1], "\""), "\"");
    if (absl::EqualsIgnoreCase(name, run.test) &&
        !absl::SimpleAtod(value, &rps)) {
      rps = -1;
    }
  }
  if (status != 0 || rps <= 0) {
    return absl::InternalError(absl::StrFormat(
        "'%s' exited with status %d; output:\n%s", cmd, status, text));
  }
  return static_cast<double>(run.requests) / rps;
}

std::unique_ptr<RedisBlockStore> Connect() {
  absl::StatusOr<std::unique_ptr<RedisBlockStore>> store =
      RedisBlockStore::Create({.address = g_server->tcp_address(),
                               .connect_timeout = absl::Seconds(1),
                               // Generous: a shared 2-core machine stalls.
                               .call_timeout = absl::Seconds(10)});
  PKV_CHECK(store.ok(), "%s", store.status().ToString());
  return *std::move(store);
}

std::vector<std::byte> RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::byte> out(n);
  for (size_t i = 0; i < n; i += 8) {
    const uint64_t r = rng();
    std::memcpy(out.data() + i, &r, std::min<size_t>(8, n - i));
  }
  return out;
}

std::string_view AsString(const std::vector<std::byte>& b) {
  return std::string_view(reinterpret_cast<const char*>(b.data()), b.size());
}

// One block's layout of `block_bytes` (2 MiB: Llama-3-8B's 32 layers; 64
// KiB: one layer of it; 4 KiB for the lookup chain).
KVLayout LayoutOf(int64_t block_bytes) {
  const int32_t layers = static_cast<int32_t>(block_bytes / k64KiB);
  KVLayout layout{.num_layers = layers >= 1 ? layers : 1,
                  .num_kv_heads = layers >= 1 ? 8 : 1,
                  .head_dim = layers >= 1 ? 128 : 64,
                  .dtype = DType::kFloat16,
                  .block_tokens = kBlockTokens};
  PKV_CHECK(layout.Validate().ok() &&
                static_cast<int64_t>(layout.block_bytes()) == block_bytes,
            "no layout of %d-byte blocks", block_bytes);
  return layout;
}

// A chain of `n` blocks of distinct tokens, its hashes and their contents.
struct Chain {
  Chain(const KVLayout& layout, int32_t n, uint64_t seed)
      : tokens(static_cast<size_t>(n) * kBlockTokens), keys(n), hashes(n) {
    for (size_t i = 0; i < tokens.size(); ++i) {
      tokens[i] = static_cast<int32_t>(seed % 1000 + i);
    }
    BlockHash parent = kRootBlockHash;
    for (int32_t i = 0; i < n; ++i) {
      parent = Xxh3BlockHasher().Hash(
          parent,
          absl::MakeConstSpan(tokens).subspan(i * kBlockTokens, kBlockTokens),
          keys[i]);
      hashes[i] = parent;
      blocks.push_back(RandomBytes(layout.block_bytes(), seed + i));
    }
  }
  RemoteChain view() const {
    return {.parent = kRootBlockHash,
            .hashes = hashes,
            .keys = keys,
            .tokens = tokens};
  }
  std::vector<int32_t> tokens;
  std::vector<BlockExtraKeys> keys;
  std::vector<BlockHash> hashes;
  std::vector<std::vector<std::byte>> blocks;
};

// A tier over two connections of its own (borrowed stores, so the
// benchmark can use the read connection's one-by-one lookup too).
struct TierFixture {
  explicit TierFixture(const KVLayout& layout, std::string ns) {
    reads = Connect();
    writes = Connect();
    RemoteTier::Options o;
    o.layout = layout;
    o.key_namespace = std::move(ns);
    // Only the last block stored is "known remote": the cycle of 8 blocks
    // is stored again every iteration rather than skipped.
    o.max_known_blocks = 1;
    o.write_behind.max_values = 4 * kLookupBlocks;  // StoreAll never drops.
    absl::StatusOr<std::unique_ptr<RemoteTier>> t =
        RemoteTier::Create(o, reads.get(), writes.get());
    PKV_CHECK(t.ok(), "%s", t.status().ToString());
    tier = *std::move(t);
  }
  void StoreAll(const Chain& chain) {
    for (size_t i = 0; i < chain.blocks.size(); ++i) {
      PKV_CHECK(tier->Store(chain.view(), i, chain.blocks[i]),
                "store of block %d skipped or dropped", i);
    }
    tier->Flush();
    const RemoteTierStats s = tier->stats();
    PKV_CHECK(s.writes.failed == 0 && s.writes.dropped == 0,
              "write-behind: %d failed, %d dropped", s.writes.failed,
              s.writes.dropped);
  }
  std::unique_ptr<RedisBlockStore> reads;
  std::unique_ptr<RedisBlockStore> writes;
  std::unique_ptr<RemoteTier> tier;  // Last: its worker stops first.
};

// Copies each fetched value into its block.
class CopySink final : public FetchSink {
 public:
  explicit CopySink(std::vector<std::vector<std::byte>>& dst) : dst_(dst) {}
  bool OnValue(int32_t index, std::string_view value) override {
    std::vector<std::byte>& d = dst_[index];
    if (value.size() != d.size()) return false;
    std::memcpy(d.data(), value.data(), value.size());
    return true;
  }

 private:
  std::vector<std::vector<std::byte>>& dst_;
};

void CheckSame(const std::vector<std::byte>& got,
               const std::vector<std::byte>& want, const char* what) {
  PKV_CHECK(got.size() == want.size() &&
                std::memcmp(got.data(), want.data(), got.size()) == 0,
            "%s: loaded bytes differ from the stored ones (%d vs %d bytes)",
            what, got.size(), want.size());
}

// Timed iterations per repetition, fixed so that a repetition is one call
// with its interleaved baseline: about half a second of each on this
// machine.
int64_t IterationsFor(int64_t value_bytes, int32_t values_per_iteration) {
  const int64_t values = value_bytes >= k2MiB ? 160 : 6400;
  return std::max<int64_t>(kChunks, values / values_per_iteration);
}

// A baseline: does the work of `iterations` of the row (untimed by the
// row), returning its seconds, or an error.
using Baseline = std::function<absl::StatusOr<double>(int64_t iterations)>;

// The baseline of a row that moves `values_per_iteration` values of
// `value_bytes` per iteration: redis-benchmark with as many requests.
Baseline RedisBaseline(const char* test, int64_t value_bytes,
                       int32_t values_per_iteration, int pipeline) {
  return [=](int64_t iterations) {
    return RedisBenchmarkSeconds(
        {test, value_bytes, iterations * values_per_iteration, pipeline});
  };
}

// Runs `op` (one iteration; false: failed, with a message) for the row's
// iterations, timing each call (manual time), in kChunks chunks each
// preceded by every baseline's run of that chunk's iterations. Returns each
// baseline's total seconds, or an empty vector after SkipWithError.
std::vector<double> RunInterleaved(benchmark::State& state,
                                   const std::vector<Baseline>& baselines,
                                   const std::function<bool()>& op) {
  const int64_t total = state.max_iterations;
  const int64_t chunk = (total + kChunks - 1) / kChunks;
  std::vector<double> seconds(baselines.size(), 0.0);
  int64_t done = 0;
  for (auto _ : state) {
    if (done % chunk == 0) {
      const int64_t n = std::min(chunk, total - done);
      for (size_t b = 0; b < baselines.size(); ++b) {
        const absl::StatusOr<double> s = baselines[b](n);
        if (!s.ok()) {
          state.SkipWithError(s.status().ToString().c_str());
          return {};
        }
        seconds[b] += *s;
      }
    }
    const auto start = std::chrono::steady_clock::now();
    if (!op()) return {};
    state.SetIterationTime(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count());
    ++done;
  }
  return seconds;
}

// Reports bytes/s, the baseline's bytes/s and ratio (baseline seconds over
// ours, as a rate of the manual time).
void ReportThroughput(benchmark::State& state, double bytes,
                      double baseline_seconds, const std::string& ratio,
                      const std::string& baseline_rate) {
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  state.counters[ratio] =
      benchmark::Counter(baseline_seconds, benchmark::Counter::kIsRate);
  state.counters[baseline_rate] = benchmark::Counter(
      bytes / baseline_seconds, benchmark::Counter::kDefaults,
      benchmark::Counter::kIs1024);
}

// Sets redis-benchmark's GET key to a value of `bytes`.
void PrimeRedisBenchmarkKey(RedisBlockStore& store, int64_t bytes) {
  const std::vector<std::byte> v = RandomBytes(bytes, kSeed);
  PKV_CHECK(store.Put("key:__rand_int__", AsString(v)).ok(),
            "cannot set redis-benchmark's key");
}

void BM_StorePut(benchmark::State& state) {
  const int64_t bytes = state.range(0);
  std::unique_ptr<RedisBlockStore> store = Connect();
  std::vector<std::vector<std::byte>> values;
  std::vector<std::string> keys;
  for (int32_t i = 0; i < kChainBlocks; ++i) {
    values.push_back(RandomBytes(bytes, kSeed + i));
    keys.push_back(absl::StrFormat("bench:put:%d:%d", bytes, i));
  }
  size_t i = 0;
  const std::vector<double> base =
      RunInterleaved(state, {RedisBaseline("set", bytes, 1, 1)}, [&] {
        const absl::Status s = store->Put(keys[i], AsString(values[i]));
        if (!s.ok()) state.SkipWithError(s.ToString().c_str());
        i = (i + 1) % keys.size();
        return s.ok();
      });
  if (base.empty()) return;
  // What the loop stored is what is there.
  const size_t written =
      std::min<size_t>(keys.size(), static_cast<size_t>(state.iterations()));
  std::vector<std::vector<std::byte>> got(
      written, std::vector<std::byte>(bytes, std::byte{0}));
  CopySink sink(got);
  PKV_CHECK(store->Fetch(absl::MakeConstSpan(keys).first(written), sink) ==
                static_cast<int32_t>(written),
            "stored values missing");
  for (size_t k = 0; k < written; ++k) CheckSame(got[k], values[k], "put");
  ReportThroughput(state, static_cast<double>(state.iterations()) * bytes,
                   base[0], "ratio_to_redis_set", "redis_bytes_per_second");
}

void BM_StoreFetch(benchmark::State& state) {
  const int64_t bytes = state.range(0);
  const int32_t n = static_cast<int32_t>(state.range(1));
  std::unique_ptr<RedisBlockStore> store = Connect();
  std::vector<std::vector<std::byte>> values;
  std::vector<std::string> keys;
  for (int32_t i = 0; i < n; ++i) {
    values.push_back(RandomBytes(bytes, kSeed + 100 + i));
    keys.push_back(absl::StrFormat("bench:fetch:%d:%d", bytes, i));
    PKV_CHECK(store->Put(keys[i], AsString(values[i])).ok(), "setup put");
  }
  PrimeRedisBenchmarkKey(*store, bytes);
  std::vector<std::vector<std::byte>> dst(
      n, std::vector<std::byte>(bytes, std::byte{0}));
  CopySink sink(dst);
  const std::vector<double> base =
      RunInterleaved(state, {RedisBaseline("get", bytes, n, n)}, [&] {
        if (store->Fetch(keys, sink) == n) return true;
        state.SkipWithError("fetch returned fewer values than stored");
        return false;
      });
  if (base.empty()) return;
  for (int32_t i = 0; i < n; ++i) CheckSame(dst[i], values[i], "fetch");
  ReportThroughput(state, static_cast<double>(state.iterations()) * n * bytes,
                   base[0], "ratio_to_redis_get", "redis_bytes_per_second");
}

void BM_TierStore(benchmark::State& state) {
  const int64_t bytes = state.range(0);
  const int32_t n = static_cast<int32_t>(state.range(1));
  const KVLayout layout = LayoutOf(bytes);
  const Chain chain(layout, n, kSeed + 200);
  TierFixture f(layout, "bench-store");
  const std::vector<double> base =
      RunInterleaved(state, {RedisBaseline("set", bytes, n, 1)}, [&] {
        for (int32_t i = 0; i < n; ++i) {
          f.tier->Store(chain.view(), i, chain.blocks[i]);
        }
        f.tier->Flush();
        return true;
      });
  if (base.empty()) return;
  const RemoteTierStats s = f.tier->stats();
  const int64_t want = static_cast<int64_t>(state.iterations()) * n;
  if (s.writes.stored != want || s.stores_skipped != 0) {
    state.SkipWithError(
        absl::StrFormat("stored %d of %d blocks (%d skipped, %d dropped, %d "
                        "failed)",
                        s.writes.stored, want, s.stores_skipped,
                        s.writes.dropped, s.writes.failed)
            .c_str());
    return;
  }
  // Read back through the tier: verified, and the bytes compared.
  std::vector<std::vector<std::byte>> dst(
      n, std::vector<std::byte>(bytes, std::byte{0}));
  std::vector<std::byte*> ptrs;
  for (auto& d : dst) ptrs.push_back(d.data());
  PKV_CHECK(f.tier->LookupAndLoad(chain.view(), ptrs) == n,
            "stored chain not loadable");
  for (int32_t i = 0; i < n; ++i) {
    CheckSame(dst[i], chain.blocks[i], "tier store");
  }
  ReportThroughput(state, static_cast<double>(want) * bytes, base[0],
                   "ratio_to_redis_set", "redis_bytes_per_second");
}

void BM_TierLookupAndLoad(benchmark::State& state) {
  const int64_t bytes = state.range(0);
  const KVLayout layout = LayoutOf(bytes);
  const Chain chain(layout, kChainBlocks, kSeed + 300);
  TierFixture f(layout, "bench-load");
  f.StoreAll(chain);
  PrimeRedisBenchmarkKey(*f.reads, bytes);
  std::vector<std::vector<std::byte>> dst(
      kChainBlocks, std::vector<std::byte>(bytes, std::byte{0}));
  std::vector<std::byte*> ptrs;
  for (auto& d : dst) ptrs.push_back(d.data());
  const std::vector<double> base = RunInterleaved(
      state,
      {RedisBaseline("get", bytes, kChainBlocks, kChainBlocks),
       RedisBaseline("get", bytes, kChainBlocks, 1)},
      [&] {
        if (f.tier->LookupAndLoad(chain.view(), ptrs) == kChainBlocks) {
          return true;
        }
        state.SkipWithError(
            absl::StrFormat("loaded fewer than %d blocks (%d verify failures)",
                            kChainBlocks, f.tier->stats().verify_failures)
                .c_str());
        return false;
      });
  if (base.empty()) return;
  for (int32_t i = 0; i < kChainBlocks; ++i) {
    CheckSame(dst[i], chain.blocks[i], "tier load");
  }
  const double total =
      static_cast<double>(state.iterations()) * kChainBlocks * bytes;
  ReportThroughput(state, total, base[0], "ratio_to_redis_get",
                   "redis_bytes_per_second");
  ReportThroughput(state, total, base[1], "ratio_to_redis_get_p1",
                   "redis_p1_bytes_per_second");
}

// The lookup chain (4 KiB blocks: EXISTS does not read values), stored
// once per process.
const Chain& LookupChain() {
  static const Chain* c = new Chain(LayoutOf(4096), kLookupBlocks, kSeed + 400);
  return *c;
}
TierFixture& LookupFixture() {
  static TierFixture* f = [] {
    auto* fixture = new TierFixture(LayoutOf(4096), "bench-lookup");
    fixture->StoreAll(LookupChain());
    return fixture;
  }();
  return *f;
}
std::vector<std::string> LookupKeys() {
  std::vector<std::string> keys;
  for (int32_t i = 0; i < kLookupBlocks; ++i) {
    keys.push_back(LookupFixture().tier->KeyOf(LookupChain().view(), i));
  }
  return keys;
}

bool LookupOneByOne(absl::Span<const std::string> keys) {
  return LookupFixture().reads->CountLeadingHitsOneByOne(keys) == kLookupBlocks;
}

void BM_LookupOneByOne(benchmark::State& state) {
  const std::vector<std::string> keys = LookupKeys();
  RunInterleaved(state, {}, [&] {
    if (LookupOneByOne(keys)) return true;
    state.SkipWithError("one-by-one lookup missed stored keys");
    return false;
  });
}

void BM_TierLookup(benchmark::State& state) {
  const std::vector<std::string> keys = LookupKeys();
  const Baseline one_by_one = [&](int64_t chains) -> absl::StatusOr<double> {
    const absl::Time start = absl::Now();
    for (int64_t c = 0; c < chains; ++c) {
      if (!LookupOneByOne(keys)) {
        return absl::InternalError("one-by-one lookup missed stored keys");
      }
    }
    return absl::ToDoubleSeconds(absl::Now() - start);
  };
  const std::vector<double> base = RunInterleaved(state, {one_by_one}, [&] {
    if (LookupFixture().tier->Lookup(LookupChain().view()) == kLookupBlocks) {
      return true;
    }
    state.SkipWithError("pipelined lookup missed stored keys");
    return false;
  });
  if (base.empty()) return;
  state.counters["one_by_one_us"] =
      base[0] * 1e6 / static_cast<double>(state.iterations());
  state.counters["speedup_vs_one_by_one"] =
      benchmark::Counter(base[0], benchmark::Counter::kIsRate);
}

// Registers the rows, each with a fixed iteration count per size.
void RegisterAll() {
  using Fn = void (*)(benchmark::State&);
  auto add = [](const char* name, Fn fn, const std::vector<int64_t>& args,
                const std::vector<std::string>& names, int64_t iterations) {
    benchmark::RegisterBenchmark(name, fn)
        ->Args(args)
        ->ArgNames(names)
        ->Iterations(iterations)
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
  };
  for (int64_t bytes : {k64KiB, k2MiB}) {
    add("BM_StorePut", BM_StorePut, {bytes}, {"value_bytes"},
        IterationsFor(bytes, 1));
  }
  for (int64_t bytes : {k64KiB, k2MiB}) {
    for (int32_t n : {1, kChainBlocks}) {
      add("BM_StoreFetch", BM_StoreFetch, {bytes, n}, {"value_bytes", "keys"},
          IterationsFor(bytes, n));
    }
  }
  // A prompt's blocks are published together: 64 blocks of 64 KiB (a
  // 1,024-token prompt), 8 of 2 MiB (16 MiB), each batch then flushed.
  for (const auto& [bytes, n] : {std::pair<int64_t, int32_t>{k64KiB, 64},
                                 std::pair<int64_t, int32_t>{k2MiB, 8}}) {
    add("BM_TierStore", BM_TierStore, {bytes, n}, {"value_bytes", "blocks"},
        IterationsFor(bytes, n));
  }
  for (int64_t bytes : {k64KiB, k2MiB}) {
    add("BM_TierLookupAndLoad", BM_TierLookupAndLoad, {bytes}, {"value_bytes"},
        IterationsFor(bytes, kChainBlocks));
  }
  add("BM_LookupOneByOne", BM_LookupOneByOne, {kLookupBlocks}, {"blocks"}, 100);
  add("BM_TierLookup", BM_TierLookup, {kLookupBlocks}, {"blocks"}, 200);
}

}  // namespace
}  // namespace pagedkv

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  for (const char* exe : {"redis-server", "redis-benchmark"}) {
    if (!pagedkv::OnPath(exe)) {
      std::fprintf(stderr,
                   "%s is not installed (Debian: apt-get install "
                   "redis-server redis-tools; tools/setup.sh installs them): "
                   "no remote tier benchmarks run\n",
                   exe);
      return 0;
    }
  }
  pagedkv::testing::RedisServer::Options options;
  options.loopback_tcp = true;
  absl::StatusOr<std::unique_ptr<pagedkv::testing::RedisServer>> server =
      pagedkv::testing::RedisServer::Start(options);
  if (!server.ok()) {
    std::fprintf(stderr, "cannot start redis-server: %s\n",
                 server.status().ToString().c_str());
    return 1;
  }
  pagedkv::g_server = server->get();
  pagedkv::RegisterAll();
  benchmark::AddCustomContext("redis_address", (*server)->tcp_address());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;  // The server is killed by its destructor.
}

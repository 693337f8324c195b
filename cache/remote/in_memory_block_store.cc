#include "cache/remote/in_memory_block_store.h"

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace pagedkv {

int32_t InMemoryBlockStore::CountLeadingHits(
    absl::Span<const std::string> keys) {
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.calls;
  if (down_) {
    ++stats_.errors;
    return 0;
  }
  int32_t hits = 0;
  for (const std::string& k : keys) {
    if (!values_.contains(k)) break;
    ++hits;
  }
  return hits;
}

int32_t InMemoryBlockStore::Fetch(absl::Span<const std::string> keys,
                                  FetchSink& sink) {
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.calls;
  if (down_) {
    ++stats_.errors;
    return 0;
  }
  int32_t n = 0;
  for (const std::string& k : keys) {
    auto it = values_.find(k);
    if (it == values_.end()) break;
    stats_.bytes_received += static_cast<int64_t>(it->second.size());
    if (!sink.OnValue(n, it->second)) break;
    ++n;
  }
  return n;
}

absl::Status InMemoryBlockStore::Put(std::string_view key,
                                     std::string_view value) {
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.calls;
  if (down_) {
    ++stats_.errors;
    return absl::UnavailableError("in-memory store is down (set_down)");
  }
  values_[std::string(key)] = std::string(value);
  stats_.bytes_sent += static_cast<int64_t>(value.size());
  return absl::OkStatus();
}

RemoteStoreStats InMemoryBlockStore::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void InMemoryBlockStore::Corrupt(std::string_view key, std::string value) {
  std::lock_guard<std::mutex> lock(mu_);
  values_[std::string(key)] = std::move(value);
}

bool InMemoryBlockStore::Erase(std::string_view key) {
  std::lock_guard<std::mutex> lock(mu_);
  return values_.erase(std::string(key)) > 0;
}

void InMemoryBlockStore::set_down(bool down) {
  std::lock_guard<std::mutex> lock(mu_);
  down_ = down;
}

int64_t InMemoryBlockStore::num_keys() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(values_.size());
}

}  // namespace pagedkv

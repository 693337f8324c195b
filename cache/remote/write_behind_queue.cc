#include "cache/remote/write_behind_queue.h"

#include <cstdint>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "base/check.h"

namespace pagedkv {

WriteBehindQueue::WriteBehindQueue(RemoteBlockStore* store,
                                   const Options& options)
    : store_(store), options_(options) {
  PKV_CHECK(store != nullptr, "WriteBehindQueue needs a store");
  PKV_CHECK(options.max_values > 0 && options.max_bytes > 0 &&
                options.max_batch_values > 0 && options.max_batch_bytes > 0 &&
                options.max_spare_values >= 0,
            "WriteBehindQueue bounds must be > 0 (values %d, bytes %d, batch "
            "values %d, batch bytes %d) and spares >= 0 (%d)",
            options.max_values, options.max_bytes, options.max_batch_values,
            options.max_batch_bytes, options.max_spare_values);
  worker_ = std::thread([this] { Run(); });
}

WriteBehindQueue::~WriteBehindQueue() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_.notify_all();
  drained_.notify_all();
  worker_.join();
  std::lock_guard<std::mutex> lock(mu_);
  stats_.dropped += static_cast<int64_t>(queue_.size());
  stats_.pending = 0;
  queue_.clear();
}

bool WriteBehindQueue::Enqueue(std::string key, std::string value,
                               uint64_t tag) {
  std::unique_lock<std::mutex> lock(mu_);
  if (stop_ || queue_.size() >= static_cast<size_t>(options_.max_values) ||
      queued_bytes_ + value.size() > options_.max_bytes) {
    ++stats_.dropped;
    return false;
  }
  queued_bytes_ += value.size();
  queue_.push_back(Item{std::move(key), std::move(value), tag});
  ++stats_.enqueued;
  ++stats_.pending;
  lock.unlock();
  work_.notify_one();
  return true;
}

bool WriteBehindQueue::TakeFailedTags(std::vector<uint64_t>* tags) {
  tags->clear();
  if (!any_failed_.load(std::memory_order_acquire)) return true;
  std::lock_guard<std::mutex> lock(mu_);
  tags->swap(failed_tags_);
  const bool whole = !failed_tags_lost_;
  failed_tags_lost_ = false;
  any_failed_.store(false, std::memory_order_relaxed);
  return whole;
}

std::string WriteBehindQueue::TakeSpare() {
  std::lock_guard<std::mutex> lock(mu_);
  if (spares_.empty()) return std::string();
  std::string spare = std::move(spares_.back());
  spares_.pop_back();
  spare_bytes_ -= spare.capacity();
  return spare;
}

void WriteBehindQueue::Flush() {
  std::unique_lock<std::mutex> lock(mu_);
  drained_.wait(lock, [this] { return (queue_.empty() && !busy_) || stop_; });
}

WriteBehindStats WriteBehindQueue::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void WriteBehindQueue::Run() {
  std::vector<Item> batch;
  std::vector<RemoteBlockStore::KeyValue> items;
  std::vector<absl::Status> results;
  for (;;) {
    batch.clear();
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_.wait(lock, [this] { return !queue_.empty() || stop_; });
      if (stop_) return;
      size_t bytes = 0;
      while (!queue_.empty() &&
             batch.size() < static_cast<size_t>(options_.max_batch_values) &&
             (batch.empty() || bytes + queue_.front().value.size() <=
                                   options_.max_batch_bytes)) {
        bytes += queue_.front().value.size();
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      queued_bytes_ -= bytes;
      busy_ = true;
    }
    // The network I/O, with no lock held.
    items.clear();
    for (const Item& item : batch) items.push_back({item.key, item.value});
    results.assign(batch.size(), absl::OkStatus());
    store_->PutMany(items, absl::MakeSpan(results));
    const RemoteStoreStats store_stats = store_->stats();
    bool drained = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stats_.store = store_stats;
      busy_ = false;
      drained = queue_.empty();
      stats_.pending -= static_cast<int64_t>(batch.size());
      for (size_t i = 0; i < batch.size(); ++i) {
        if (results[i].ok()) {
          ++stats_.stored;
          stats_.stored_bytes += static_cast<int64_t>(batch[i].value.size());
        } else {
          ++stats_.failed;
          if (failed_tags_.size() < static_cast<size_t>(options_.max_values)) {
            failed_tags_.push_back(batch[i].tag);
          } else {
            failed_tags_lost_ = true;
          }
          any_failed_.store(true, std::memory_order_release);
        }
        const size_t capacity = batch[i].value.capacity();
        if (spares_.size() < static_cast<size_t>(options_.max_spare_values) &&
            spare_bytes_ + capacity <= options_.max_spare_bytes) {
          spare_bytes_ += capacity;
          spares_.push_back(std::move(batch[i].value));
        }
      }
    }
    // Flush waits for the queue to drain: waking it after every batch would
    // cost a context switch per batch on a busy machine.
    if (drained) drained_.notify_all();
  }
}

}  // namespace pagedkv

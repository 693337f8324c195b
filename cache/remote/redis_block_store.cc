#include "cache/remote/redis_block_store.h"

#include <hiredis/hiredis.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "base/check.h"

namespace pagedkv {
namespace {

timeval SocketTimeout(absl::Duration d) {
  d = std::max(d, absl::Microseconds(1));  // 0 would mean "no timeout".
  return absl::ToTimeval(d);
}

// Frees a reply on every path.
struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

void IgnoreSigpipeUnlessSet() {
  struct sigaction current;
  if (sigaction(SIGPIPE, nullptr, &current) == 0 &&
      current.sa_handler == SIG_DFL) {
    signal(SIGPIPE, SIG_IGN);
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<RedisBlockStore>> RedisBlockStore::Create(
    const Options& options) {
  if (options.connect_timeout <= absl::ZeroDuration() ||
      options.call_timeout <= absl::ZeroDuration() ||
      options.backoff_initial <= absl::ZeroDuration() ||
      options.backoff_max < options.backoff_initial ||
      options.key_ttl < absl::ZeroDuration() ||
      (options.key_ttl > absl::ZeroDuration() &&
       options.key_ttl < absl::Milliseconds(1))) {
    // SET ... PX takes whole milliseconds > 0: a shorter TTL would be PX 0,
    // which Redis refuses on every store.
    return absl::InvalidArgumentError(absl::StrFormat(
        "redis store: timeouts must be > 0 and backoff_max >= "
        "backoff_initial, ttl 0 or >= 1ms (connect %s, call %s, backoff "
        "%s..%s, ttl %s)",
        absl::FormatDuration(options.connect_timeout),
        absl::FormatDuration(options.call_timeout),
        absl::FormatDuration(options.backoff_initial),
        absl::FormatDuration(options.backoff_max),
        absl::FormatDuration(options.key_ttl)));
  }
  absl::string_view a = options.address;
  if (absl::ConsumePrefix(&a, "unix:")) {
    if (a.empty() || a.size() >= 108) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "redis address '%s': a unix socket path of 1 to 107 bytes",
          options.address));
    }
    IgnoreSigpipeUnlessSet();
    return std::unique_ptr<RedisBlockStore>(new RedisBlockStore(
        options, Transport::kUnix, std::string(a), /*port=*/0));
  }
  absl::ConsumePrefix(&a, "redis://");
  const size_t colon = a.rfind(':');
  int port = 0;
  if (colon == absl::string_view::npos || colon == 0 ||
      !absl::SimpleAtoi(a.substr(colon + 1), &port) || port <= 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "redis address '%s': expected unix:/path, redis://host:port or "
        "host:port",
        options.address));
  }
  IgnoreSigpipeUnlessSet();
  return std::unique_ptr<RedisBlockStore>(new RedisBlockStore(
      options, Transport::kTcp, std::string(a.substr(0, colon)), port));
}

RedisBlockStore::RedisBlockStore(const Options& options, Transport transport,
                                 std::string host, int port)
    : options_(options),
      transport_(transport),
      host_(std::move(host)),
      port_(port),
      backoff_(options.backoff_initial) {}

RedisBlockStore::~RedisBlockStore() {
  if (ctx_ != nullptr) redisFree(ctx_);
}

bool RedisBlockStore::EnsureConnected() {
  if (ctx_ != nullptr) return true;
  const absl::Time now = absl::Now();
  if (now < next_attempt_) {
    ++stats_.skipped_while_down;
    return false;
  }
  const timeval tv = SocketTimeout(options_.connect_timeout);
  redisContext* c = transport_ == Transport::kUnix
                        ? redisConnectUnixWithTimeout(host_.c_str(), tv)
                        : redisConnectWithTimeout(host_.c_str(), port_, tv);
  if (c == nullptr || c->err != 0) {
    if (c != nullptr) redisFree(c);
    ++stats_.connect_failures;
    next_attempt_ = now + backoff_;
    backoff_ = std::min(backoff_ * 2, options_.backoff_max);
    return false;
  }
  ctx_ = c;
  values_.Reset();
  ++stats_.connects;
  return true;
}

bool RedisBlockStore::ArmTimeout(absl::Time deadline) {
  const absl::Duration left = deadline - absl::Now();
  if (left <= absl::ZeroDuration()) {
    Fail(/*timeout=*/true);
    return false;
  }
  if (redisSetTimeout(ctx_, SocketTimeout(left)) != REDIS_OK) {
    Fail(/*timeout=*/false);
    return false;
  }
  return true;
}

void* RedisBlockStore::ReadReply(absl::Time deadline) {
  if (!ArmTimeout(deadline)) return nullptr;
  void* reply = nullptr;
  errno = 0;
  if (redisGetReply(ctx_, &reply) != REDIS_OK || reply == nullptr) {
    const bool timeout =
        ctx_->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK);
    Fail(timeout);
    return nullptr;
  }
  return reply;
}

void RedisBlockStore::Fail(bool timeout) {
  if (timeout) {
    ++stats_.timeouts;
  } else {
    ++stats_.errors;
  }
  if (ctx_ != nullptr) {
    redisFree(ctx_);
    ctx_ = nullptr;
  }
  next_attempt_ = absl::Now() + backoff_;
  backoff_ = std::min(backoff_ * 2, options_.backoff_max);
}

void RedisBlockStore::Succeeded() { backoff_ = options_.backoff_initial; }

bool RedisBlockStore::SendSet(std::string_view key, std::string_view value,
                              absl::Time deadline) {
  // The RESP command around the value, which goes out from the caller's
  // bytes: hiredis's redisAppendCommandArgv would copy it twice (formatting,
  // then into its output buffer) and move the rest of that buffer down after
  // every partial write, which halved the throughput of 2 MiB values
  // (bench/remote/remote_tier_benchmark.cc). hiredis's output buffer is
  // empty here: every call before this one waited for its replies, and
  // blocking redisGetReply writes the buffer out before reading.
  const bool ttl = options_.key_ttl > absl::ZeroDuration();
  const std::string head = absl::StrFormat(
      "*%d\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n", ttl ? 5 : 3, key.size(),
      absl::string_view(key.data(), key.size()), value.size());
  std::string tail = "\r\n";
  if (ttl) {
    const std::string ms =
        absl::StrFormat("%d", absl::ToInt64Milliseconds(options_.key_ttl));
    absl::StrAppendFormat(&tail, "$2\r\nPX\r\n$%d\r\n%s\r\n", ms.size(), ms);
  }
  iovec iov[3] = {{const_cast<char*>(head.data()), head.size()},
                  {const_cast<char*>(value.data()), value.size()},
                  {tail.data(), tail.size()}};
  return SendAll(iov, deadline);
}

int32_t RedisBlockStore::CountLeadingHits(absl::Span<const std::string> keys) {
  ++stats_.calls;
  if (keys.empty() || !EnsureConnected()) return 0;
  const absl::Time deadline = absl::Now() + options_.call_timeout;
  for (const std::string& k : keys) {
    const char* argv[2] = {"EXISTS", k.data()};
    const size_t argvlen[2] = {6, k.size()};
    if (redisAppendCommandArgv(ctx_, 2, argv, argvlen) != REDIS_OK) {
      Fail(/*timeout=*/false);
      return 0;
    }
  }
  int32_t hits = 0;
  bool leading = true;
  for (size_t i = 0; i < keys.size(); ++i) {
    Reply r(static_cast<redisReply*>(ReadReply(deadline)));
    if (r == nullptr) return hits;
    if (r->type != REDIS_REPLY_INTEGER) {
      // An error reply (e.g. a server loading its data): a miss, and the
      // rest of the pipeline is read to keep the connection in step.
      ++stats_.errors;
      leading = false;
      continue;
    }
    if (leading && r->integer == 1) {
      ++hits;
    } else {
      leading = false;
    }
  }
  Succeeded();
  return hits;
}

int32_t RedisBlockStore::CountLeadingHitsOneByOne(
    absl::Span<const std::string> keys) {
  ++stats_.calls;
  if (keys.empty() || !EnsureConnected()) return 0;
  const absl::Time deadline = absl::Now() + options_.call_timeout;
  int32_t hits = 0;
  for (const std::string& k : keys) {
    const char* argv[2] = {"EXISTS", k.data()};
    const size_t argvlen[2] = {6, k.size()};
    if (redisAppendCommandArgv(ctx_, 2, argv, argvlen) != REDIS_OK) {
      Fail(/*timeout=*/false);
      return hits;
    }
    Reply r(static_cast<redisReply*>(ReadReply(deadline)));
    if (r == nullptr) return hits;
    if (r->type != REDIS_REPLY_INTEGER || r->integer != 1) break;
    ++hits;
  }
  Succeeded();
  return hits;
}

int32_t RedisBlockStore::Fetch(absl::Span<const std::string> keys,
                               FetchSink& sink) {
  ++stats_.calls;
  if (keys.empty() || !EnsureConnected()) return 0;
  const absl::Time deadline = absl::Now() + options_.call_timeout;
  // The GETs go out in one send and their replies are read by values_, not
  // hiredis: values are handed to the sink from the receive buffer (see
  // resp_reader.h for what that saves).
  commands_.clear();
  for (const std::string& k : keys) {
    absl::StrAppend(&commands_, "*2\r\n$3\r\nGET\r\n$", k.size(), "\r\n", k,
                    "\r\n");
  }
  if (!SendAll(commands_, deadline)) return 0;
  int32_t accepted = 0;
  bool leading = true;
  for (size_t i = 0; i < keys.size(); ++i) {
    // Replies after the first miss are still read (and dropped): the
    // connection stays in step, and the lookup just before made misses
    // rare (a key evicted in between).
    RespReader::Reply r;
    const RespReader::Result got = values_.Next(ctx_->fd, deadline, &r);
    if (got != RespReader::Result::kOk) {
      Fail(/*timeout=*/got == RespReader::Result::kTimeout);
      return accepted;
    }
    if (!leading) continue;
    if (r.kind != RespReader::Kind::kBulk) {
      if (r.kind != RespReader::Kind::kNil) ++stats_.errors;
      leading = false;
      continue;
    }
    stats_.bytes_received += static_cast<int64_t>(r.text.size());
    if (!sink.OnValue(static_cast<int32_t>(i), r.text)) {
      leading = false;
      continue;
    }
    ++accepted;
  }
  if (values_.buffered() != 0) {
    // Bytes nobody asked for: the stream cannot be trusted any more.
    Fail(/*timeout=*/false);
    return accepted;
  }
  Succeeded();
  return accepted;
}

bool RedisBlockStore::SendAll(std::string_view bytes, absl::Time deadline) {
  iovec iov[1] = {{const_cast<char*>(bytes.data()), bytes.size()}};
  return SendAll(iov, deadline);
}

bool RedisBlockStore::SendAll(absl::Span<iovec> iov, absl::Time deadline) {
  iovec* next = iov.data();
  size_t left = iov.size();
  while (left > 0 && next->iov_len == 0) {
    ++next;
    --left;
  }
  while (left > 0) {
    if (absl::Now() >= deadline) {
      Fail(/*timeout=*/true);
      return false;
    }
    msghdr msg{};
    msg.msg_iov = next;
    msg.msg_iovlen = left;
    // MSG_NOSIGNAL: a dead server is an EPIPE here, never a SIGPIPE.
    const ssize_t n = sendmsg(ctx_->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      size_t sent = static_cast<size_t>(n);
      while (left > 0 && sent >= next->iov_len) {
        sent -= next->iov_len;
        ++next;
        --left;
      }
      if (left > 0) {
        next->iov_base = static_cast<char*>(next->iov_base) + sent;
        next->iov_len -= sent;
      }
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      const int64_t ms = std::max<int64_t>(
          1, absl::ToInt64Milliseconds(
                 absl::Ceil(deadline - absl::Now(), absl::Milliseconds(1))));
      pollfd p{.fd = ctx_->fd, .events = POLLOUT, .revents = 0};
      if (poll(&p, 1, static_cast<int>(std::min<int64_t>(ms, 1 << 30))) >= 0 ||
          errno == EINTR) {
        continue;  // Writable, timed out (checked above) or interrupted.
      }
    }
    Fail(/*timeout=*/false);
    return false;
  }
  return true;
}

absl::Status RedisBlockStore::Put(std::string_view key,
                                  std::string_view value) {
  const KeyValue item{key, value};
  absl::Status result;
  PutMany(absl::MakeConstSpan(&item, 1), absl::MakeSpan(&result, 1));
  return result;
}

void RedisBlockStore::PutMany(absl::Span<const KeyValue> items,
                              absl::Span<absl::Status> results) {
  PKV_CHECK(results.size() == items.size(), "PutMany of %d items, %d results",
            items.size(), results.size());
  ++stats_.calls;
  if (items.empty()) return;
  if (!EnsureConnected()) {
    for (absl::Status& r : results) {
      r = absl::UnavailableError(absl::StrFormat(
          "redis %s: not connected (reconnect in %s)", options_.address,
          absl::FormatDuration(next_attempt_ - absl::Now())));
    }
    return;
  }
  const absl::Time deadline = absl::Now() + options_.call_timeout;
  const int64_t timeouts = stats_.timeouts;
  // Every SET goes out before the first reply is read: one round trip.
  size_t sent = 0;
  while (sent < items.size() &&
         SendSet(items[sent].key, items[sent].value, deadline)) {
    ++sent;
  }
  size_t done = 0;  // Items with a reply.
  if (sent == items.size()) {
    for (; done < sent; ++done) {
      RespReader::Reply r;
      const RespReader::Result got = values_.Next(ctx_->fd, deadline, &r);
      if (got != RespReader::Result::kOk) {
        Fail(/*timeout=*/got == RespReader::Result::kTimeout);
        break;
      }
      if (r.kind == RespReader::Kind::kSimple) {
        stats_.bytes_sent += static_cast<int64_t>(items[done].value.size());
        results[done] = absl::OkStatus();
      } else if (r.kind == RespReader::Kind::kError &&
                 absl::StartsWith(
                     absl::string_view(r.text.data(), r.text.size()), "OOM")) {
        // The connection is fine; the server is full.
        results[done] = absl::ResourceExhaustedError(
            absl::StrFormat("redis %s: %s", options_.address, r.text));
      } else {
        ++stats_.errors;
        results[done] = absl::InternalError(absl::StrFormat(
            "redis %s: SET answered %s", options_.address,
            r.kind == RespReader::Kind::kError ? r.text : "not +OK"));
      }
    }
  }
  if (done == items.size() && values_.buffered() != 0) {
    Fail(/*timeout=*/false);  // Bytes nobody asked for.
  } else if (done == items.size()) {
    Succeeded();
    return;
  }
  // The connection is gone: what has no reply may or may not be stored.
  for (size_t i = done; i < items.size(); ++i) {
    if (stats_.timeouts > timeouts) {
      results[i] = absl::DeadlineExceededError(absl::StrFormat(
          "redis %s: SET of %d bytes took over %s", options_.address,
          items[i].value.size(), absl::FormatDuration(options_.call_timeout)));
    } else {
      results[i] = absl::UnavailableError(
          absl::StrFormat("redis %s: connection lost", options_.address));
    }
  }
}

}  // namespace pagedkv

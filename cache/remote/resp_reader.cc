#include "cache/remote/resp_reader.h"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string_view>

#include "absl/strings/numbers.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/check.h"

namespace pagedkv {
namespace {

// Redis's own limit on a bulk string (proto-max-bulk-len's default).
constexpr int64_t kMaxBulkBytes = int64_t{512} << 20;

bool ParseInt(std::string_view text, int64_t* out) {
  return absl::SimpleAtoi(absl::string_view(text.data(), text.size()), out);
}

}  // namespace

RespReader::RespReader(size_t buffer_bytes) : buf_(buffer_bytes, '\0') {
  PKV_CHECK(buffer_bytes >= 16, "RespReader buffer of %d bytes", buffer_bytes);
}

RespReader::Result RespReader::Wait(int fd, absl::Time deadline) {
  for (;;) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return Result::kTimeout;
    // Whole milliseconds, rounded up: never a busy 0-ms poll.
    const int64_t ms = std::max<int64_t>(
        1, absl::ToInt64Milliseconds(absl::Ceil(left, absl::Milliseconds(1))));
    pollfd p{.fd = fd, .events = POLLIN, .revents = 0};
    const int n = poll(&p, 1, static_cast<int>(std::min<int64_t>(ms, 1 << 30)));
    if (n > 0) return Result::kOk;  // Readable, or an error recv will show.
    if (n < 0 && errno != EINTR) return Result::kIoError;
  }
}

RespReader::Result RespReader::Fill(int fd, absl::Time deadline) {
  if (end_ == buf_.size()) {
    if (pos_ > 0) {
      std::memmove(buf_.data(), buf_.data() + pos_, end_ - pos_);
      end_ -= pos_;
      pos_ = 0;
    } else {
      buf_.resize(2 * buf_.size());  // A line longer than the buffer.
    }
  }
  for (;;) {
    // A server that trickles bytes must not stretch the deadline.
    if (absl::Now() >= deadline) return Result::kTimeout;
    const ssize_t n =
        recv(fd, buf_.data() + end_, buf_.size() - end_, MSG_DONTWAIT);
    if (n > 0) {
      end_ += static_cast<size_t>(n);
      return Result::kOk;
    }
    if (n == 0) return Result::kClosed;
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return Result::kIoError;
    if (const Result r = Wait(fd, deadline); r != Result::kOk) return r;
  }
}

RespReader::Result RespReader::ReceiveExactly(int fd, absl::Time deadline,
                                              char* dst, size_t n) {
  while (n > 0) {
    if (absl::Now() >= deadline) return Result::kTimeout;
    const ssize_t got = recv(fd, dst, n, MSG_DONTWAIT);
    if (got > 0) {
      dst += got;
      n -= static_cast<size_t>(got);
      continue;
    }
    if (got == 0) return Result::kClosed;
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return Result::kIoError;
    if (const Result r = Wait(fd, deadline); r != Result::kOk) return r;
  }
  return Result::kOk;
}

RespReader::Result RespReader::ReadLine(int fd, absl::Time deadline,
                                        std::string_view* line) {
  size_t searched = pos_;  // Bytes before this hold no '\n'.
  for (;;) {
    const char* nl = static_cast<const char*>(
        std::memchr(buf_.data() + searched, '\n', end_ - searched));
    if (nl != nullptr) {
      const size_t at = static_cast<size_t>(nl - buf_.data());
      if (at == pos_ || buf_[at - 1] != '\r') return Result::kProtocol;
      *line = std::string_view(buf_.data() + pos_, at - 1 - pos_);
      pos_ = at + 1;
      return Result::kOk;
    }
    if (end_ - pos_ > kMaxLineBytes) return Result::kProtocol;
    const size_t offset = end_ - pos_;  // Fill may move the bytes down.
    if (const Result r = Fill(fd, deadline); r != Result::kOk) return r;
    searched = pos_ + offset;
  }
}

RespReader::Result RespReader::Next(int fd, absl::Time deadline, Reply* reply) {
  std::string_view line;
  if (const Result r = ReadLine(fd, deadline, &line); r != Result::kOk) {
    return r;
  }
  if (line.empty()) return Result::kProtocol;
  const char type = line[0];
  line.remove_prefix(1);
  *reply = Reply();
  switch (type) {
    case '-':
      reply->kind = Kind::kError;
      reply->text = line;
      return Result::kOk;
    case '+':
      reply->kind = Kind::kSimple;
      reply->text = line;
      return Result::kOk;
    case ':':
      reply->kind = Kind::kInteger;
      return ParseInt(line, &reply->integer) ? Result::kOk : Result::kProtocol;
    case '$':
      break;
    default:
      return Result::kProtocol;
  }
  int64_t len = 0;
  if (!ParseInt(line, &len) || len < -1 || len > kMaxBulkBytes) {
    return Result::kProtocol;
  }
  if (len == -1) {
    reply->kind = Kind::kNil;
    return Result::kOk;
  }
  const size_t need = static_cast<size_t>(len) + 2;  // The value and CRLF.
  const char* value = nullptr;
  if (need <= buf_.size()) {
    // In place: move the bytes down once if the value would pass the end.
    if (buf_.size() - pos_ < need) {
      std::memmove(buf_.data(), buf_.data() + pos_, end_ - pos_);
      end_ -= pos_;
      pos_ = 0;
    }
    while (end_ - pos_ < need) {
      if (const Result r = Fill(fd, deadline); r != Result::kOk) return r;
    }
    value = buf_.data() + pos_;
    pos_ += need;
  } else {
    // Bigger than the buffer: the buffered head, then the rest received
    // straight into large_.
    large_.resize(need);
    const size_t head = std::min(end_ - pos_, need);
    std::memcpy(large_.data(), buf_.data() + pos_, head);
    pos_ += head;
    if (const Result r =
            ReceiveExactly(fd, deadline, large_.data() + head, need - head);
        r != Result::kOk) {
      return r;
    }
    value = large_.data();
  }
  if (value[len] != '\r' || value[len + 1] != '\n') return Result::kProtocol;
  reply->kind = Kind::kBulk;
  reply->text = std::string_view(value, static_cast<size_t>(len));
  return Result::kOk;
}

}  // namespace pagedkv

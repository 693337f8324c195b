// cache/remote/resp_reader.h
//
// RespReader reads Redis (RESP2) replies straight from a connected socket,
// with a deadline, for the block store's pipelined GETs: a value that fits
// the reader's buffer is handed out in place (no copy past the kernel's), a
// larger one is received straight into one reused buffer. hiredis's blocking
// reader costs a 16 KiB read() per chunk, a copy into its buffer, a second
// copy into a fresh reply string per value, and a memmove of its buffer
// after every reply; on loopback the many small reads also contend with the
// server's sends for the socket's lock (perf: half the client's time of an
// 8 x 64 KiB chain load, bench/remote/remote_tier_benchmark.cc).
//
//   RespReader reader;                      // one per connection
//   RespReader::Reply r;
//   switch (reader.Next(fd, absl::Now() + absl::Milliseconds(250), &r)) {
//     case RespReader::Result::kOk:
//       if (r.kind == RespReader::Kind::kBulk) Use(r.text);  // Valid until
//       break;                                               // the next call.
//     default:
//       // kTimeout, kClosed, kIoError, kProtocol: the connection is out of
//       // step; drop it (and Reset() the reader) and reconnect.
//       break;
//   }
//
// Replies handled: bulk strings (`$<len>\r\n<bytes>\r\n`, and the nil
// `$-1\r\n`), errors (`-...\r\n`), integers (`:<n>\r\n`) and simple strings
// (`+...\r\n`). Arrays and RESP3 types are a protocol error here (the block
// store never asks for them).
//
// Reads use recv(MSG_DONTWAIT) and wait in poll() only when the socket is
// empty, so the deadline costs no setsockopt per reply and the fd's own
// flags and timeouts (hiredis's) are left alone.
//
// Thread safety: none; one reader per connection, used by one thread.
#ifndef PAGEDKV_CACHE_REMOTE_RESP_READER_H_
#define PAGEDKV_CACHE_REMOTE_RESP_READER_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/time/time.h"

namespace pagedkv {

class RespReader {
 public:
  enum class Kind { kBulk, kNil, kError, kInteger, kSimple };

  struct Reply {
    Kind kind = Kind::kNil;
    // kBulk: the value; kError, kSimple: the line without its type byte and
    // CRLF. Valid until the next Next() or Reset().
    std::string_view text;
    int64_t integer = 0;  // kInteger.
  };

  enum class Result {
    kOk,
    kTimeout,   // The deadline passed before the reply was complete.
    kClosed,    // The peer closed the connection.
    kIoError,   // recv or poll failed (errno says why).
    kProtocol,  // Bytes that are not a reply this reader handles.
  };

  // Lines (an error's text, a length) are at most this long.
  static constexpr size_t kMaxLineBytes = 64 * 1024;

  // buffer_bytes: bytes read per recv at most, and the largest value
  // handed out in place. REQUIRES: buffer_bytes >= 16.
  explicit RespReader(size_t buffer_bytes = size_t{1} << 20);

  RespReader(const RespReader&) = delete;
  RespReader& operator=(const RespReader&) = delete;

  // Reads the next reply from `fd` by `deadline` into *reply. Anything but
  // kOk leaves the stream out of step: the caller drops the connection.
  Result Next(int fd, absl::Time deadline, Reply* reply);

  // Bytes received past the last reply returned (0 when every reply of a
  // pipeline was read).
  size_t buffered() const { return end_ - pos_; }

  // Forgets buffered bytes (a new connection).
  void Reset() { pos_ = end_ = 0; }

 private:
  // Receives more bytes into buf_[end_, capacity): at least one, by
  // deadline. Moves the unread bytes to the front first when the free tail
  // is short.
  Result Fill(int fd, absl::Time deadline);
  // Receives exactly `n` bytes into `dst` (after any buffered ones were
  // taken), by deadline.
  Result ReceiveExactly(int fd, absl::Time deadline, char* dst, size_t n);
  // Waits until fd is readable or the deadline passes.
  Result Wait(int fd, absl::Time deadline);
  // Finds a CRLF-ended line at pos_, filling as needed; *line is its text
  // without the CRLF, and pos_ moves past it.
  Result ReadLine(int fd, absl::Time deadline, std::string_view* line);

  // Invariants: pos_ <= end_ <= buf_.size(); buf_[pos_, end_) is received
  // and unread.
  std::string buf_;
  size_t pos_ = 0;
  size_t end_ = 0;
  std::string large_;  // A value bigger than buf_, reused.
};

}  // namespace pagedkv

#endif  // PAGEDKV_CACHE_REMOTE_RESP_READER_H_

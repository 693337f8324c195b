// RespReader against a model: random pipelines of replies, sent by a
// writer thread over a socketpair in random pieces, must read back reply
// for reply at every buffer size (values in place, values bigger than the
// buffer, lines longer than it); malformed streams are kProtocol, a closed
// peer kClosed, silence kTimeout at the deadline.
#include "cache/remote/resp_reader.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace pagedkv {
namespace {

using Kind = RespReader::Kind;
using Result = RespReader::Result;

struct Expected {
  Kind kind;
  std::string text;
  int64_t integer = 0;
};

std::string Encode(const Expected& e) {
  switch (e.kind) {
    case Kind::kBulk:
      return absl::StrCat("$", e.text.size(), "\r\n", e.text, "\r\n");
    case Kind::kNil:
      return "$-1\r\n";
    case Kind::kError:
      return absl::StrCat("-", e.text, "\r\n");
    case Kind::kInteger:
      return absl::StrCat(":", e.integer, "\r\n");
    case Kind::kSimple:
      return absl::StrCat("+", e.text, "\r\n");
  }
  return "";
}

// A connected pair; closes what is still open.
struct Pair {
  Pair() { EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fd), 0); }
  ~Pair() {
    CloseWriter();
    if (fd[0] >= 0) close(fd[0]);
  }
  void CloseWriter() {
    if (fd[1] >= 0) close(fd[1]);
    fd[1] = -1;
  }
  int fd[2] = {-1, -1};
};

void WriteAll(int fd, const std::string& bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = write(fd, bytes.data() + done, bytes.size() - done);
    ASSERT_GT(n, 0);
    done += static_cast<size_t>(n);
  }
}

absl::Time Soon() { return absl::Now() + absl::Seconds(10); }

TEST(RespReaderTest, RandomPipelinesReadBackAtEveryBufferSize) {
  std::mt19937_64 rng(20261202);
  for (size_t buffer :
       {size_t{16}, size_t{37}, size_t{1024}, size_t{1} << 20}) {
    for (int round = 0; round < 20; ++round) {
      std::vector<Expected> want;
      std::string stream;
      const int n = 1 + static_cast<int>(rng() % 40);
      for (int i = 0; i < n; ++i) {
        Expected e{static_cast<Kind>(rng() % 5), ""};
        const size_t len = rng() % 8 == 0 ? rng() % 300000 : rng() % 100;
        for (size_t k = 0; k < len; ++k) {
          // Bulk values hold any byte, CR and LF included; lines none.
          char c = static_cast<char>(rng());
          if (e.kind != Kind::kBulk && (c == '\r' || c == '\n')) c = 'x';
          e.text.push_back(c);
        }
        if (e.kind == Kind::kNil) e.text.clear();
        if (e.kind == Kind::kInteger) {
          e.text.clear();
          e.integer = static_cast<int64_t>(rng()) >> (rng() % 63);
        }
        if (e.kind == Kind::kError || e.kind == Kind::kSimple) {
          e.text.resize(std::min<size_t>(e.text.size(), 1000));
        }
        stream += Encode(e);
        want.push_back(std::move(e));
      }
      Pair p;
      // Random pieces, so headers, values and CRLFs split anywhere.
      std::thread writer([&, seed = rng()] {
        std::mt19937_64 w(seed);
        size_t done = 0;
        while (done < stream.size()) {
          const size_t piece =
              std::min<size_t>(stream.size() - done, 1 + w() % 70000);
          WriteAll(p.fd[1], stream.substr(done, piece));
          done += piece;
        }
      });
      RespReader reader(buffer);
      for (size_t i = 0; i < want.size(); ++i) {
        RespReader::Reply r;
        ASSERT_EQ(reader.Next(p.fd[0], Soon(), &r), Result::kOk)
            << "reply " << i << " of " << want.size() << ", buffer " << buffer;
        ASSERT_EQ(r.kind, want[i].kind) << "reply " << i;
        if (r.kind == Kind::kInteger) {
          EXPECT_EQ(r.integer, want[i].integer) << "reply " << i;
        } else {
          ASSERT_EQ(r.text.size(), want[i].text.size()) << "reply " << i;
          EXPECT_TRUE(r.text == want[i].text) << "reply " << i;
        }
      }
      writer.join();
      EXPECT_EQ(reader.buffered(), 0u);
    }
  }
}

TEST(RespReaderTest, BytesPastTheLastReplyAreCounted) {
  Pair p;
  WriteAll(p.fd[1], ":1\r\n:2\r\n");
  RespReader reader;
  RespReader::Reply r;
  ASSERT_EQ(reader.Next(p.fd[0], Soon(), &r), Result::kOk);
  EXPECT_EQ(r.integer, 1);
  EXPECT_EQ(reader.buffered(), 4u);  // ":2\r\n", received with the first.
  reader.Reset();
  EXPECT_EQ(reader.buffered(), 0u);
}

TEST(RespReaderTest, MalformedStreamsAreProtocolErrors) {
  const std::vector<std::string> bad = {
      "*2\r\n",             // An array.
      "?what\r\n",          // No such type.
      "\r\n",               // An empty line.
      "$abc\r\n",           // A length that is no number.
      "$-2\r\n",            // Below nil.
      "$999999999999\r\n",  // Past Redis's 512 MiB.
      "$3\r\nabcXY",        // A value not ended by CRLF.
      ":12a\r\n",           // An integer that is no number.
      ":1\n",               // LF without CR.
  };
  for (const std::string& s : bad) {
    Pair p;
    WriteAll(p.fd[1], s);
    p.CloseWriter();  // Whatever is read, it ends here.
    RespReader reader(16);
    RespReader::Reply r;
    EXPECT_EQ(reader.Next(p.fd[0], Soon(), &r), Result::kProtocol) << s;
  }
  // A line longer than kMaxLineBytes, never ended.
  Pair p;
  std::thread writer([&] {
    WriteAll(p.fd[1], "-" + std::string(RespReader::kMaxLineBytes + 10, 'e'));
  });
  RespReader reader(16);
  RespReader::Reply r;
  EXPECT_EQ(reader.Next(p.fd[0], Soon(), &r), Result::kProtocol);
  writer.join();
}

TEST(RespReaderTest, ClosedPeerMidReplyIsClosed) {
  for (const std::string& s :
       {std::string(""), std::string("$10\r\nabc"), std::string(":12"),
        "$100\r\n" + std::string(50, 'v')}) {
    for (size_t buffer : {size_t{16}, size_t{1} << 20}) {
      Pair p;
      WriteAll(p.fd[1], s);
      p.CloseWriter();
      RespReader reader(buffer);
      RespReader::Reply r;
      EXPECT_EQ(reader.Next(p.fd[0], Soon(), &r), Result::kClosed)
          << "'" << s << "', buffer " << buffer;
    }
  }
}

TEST(RespReaderTest, SilenceTimesOutAtTheDeadline) {
  for (const std::string& s : {std::string(""), std::string("$5\r\nab"),
                               "$40\r\n" + std::string(20, 'v')}) {
    Pair p;
    WriteAll(p.fd[1], s);
    RespReader reader(16);  // The 40-byte value takes the large path.
    RespReader::Reply r;
    const absl::Time start = absl::Now();
    EXPECT_EQ(reader.Next(p.fd[0], start + absl::Milliseconds(50), &r),
              Result::kTimeout)
        << s;
    const absl::Duration took = absl::Now() - start;
    EXPECT_GE(took, absl::Milliseconds(50));
    EXPECT_LT(took, absl::Seconds(5));
  }
}

TEST(RespReaderTest, AnExpiredDeadlineReadsNothing) {
  Pair p;
  WriteAll(p.fd[1], ":7\r\n");
  RespReader reader;
  RespReader::Reply r;
  EXPECT_EQ(reader.Next(p.fd[0], absl::Now() - absl::Seconds(1), &r),
            Result::kTimeout);
  EXPECT_EQ(reader.Next(p.fd[0], Soon(), &r), Result::kOk);
  EXPECT_EQ(r.integer, 7);
}

TEST(RespReaderDeathTest, TinyBufferIsABug) {
  EXPECT_DEATH(RespReader(8), "RespReader buffer of 8 bytes");
}

}  // namespace
}  // namespace pagedkv

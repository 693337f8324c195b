// tests/testing/redis_server.h
//
// A redis-server owned by one test: started on a unix socket in a fresh
// directory under $TEST_TMPDIR (or /tmp when that path is too long for a
// socket), with no TCP port unless asked for one (Options::loopback_tcp: a
// free port on 127.0.0.1, for benchmarks that compare with redis-benchmark
// over TCP), no persistence (--save "" --appendonly no), and killed in the
// destructor, or when the thread that started it dies (PR_SET_PDEATHSIG: a
// crashed test or benchmark leaves no server behind). Fault tests kill it
// (SIGKILL), restart it on the same socket (empty), pause it (SIGSTOP) and
// send it commands (to corrupt values, delete keys, change maxmemory).
//
//   if (!RedisServer::Available()) GTEST_SKIP() << RedisServer::kSkipMessage;
//   std::unique_ptr<RedisServer> redis = *RedisServer::Start();
//   // Or with Options::loopback_tcp set: redis->tcp_address().
//   RedisBlockStore::Create({.address = redis->address()});  // "unix:..."
//   redis->Kill();                        // kill -9
//   ASSERT_THAT(redis->Restart(), IsOk());
//
// Thread safety: one thread (the test's).
#ifndef PAGEDKV_TESTS_TESTING_REDIS_SERVER_H_
#define PAGEDKV_TESTS_TESTING_REDIS_SERVER_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace pagedkv::testing {

class RedisServer {
 public:
  static constexpr const char* kSkipMessage =
      "redis-server is not installed (Debian: apt-get install redis-server; "
      "tools/setup.sh installs it): skipping the Redis integration test";

  struct Options {
    std::string maxmemory;  // "4mb"; empty: no limit.
    std::string maxmemory_policy = "allkeys-lru";
    // Also listen on a free TCP port of 127.0.0.1 (tcp_address()).
    bool loopback_tcp = false;
  };

  // Whether redis-server is on PATH.
  static bool Available();
  // Starts a server and waits (up to 5 s) until it answers PING.
  // UNAVAILABLE with the log's tail if it does not come up (with
  // loopback_tcp, after trying 5 free ports: another process may take the
  // one picked before redis-server binds it).
  static absl::StatusOr<std::unique_ptr<RedisServer>> Start(
      const Options& options);
  static absl::StatusOr<std::unique_ptr<RedisServer>> Start() {
    return Start(Options());
  }

  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;
  ~RedisServer();

  // "unix:<socket>", for RedisBlockStore::Options::address.
  std::string address() const { return "unix:" + socket_; }
  const std::string& socket_path() const { return socket_; }
  // "127.0.0.1:<port>" with Options::loopback_tcp, else "".
  std::string tcp_address() const;
  // The TCP port, 0 without Options::loopback_tcp (kept across Restart).
  int tcp_port() const { return port_; }
  pid_t pid() const { return pid_; }

  // kill -9 and reap; the socket file stays (as after a crash).
  void Kill();
  // Starts an empty server on the same socket (after Kill).
  absl::Status Restart();
  void Pause();   // SIGSTOP
  void Resume();  // SIGCONT

  // Runs one command (binary-safe arguments) on a new connection; returns
  // the reply as text ("OK", an integer, a bulk string, "(nil)", or the
  // error text as INTERNAL).
  absl::StatusOr<std::string> Command(const std::vector<std::string>& argv);

 private:
  RedisServer(Options options, std::string dir);
  absl::Status Launch();

  const Options options_;
  const std::string dir_;
  const std::string socket_;
  int port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace pagedkv::testing

#endif  // PAGEDKV_TESTS_TESTING_REDIS_SERVER_H_

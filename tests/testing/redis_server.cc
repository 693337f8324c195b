#include "tests/testing/redis_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace pagedkv::testing {
namespace {

std::string MakeDir() {
  const char* tmp = std::getenv("TEST_TMPDIR");
  std::string base = tmp != nullptr ? tmp : "/tmp";
  // sun_path holds 108 bytes: keep "<dir>/redis.sock" well inside it.
  if (base.size() > 60) base = "/tmp";
  std::string templ = base + "/pkv-redis-XXXXXX";
  if (mkdtemp(templ.data()) == nullptr) return "";
  return templ;
}

std::string Tail(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  return text.size() > 2000 ? text.substr(text.size() - 2000) : text;
}

// A TCP port of 127.0.0.1 that is free now (the kernel's pick), or 0.
int FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

}  // namespace

bool RedisServer::Available() {
  const char* path = std::getenv("PATH");
  const std::string dirs = path != nullptr ? path : "/usr/bin:/bin";
  for (absl::string_view d : absl::StrSplit(dirs, ':')) {
    const std::string exe = absl::StrCat(d, "/redis-server");
    if (access(exe.c_str(), X_OK) == 0) return true;
  }
  return false;
}

RedisServer::RedisServer(Options options, std::string dir)
    : options_(std::move(options)),
      dir_(std::move(dir)),
      socket_(dir_ + "/redis.sock") {}

absl::StatusOr<std::unique_ptr<RedisServer>> RedisServer::Start(
    const Options& options) {
  const std::string dir = MakeDir();
  if (dir.empty()) return absl::InternalError("mkdtemp failed");
  std::unique_ptr<RedisServer> server(new RedisServer(options, dir));
  absl::Status s;
  for (int attempt = 0; attempt < (options.loopback_tcp ? 5 : 1); ++attempt) {
    if (options.loopback_tcp) {
      server->port_ = FreeLoopbackPort();
      if (server->port_ == 0) return absl::InternalError("no free TCP port");
    }
    s = server->Launch();
    if (s.ok()) return server;
  }
  return s;
}

absl::Status RedisServer::Launch() {
  unlink(socket_.c_str());
  const std::string log = dir_ + "/redis.log";
  std::vector<std::string> args = {
      "redis-server", "--port",      absl::StrCat(port_),
      "--unixsocket", socket_,       "--unixsocketperm",
      "700",          "--save",      "",
      "--appendonly", "no",          "--dir",
      dir_,           "--daemonize", "no"};
  if (!options_.maxmemory.empty()) {
    args.insert(args.end(), {"--maxmemory", options_.maxmemory,
                             "--maxmemory-policy", options_.maxmemory_policy});
  }
  if (port_ != 0) args.insert(args.end(), {"--bind", "127.0.0.1"});
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    // Dies with the thread that started it (a crashed benchmark included),
    // also if that happened before prctl.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    execvp("redis-server", argv.data());
    _exit(127);
  }
  pid_ = pid;
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (absl::Now() < deadline) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return absl::UnavailableError(absl::StrFormat(
          "redis-server exited (status %d) before answering; log:\n%s", status,
          Tail(log)));
    }
    redisContext* c = redisConnectUnixWithTimeout(socket_.c_str(), {0, 100000});
    if (c != nullptr && c->err == 0) {
      redisReply* r = static_cast<redisReply*>(redisCommand(c, "PING"));
      const bool up = r != nullptr && r->type == REDIS_REPLY_STATUS;
      if (r != nullptr) freeReplyObject(r);
      redisFree(c);
      if (up) return absl::OkStatus();
    } else if (c != nullptr) {
      redisFree(c);
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  Kill();
  return absl::UnavailableError(absl::StrFormat(
      "redis-server did not answer PING within 5 s; log:\n%s", Tail(log)));
}

std::string RedisServer::tcp_address() const {
  return port_ == 0 ? "" : absl::StrCat("127.0.0.1:", port_);
}

RedisServer::~RedisServer() {
  Kill();
  unlink(socket_.c_str());
  unlink((dir_ + "/redis.log").c_str());
  rmdir(dir_.c_str());
}

void RedisServer::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

absl::Status RedisServer::Restart() {
  Kill();
  return Launch();
}

void RedisServer::Pause() {
  if (pid_ > 0) kill(pid_, SIGSTOP);
}

void RedisServer::Resume() {
  if (pid_ > 0) kill(pid_, SIGCONT);
}

absl::StatusOr<std::string> RedisServer::Command(
    const std::vector<std::string>& argv) {
  redisContext* c = redisConnectUnixWithTimeout(socket_.c_str(), {2, 0});
  if (c == nullptr || c->err != 0) {
    if (c != nullptr) redisFree(c);
    return absl::UnavailableError("cannot connect to " + socket_);
  }
  std::vector<const char*> args;
  std::vector<size_t> lens;
  for (const std::string& a : argv) {
    args.push_back(a.data());
    lens.push_back(a.size());
  }
  redisReply* r = static_cast<redisReply*>(redisCommandArgv(
      c, static_cast<int>(args.size()), args.data(), lens.data()));
  redisFree(c);
  if (r == nullptr) return absl::UnavailableError("no reply");
  std::string text;
  absl::Status status;
  switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
      text.assign(r->str, r->len);
      break;
    case REDIS_REPLY_INTEGER:
      text = absl::StrCat(r->integer);
      break;
    case REDIS_REPLY_NIL:
      text = "(nil)";
      break;
    case REDIS_REPLY_ERROR:
      status = absl::InternalError(std::string(r->str, r->len));
      break;
    default:
      text = absl::StrFormat("(reply type %d)", r->type);
  }
  freeReplyObject(r);
  if (!status.ok()) return status;
  return text;
}

}  // namespace pagedkv::testing

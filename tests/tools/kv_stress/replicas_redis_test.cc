// kv_stress's multi-replica mode on a real Redis (a test-owned
// redis-server on a unix socket, tests/testing/redis_server.h): three
// replicas share blocks through it, every loaded block's stamps are right,
// and, with no timeouts or errors, the run serves exactly what the
// in-process store serves (the step loop drains each replica's writes
// before the next replica steps, so both runs see the same store).
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "base/check.h"
#include "gtest/gtest.h"
#include "tensor/dtype.h"
#include "tests/testing/redis_server.h"
#include "tests/testing/status_matchers.h"
#include "tests/tools/kv_stress/small_replicas.h"
#include "tools/kv_stress/replicas.h"
#include "tools/kv_stress/simulator.h"

namespace pagedkv::kv_stress {
namespace {

using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::RedisServer;

SimConfig Small(const std::string& remote) {
  return SmallReplicas(remote, /*steps=*/150);  // Fewer than replicas_test.
}

TEST(ReplicasRedisTest, ReplicasShareBlocksThroughRedisAndEveryStampChecks) {
  if (!RedisServer::Available()) GTEST_SKIP() << RedisServer::kSkipMessage;
  absl::StatusOr<std::unique_ptr<RedisServer>> redis = RedisServer::Start();
  ASSERT_THAT(redis.status(), IsOk());
  absl::StatusOr<ReplicaRunResult> r =
      RunReplicas(Small((*redis)->address()));
  ASSERT_THAT(r.status(), IsOk());
  EXPECT_EQ(r->invariant_failures, 0);
  for (const std::string& m : r->failure_messages) ADD_FAILURE() << m;
  const ReplicaStats& t = r->total;
  EXPECT_GT(t.remote_hit_blocks, 0);
  EXPECT_EQ(t.remote_stamp_checks, 2 * t.loaded_blocks);  // Readmits too.
  EXPECT_EQ(t.remote_stamp_failures, 0);
  EXPECT_EQ(t.verify_failures, 0);
  EXPECT_GT(t.stored_blocks, 0);
  EXPECT_NE(r->key_namespace, "kv_stress");  // Unique to the run.

  if (t.timeouts > 0 || t.errors > 0 || t.store_failed > 0) {
    GTEST_SKIP() << "Redis timed out or failed (" << t.timeouts << " timeouts, "
                 << t.errors << " errors): the comparison with memory is off";
  }
  absl::StatusOr<ReplicaRunResult> m = RunReplicas(Small("memory"));
  ASSERT_THAT(m.status(), IsOk());
  for (size_t i = 0; i < r->replicas.size(); ++i) {
    EXPECT_EQ(r->replicas[i].remote_hit_blocks,
              m->replicas[i].remote_hit_blocks)
        << "replica " << i;
    EXPECT_EQ(r->replicas[i].local_hit_blocks, m->replicas[i].local_hit_blocks)
        << "replica " << i;
  }
}

}  // namespace
}  // namespace pagedkv::kv_stress

// The ids fingerprint and the per-forward check over gathered facts (one process; the mpirun cases
// in this folder run them across ranks).
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "expect_error.hpp"
#include "op/agreement.hpp"

namespace tpembed::testing {
namespace {

std::uint64_t of_i64(const std::vector<std::int64_t>& ids) {
  return op::host_ids_fingerprint(ids.data(), DType::i64, static_cast<std::int64_t>(ids.size()));
}

TEST(IdsFingerprint, TheSameIdsAgreeWhateverTheirDtype) {
  const std::vector<std::int64_t> wide = {0, 7, -1, 123456, 3};
  const std::vector<std::int32_t> narrow = {0, 7, -1, 123456, 3};
  EXPECT_EQ(of_i64(wide), op::host_ids_fingerprint(narrow.data(), DType::i32, 5));
}

TEST(IdsFingerprint, OtherValuesOrderOrCountDiffer) {
  const std::uint64_t base = of_i64({0, 3, 5, 1});
  EXPECT_NE(base, of_i64({0, 3, 1, 5}));      // the same ids in another order
  EXPECT_NE(base, of_i64({0, 3, 5, 2}));      // one id differs
  EXPECT_NE(base, of_i64({0, 3, 5, 1, 0}));   // one more id
  EXPECT_NE(of_i64({}), of_i64({0}));         // no ids against one id 0
  EXPECT_NE(of_i64({5, 5}), of_i64({6, 4}));  // same sum
  EXPECT_EQ(base, of_i64({0, 3, 5, 1}));
}

TEST(IdsFingerprint, HostPlaceHashesOnTheHost) {
  const std::vector<std::int32_t> ids = {4, 2, 9};
  op::Place host(Device::cpu(), nullptr);
  op::Workspace workspace;
  EXPECT_EQ(op::ids_fingerprint(TensorView(ids.data(), DType::i32, {3}), host, workspace),
            op::host_ids_fingerprint(ids.data(), DType::i32, 3));
}

op::ForwardFacts facts(std::int64_t count, std::uint64_t fingerprint) {
  op::ForwardFacts f{};
  f.count = count;
  f.ids_fingerprint = fingerprint;
  return f;
}

TEST(ForwardFacts, AgreeingRanksPass) {
  EXPECT_NO_THROW(op::check_forward_facts({facts(3, 9), facts(3, 9)}));
}

TEST(ForwardFacts, OtherCountsAreAShapeErrorNamingTheRanks) {
  expect_error<ShapeError>(
      [] {
        op::check_forward_facts({facts(3, 9), facts(2, 9), facts(3, 9), facts(5, 1)});
      },
      "rank 1 of the tp group looks up 2 ids but rank 0 looks up 3; rank 3 of the tp group looks "
      "up 5 ids but "
      "rank 0 looks up 3: every rank of the group must pass the same ids");
}

TEST(ForwardFacts, OtherIdsOfTheSameCountAreRefusedNamingTheRanks) {
  expect_error<InvalidArgumentError>(
      [] {
        op::check_forward_facts({facts(4, 0x10), facts(4, 0x11), facts(4, 0x10), facts(4, 0x12)});
      },
      "ranks 1,3 of the tp group look up other ids than rank 0 (the same count, 4, but ids "
      "fingerprint 0x11 where "
      "rank 0 has 0x10)");
}

}  // namespace
}  // namespace tpembed::testing

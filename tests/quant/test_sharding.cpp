// shard_range, slice_rows and slice_cols against hand-computed layouts and the test's own slicing.
#include <gtest/gtest.h>

#include <cstring>
#include <limits>
#include <string>

#include "reference.hpp"

namespace tpembed::testing {
namespace {

TEST(Sharding, RangesEqualAndPacked) {
  // 10 rows over 4 ranks. Equal: ceil = 3 each (the last holds row 9 and two zero rows).
  EXPECT_EQ(shard_range(10, 4, 0, ShardPlacement::equal),
            (std::pair<std::int64_t, std::int64_t>{0, 3}));
  EXPECT_EQ(shard_range(10, 4, 3, ShardPlacement::equal),
            (std::pair<std::int64_t, std::int64_t>{9, 3}));
  // Packed: 3, 3, 2, 2.
  EXPECT_EQ(shard_range(10, 4, 1, ShardPlacement::packed),
            (std::pair<std::int64_t, std::int64_t>{3, 3}));
  EXPECT_EQ(shard_range(10, 4, 2, ShardPlacement::packed),
            (std::pair<std::int64_t, std::int64_t>{6, 2}));
  EXPECT_EQ(shard_range(10, 4, 3, ShardPlacement::packed),
            (std::pair<std::int64_t, std::int64_t>{8, 2}));
  EXPECT_THROW(shard_range(10, 4, 4, ShardPlacement::packed), InvalidArgumentError);
}

TEST(Sharding, RangesNearTheLargestIndexDoNotOverflow) {
  constexpr std::int64_t kMax =
      std::numeric_limits<std::int64_t>::max();  // 3 * 3074457345618258602 + 1
  // ceil(kMax / 3) computed without kMax + 2: ranks 0 and 1 fit, rank 2's shard would end past
  // kMax.
  EXPECT_EQ(shard_range(kMax, 3, 1, ShardPlacement::equal),
            (std::pair<std::int64_t, std::int64_t>{3074457345618258603, 3074457345618258603}));
  try {
    shard_range(kMax, 3, 2, ShardPlacement::equal);
    ADD_FAILURE() << "an equal shard ending past INT64_MAX was accepted";
  } catch (const InvalidArgumentError& error) {
    EXPECT_NE(std::string(error.what()).find("reach past the largest 64-bit index at tp_rank 2"),
              std::string::npos)
        << error.what();
  }
  // Packed shards end at the total: every rank fits, sizes sum to kMax.
  EXPECT_EQ(shard_range(kMax, 3, 2, ShardPlacement::packed),
            (std::pair<std::int64_t, std::int64_t>{6148914691236517205, 3074457345618258602}));
  EXPECT_EQ(shard_range(kMax, 1, 0, ShardPlacement::equal),
            (std::pair<std::int64_t, std::int64_t>{0, kMax}));
}

TEST(Sharding, SlicesMatchElementwiseCopies) {
  for (DType dtype : {DType::f32, DType::bf16, DType::i8, DType::i4}) {
    const HostTable table = random_table(dtype, 9, 7, 3);
    const Tensor rows = slice_rows(table.view(), 6, 5);  // rows 6..8, then two zero rows
    const HostTable expected_rows = table.slice_rows(6, 5);
    EXPECT_EQ(0, std::memcmp(rows.data(), expected_rows.bytes.data(), expected_rows.bytes.size()))
        << dtype_name(dtype);
    const Tensor cols = slice_cols(table.view(), 3, 3);  // odd start: i4 nibbles move
    const HostTable expected_cols = table.slice_cols(3, 3);
    EXPECT_EQ(cols.shape(), (std::vector<std::int64_t>{9, 3}));
    EXPECT_EQ(0, std::memcmp(cols.data(), expected_cols.bytes.data(), expected_cols.bytes.size()))
        << dtype_name(dtype);
  }
}

TEST(Sharding, BadRangesAreRefused) {
  const HostTable table = random_table(DType::f32, 4, 4, 1);
  try {
    slice_cols(table.view(), 2, 3);
    FAIL() << "slice past the last column accepted";
  } catch (const InvalidArgumentError& error) {
    EXPECT_NE(std::string(error.what()).find("columns [2, 5) are outside [0, 4)"),
              std::string::npos)
        << error.what();
  }
  EXPECT_THROW(slice_rows(table.view(), -1, 2), InvalidArgumentError);
  EXPECT_THROW(slice_rows(TensorView(table.bytes.data(), DType::f32, {2, 2, 4}), 0, 1), ShapeError);
}

}  // namespace
}  // namespace tpembed::testing

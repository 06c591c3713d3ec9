// shard_range, slice_rows and slice_cols against hand-computed layouts and the test's own slicing.
#include <gtest/gtest.h>

#include <cstring>

#include "reference.hpp"

namespace tpembed::testing {
namespace {

TEST(Sharding, RangesEqualAndPacked) {
  // 10 rows over 4 ranks. Equal: ceil = 3 each (the last holds row 9 and two zero rows).
  EXPECT_EQ(shard_range(10, 4, 0, ShardPlacement::equal), (std::pair<std::int64_t, std::int64_t>{0, 3}));
  EXPECT_EQ(shard_range(10, 4, 3, ShardPlacement::equal), (std::pair<std::int64_t, std::int64_t>{9, 3}));
  // Packed: 3, 3, 2, 2.
  EXPECT_EQ(shard_range(10, 4, 1, ShardPlacement::packed), (std::pair<std::int64_t, std::int64_t>{3, 3}));
  EXPECT_EQ(shard_range(10, 4, 2, ShardPlacement::packed), (std::pair<std::int64_t, std::int64_t>{6, 2}));
  EXPECT_EQ(shard_range(10, 4, 3, ShardPlacement::packed), (std::pair<std::int64_t, std::int64_t>{8, 2}));
  EXPECT_THROW(shard_range(10, 4, 4, ShardPlacement::packed), InvalidArgumentError);
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
    EXPECT_NE(std::string(error.what()).find("columns [2, 5) are outside [0, 4)"), std::string::npos)
        << error.what();
  }
  EXPECT_THROW(slice_rows(table.view(), -1, 2), InvalidArgumentError);
  EXPECT_THROW(slice_rows(TensorView(table.bytes.data(), DType::f32, {2, 2, 4}), 0, 1), ShapeError);
}

}  // namespace
}  // namespace tpembed::testing

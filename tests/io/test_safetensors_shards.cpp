// Shard reads against the whole tensor: row views, row copies (zero-padded past the end) and
// column copies (int4 repacked) equal slice_rows()/slice_cols() of the whole table, for every dtype
// and for row sizes on both sides of a page (the two column-read strategies).
#include <gtest/gtest.h>

#include <tuple>

#include "safetensors_files.hpp"
#include "tpembed/safetensors.hpp"
#include "tpembed/sharding.hpp"

namespace tpembed::testing {
namespace {

constexpr DType kTableDTypes[] = {DType::f32,      DType::f16, DType::bf16, DType::i8,
                                  DType::fp8_e4m3, DType::i4,  DType::i32,  DType::i64};

std::string bytes_of(const TensorView& view) {
  return std::string(static_cast<const char*>(view.data), static_cast<std::size_t>(view.nbytes()));
}

// (dtype, rows, columns): columns 1, 13 (odd int4 starts), 3001 (f32 rows past a page: one pread
// per row's slice) and 40 (several rows a page: whole-row blocks).
using ShardCase = std::tuple<DType, std::int64_t, std::int64_t>;

class ShardReads : public ::testing::TestWithParam<ShardCase> {
 protected:
  void SetUp() override {
    const auto [dtype, rows, cols] = GetParam();
    TensorView view(nullptr, dtype, {rows, cols});
    bytes_ = random_bytes(static_cast<std::size_t>(view.nbytes()),
                          static_cast<std::uint32_t>(rows * cols));
    view.data = bytes_.data();
    whole_ = view;
    write_safetensors(dir_.file("table.safetensors"), {{"embed", whole_}});
  }
  ScratchDir dir_;
  std::vector<unsigned char> bytes_;
  TensorView whole_;
};

TEST_P(ShardReads, RowsAndColumnsOfEveryRankMatchTheWholeTable) {
  const SafetensorsFile file(dir_.file("table.safetensors"));
  const TensorView whole = file.tensor("embed");
  ASSERT_EQ(bytes_of(whole), bytes_of(whole_));
  const std::int64_t rows = whole.shape[0], cols = whole.shape[1];
  for (int tp : {1, 2, 3, 4}) {
    for (int rank = 0; rank < tp; ++rank) {
      SCOPED_TRACE("tp " + std::to_string(tp) + " rank " + std::to_string(rank));
      const auto [row_first, row_count] = shard_range(rows, tp, rank, ShardPlacement::packed);
      const TensorView row_view = file.rows("embed", row_first, row_count);
      EXPECT_EQ(row_view.shape, (std::vector<std::int64_t>{row_count, cols}));
      EXPECT_EQ(bytes_of(row_view), bytes_of(slice_rows(whole_, row_first, row_count)));
      EXPECT_EQ(row_view.data,
                static_cast<const char*>(whole.data) + row_first * row_bytes(whole.dtype, cols))
          << "a row shard is a view into the map";
      // Equal shards: the last rank's range runs past the vocab and is zero-padded.
      const auto [equal_first, equal_count] = shard_range(rows, tp, rank, ShardPlacement::equal);
      EXPECT_EQ(bytes_of(file.copy_rows("embed", equal_first, equal_count)),
                bytes_of(slice_rows(whole_, equal_first, equal_count)));

      const auto [col_first, col_count] = shard_range(cols, tp, rank, ShardPlacement::packed);
      const Tensor col_shard = file.columns("embed", col_first, col_count);
      EXPECT_EQ(col_shard.shape(), (std::vector<std::int64_t>{rows, col_count}));
      EXPECT_EQ(bytes_of(col_shard), bytes_of(slice_cols(whole_, col_first, col_count)));
    }
  }
}

TEST_P(ShardReads, EveryColumnRangeOfAFewColumns) {
  // Every start and width up to 5 columns: int4 slices starting on either nibble, odd widths.
  const SafetensorsFile file(dir_.file("table.safetensors"));
  const std::int64_t cols = whole_.shape[1];
  for (std::int64_t first = 0; first < std::min<std::int64_t>(cols, 6); ++first) {
    for (std::int64_t count = 0; count <= std::min<std::int64_t>(cols - first, 5); ++count) {
      EXPECT_EQ(bytes_of(file.columns("embed", first, count)),
                bytes_of(slice_cols(whole_, first, count)))
          << "columns [" << first << ", " << first + count << ")";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(EveryDtype, ShardReads,
                         ::testing::Combine(::testing::ValuesIn(kTableDTypes),
                                            ::testing::Values<std::int64_t>(1, 37),
                                            ::testing::Values<std::int64_t>(1, 13, 40, 3001)),
                         [](const auto& info) {
                           return std::string(dtype_name(std::get<0>(info.param))) + "_" +
                                  std::to_string(std::get<1>(info.param)) + "x" +
                                  std::to_string(std::get<2>(info.param));
                         });

TEST(ShardReadErrors, RangesOutsideTheTensorAreRejected) {
  ScratchDir dir;
  const float values[12] = {};
  write_safetensors(dir.file("t.safetensors"), {{"m", TensorView(values, DType::f32, {3, 4})},
                                                {"v", TensorView(values, DType::f32, {12})},
                                                {"s", TensorView(values, DType::f32, {})}});
  const SafetensorsFile file(dir.file("t.safetensors"));
  EXPECT_THROW(file.rows("m", 2, 2), InvalidArgumentError);
  EXPECT_THROW(file.rows("m", -1, 1), InvalidArgumentError);
  EXPECT_THROW(file.rows("m", 0, -1), InvalidArgumentError);
  EXPECT_THROW(file.rows("s", 0, 1), InvalidArgumentError);
  EXPECT_THROW(file.copy_rows("m", -1, 2), InvalidArgumentError);
  EXPECT_THROW(file.columns("m", 3, 2), InvalidArgumentError);
  EXPECT_THROW(file.columns("m", -1, 2), InvalidArgumentError);
  EXPECT_THROW(file.columns("v", 0, 2), InvalidArgumentError);
  EXPECT_EQ(file.rows("m", 3, 0).shape, (std::vector<std::int64_t>{0, 4}));
  EXPECT_EQ(file.rows("v", 2, 5).shape, (std::vector<std::int64_t>{5}));
  EXPECT_EQ(file.columns("m", 4, 0).shape(), (std::vector<std::int64_t>{3, 0}));
  EXPECT_THROW(file.rows("nope", 0, 1), CheckpointError);
}

}  // namespace
}  // namespace tpembed::testing

// 64-bit indexing: an int8 table of more than 2^31 elements, and a bf16 output of more than 2^31
// elements, checked against values computed from the fill formula.
#include <gtest/gtest.h>

#include <vector>

#include "device_tables.hpp"

namespace tpembed::testing {
namespace {

constexpr std::int64_t kCols = 2048;
constexpr std::int64_t kRows = (std::int64_t{1} << 20) + 5;  // kRows * kCols > 2^31

std::int8_t code_at(std::int64_t row, std::int64_t col) {
  return static_cast<std::int8_t>((row * 131 + col * 7 + (row >> 12)) & 0xff);
}
float scale_at(std::int64_t row) { return 1.0f + static_cast<float>(row % 7) * 0.25f; }

TEST(LargeTableCuda, RowsPastTwoToTheThirtyOneElements) {
  ASSERT_GT(kRows * kCols, std::int64_t{1} << 31);
  std::vector<std::int8_t> table(static_cast<std::size_t>(kRows * kCols));
  for (std::int64_t r = 0; r < kRows; ++r) {
    for (std::int64_t c = 0; c < kCols; ++c) table[static_cast<std::size_t>(r * kCols + c)] = code_at(r, c);
  }
  std::vector<float> scales(static_cast<std::size_t>(kRows));
  for (std::int64_t r = 0; r < kRows; ++r) scales[static_cast<std::size_t>(r)] = scale_at(r);
  DeviceBuffer device_table(table.size(), 0), device_scales(scales.size() * 4, 0);
  device_table.copy_from_host(table.data(), table.size());
  device_scales.copy_from_host(scales.data(), scales.size() * 4);
  table = {};

  // Enough ids that the output also passes 2^31 elements; the interesting ones sit at both ends.
  const std::int64_t tokens = (std::int64_t{1} << 31) / kCols + 8;
  std::vector<std::int64_t> ids(static_cast<std::size_t>(tokens));
  for (std::int64_t t = 0; t < tokens; ++t) ids[static_cast<std::size_t>(t)] = (t * 7919) % kRows;
  const std::vector<std::int64_t> special = {kRows - 1, kRows - 2, std::int64_t{1} << 20, 0, -1, kRows};
  for (std::size_t k = 0; k < special.size(); ++k) {
    ids[k] = special[k];
    ids[static_cast<std::size_t>(tokens) - 1 - k] = special[k];
  }
  DeviceBuffer device_ids(ids.size() * 8, 0);
  device_ids.copy_from_host(ids.data(), ids.size() * 8);
  DeviceBuffer out(static_cast<std::size_t>(tokens * kCols * 2), 0);

  EmbeddingShard shard;
  shard.weight = device_table.view(DType::i8, {kRows, kCols});
  shard.scale = device_scales.view(DType::f32, {kRows});
  EmbeddingConfig config;
  config.out_dtype = DType::bf16;
  auto single = make_single_communicator();
  ParallelEmbedding embedding(*single, shard, config);
  embedding.forward(device_ids.view(DType::i64, {tokens}), out.view(DType::bf16, {tokens, kCols}));
  EXPECT_EQ(embedding.last_bad_id_count(), 4u);  // -1 and kRows, at each end

  auto check_rows = [&](std::int64_t first, std::int64_t count) {
    std::vector<std::uint16_t> rows(static_cast<std::size_t>(count * kCols));
    cuda_copy(rows.data(), static_cast<const std::uint8_t*>(out.data()) + first * kCols * 2, rows.size() * 2);
    for (std::int64_t t = 0; t < count; ++t) {
      const std::int64_t id = ids[static_cast<std::size_t>(first + t)];
      for (std::int64_t c = 0; c < kCols; ++c) {
        const bool valid = id >= 0 && id < kRows;
        const float value = valid ? static_cast<float>(code_at(id, c)) * scale_at(id) : 0.0f;
        ASSERT_EQ(rows[static_cast<std::size_t>(t * kCols + c)], f32_to_bf16_bits(value))
            << "token " << first + t << " (id " << id << ") column " << c;
      }
    }
  };
  check_rows(0, 64);
  check_rows(tokens / 2, 16);
  check_rows(tokens - 64, 64);  // output elements past 2^31
}

}  // namespace
}  // namespace tpembed::testing

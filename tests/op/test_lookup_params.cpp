// Features of the lookup launchers' parameters (LookupParams), on lookup_cpu (test_lookup_params)
// and on lookup_cuda (test_lookup_params_cuda):
//  - the gather over the group's shards (what the peer_rows exchange runs): a table cut into shards
//    (equal, or uneven with an empty one), each in its own buffer, must give the reference lookup
//    of the whole table bit for bit, count the same bad ids, and write zeros for ids no shard holds;
//  - the bad-id slots: repeated lookups each store their own count (no reset between them), over
//    grids of one block and of thousands, and leave their scratch zero.
// test_lookup_split_cuda runs the same with launches of at most two blocks (TPEMBED_TEST_SPLIT_LAUNCHES),
// so that the larger lookups take hundreds of launches: the rows and the counts must not change.
#include <gtest/gtest.h>

#include <memory>
#include <sstream>

#include "device_tables.hpp"
#include "on_gpu.hpp"
#include "reference.hpp"
#if defined(TPEMBED_TEST_SPLIT_LAUNCHES)
#include "cuda/lookup_testing.hpp"
#endif

namespace tpembed::testing {
namespace {

#if defined(TPEMBED_TEST_SPLIT_LAUNCHES)
class SplitLaunches : public ::testing::Environment {
 public:
  void SetUp() override { cuda_kernels::set_max_launch_blocks_for_testing(2); }
  void TearDown() override { cuda_kernels::set_max_launch_blocks_for_testing(0); }
};
[[maybe_unused]] ::testing::Environment* const split_launches = ::testing::AddGlobalTestEnvironment(new SplitLaunches);
#endif

struct ShardCase {
  DType table;
  DType id;
  DType out;
  std::optional<DType> scale;
  std::int64_t vocab;
  std::int64_t hidden;
  std::vector<std::int64_t> sizes;  ///< rows of each shard, back to back
  bool equal;                       ///< pass shard_rows (owner = id / rows) instead of searching
};

std::string shard_case_name(const ::testing::TestParamInfo<ShardCase>& info) {
  const ShardCase& c = info.param;
  std::ostringstream name;
  name << dtype_name(c.table) << "_" << dtype_name(c.id) << "_to_" << dtype_name(c.out) << "_V" << c.vocab << "_H"
       << c.hidden << "_shards" << c.sizes.size() << (c.equal ? "_equal" : "_searched") << "_" << info.index;
  return name.str();
}

// Memory for the shard pieces and the shard list, on the host or the GPU.
struct Placed {
  std::vector<std::shared_ptr<DeviceBuffer>> buffers;
  std::vector<HostTable> host;
  const void* put(const HostTable& table) {
    if (kOnGpu) {
      const DeviceCopy copy = upload(table);
      buffers.push_back(copy.buffer);
      return copy.view.data;
    }
    host.push_back(table);
    return host.back().bytes.data();
  }
};

class LookupShards : public ::testing::TestWithParam<ShardCase> {};

TEST_P(LookupShards, MatchReferenceOfWholeTable) {
  const ShardCase& c = GetParam();
  const Problem problem = random_problem(c.table, c.vocab, c.hidden, c.scale, 0, 77);
  Placed placed;
  placed.host.reserve(2 * c.sizes.size() + 1);  // pointers into `host` stay valid
  std::vector<LookupShard> shards;
  std::vector<std::int64_t> boundaries;
  std::int64_t offset = 0;
  for (std::int64_t rows : c.sizes) {
    LookupShard shard;
    shard.row_offset = offset;
    shard.rows = rows;
    // Every shard gets a buffer (an empty shard a row's worth, never read).
    shard.table = placed.put(problem.table.slice_rows(offset, std::max<std::int64_t>(rows, 1)));
    if (problem.scale) shard.scale = placed.put(problem.scale->slice_rows(offset, std::max<std::int64_t>(rows, 1)));
    shards.push_back(shard);
    boundaries.push_back(offset);
    offset += rows;
  }
  const auto ids = interesting_ids(c.vocab, 0, boundaries, 200, 5);
  const auto id_bytes = encode_ids(ids, c.id);
  const auto count = static_cast<std::int64_t>(ids.size());
  // Ids past the shards' last row (an equal split's zero padding) are in range but held by none.
  const std::int64_t valid = c.vocab;
  const std::int64_t held = offset;
  const auto expected = reference_lookup(problem, ids, c.out, std::min(valid, held));
  std::uint64_t expected_bad = 0;
  for (auto id : ids) expected_bad += (id < 0 || id >= valid) ? 1 : 0;

  LookupParams p;
  p.table_dtype = c.table;
  p.cols = c.hidden;
  p.table_row_bytes = row_bytes(c.table, c.hidden);
  p.scale_dtype = c.scale.value_or(DType::f32);
  p.valid_ids = valid;
  p.id_dtype = c.id;
  p.num_ids = count;
  p.out_dtype = c.out;
  p.out_row_stride = c.hidden;
  p.num_shards = static_cast<std::int32_t>(shards.size());
  p.shards_alignment = 16;  // buffers of their own
  p.shard_rows = c.equal ? c.sizes[0] : 0;
  const std::size_t out_bytes = static_cast<std::size_t>(count * row_bytes(c.out, c.hidden));
  std::vector<std::uint8_t> actual(out_bytes, 0xcd);
  unsigned long long bad = 0;
  if (kOnGpu) {
    DeviceBuffer list(shards.size() * sizeof(LookupShard), 0), out(out_bytes + 1, 0), counter(sizeof bad, 0);
    list.copy_from_host(shards.data(), shards.size() * sizeof(LookupShard));
    cuda_fill(out.data(), 0xcd, out.size());  // poison: unwritten elements show
    cuda_fill(counter.data(), 0, sizeof bad);
    const DeviceCopy device_ids = upload_bytes(id_bytes, c.id, {count});
    p.shards = static_cast<const LookupShard*>(list.data());
    p.ids = device_ids.view.data;
    p.out = out.data();
    p.bad_id_count = static_cast<unsigned long long*>(counter.data());
    cuda_check(lookup_cuda(p, nullptr), "lookup_cuda");
    actual = download(out.data(), out_bytes);
    counter.copy_to_host(&bad, sizeof bad);
  } else {
    p.shards = shards.data();
    p.ids = id_bytes.data();
    p.out = actual.data();
    p.bad_id_count = &bad;
    lookup_cpu(p);
  }
  EXPECT_EQ(actual, expected) << first_difference(actual, expected, c.out, c.hidden);
  EXPECT_EQ(bad, expected_bad);
}

std::vector<ShardCase> shard_cases() {
  std::vector<ShardCase> cases;
  // Equal shards (the last one zero-padded past V), owner computed by division.
  cases.push_back({DType::f32, DType::i64, DType::f32, std::nullopt, 733, 128, {184, 184, 184, 184}, true});
  cases.push_back({DType::bf16, DType::i32, DType::bf16, std::nullopt, 127, 512, {64, 64}, true});
  cases.push_back({DType::i8, DType::i64, DType::bf16, DType::f32, 733, 256, {92, 92, 92, 92, 92, 92, 92, 92}, true});
  // Uneven shards, an empty one among them, owner searched for.
  cases.push_back({DType::f16, DType::i64, DType::f32, DType::bf16, 733, 96, {0, 100, 33, 600}, false});
  cases.push_back({DType::fp8_e4m3, DType::i32, DType::f16, DType::f16, 127, 64, {7, 0, 120}, false});
  cases.push_back({DType::i4, DType::i64, DType::bf16, DType::bf16, 733, 512, {300, 433}, false});
  // Shards that stop short of V: ids past them are in range but held by no shard (zero rows).
  cases.push_back({DType::f32, DType::i64, DType::f32, std::nullopt, 733, 64, {100, 33, 500}, false});
  // Odd widths: the element-wise path.
  cases.push_back({DType::i4, DType::i32, DType::f32, DType::f32, 31, 7, {10, 10, 11}, false});
  cases.push_back({DType::bf16, DType::i64, DType::bf16, std::nullopt, 31, 3, {8, 8, 8, 8}, true});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Matrix, LookupShards, ::testing::ValuesIn(shard_cases()), shard_case_name);

// Lookups of `count` ids, every `every`-th of them bad, one after another on the same slots.
TEST(BadIdSlots, EachLookupStoresItsOwnCount) {
  const std::int64_t vocab = 50;
  struct Round {
    std::int64_t count, every, hidden;
  };
  // Vector path with one block and with thousands; an empty lookup (nothing launched, the count
  // still becomes 0); the element-wise path (odd width); no bad id.
  const Round rounds[] = {{3, 2, 64},    {100000, 7, 64}, {0, 1, 64},     {5000, 3, 7},
                          {64, 1000, 64}, {1, 1, 8},      {200000, 1, 8}};
  std::unique_ptr<DeviceBuffer> device_slots;
  unsigned long long host_slots[3] = {0, 0, 0};
  if (kOnGpu) {
    device_slots = std::make_unique<DeviceBuffer>(sizeof host_slots, 0);
    cuda_fill(device_slots->data(), 0, sizeof host_slots);
  }
  for (const Round& round : rounds) {
    SCOPED_TRACE("count " + std::to_string(round.count) + ", hidden " + std::to_string(round.hidden));
    const HostTable table = random_table(DType::f32, vocab, round.hidden, 3);
    std::vector<std::int64_t> ids(static_cast<std::size_t>(round.count));
    unsigned long long expected = 0;
    for (std::int64_t i = 0; i < round.count; ++i) {
      const bool bad = i % round.every == 0;
      ids[static_cast<std::size_t>(i)] = bad ? (i % 2 == 0 ? -1 - i : vocab + i) : i % vocab;
      expected += bad ? 1 : 0;
    }
    LookupParams p;
    p.table_dtype = DType::f32;
    p.table_rows = vocab;
    p.cols = round.hidden;
    p.table_row_bytes = row_bytes(DType::f32, round.hidden);
    p.valid_ids = vocab;
    p.id_dtype = DType::i64;
    p.num_ids = round.count;
    p.out_dtype = DType::f32;
    p.out_row_stride = round.hidden;
    const std::size_t out_bytes = static_cast<std::size_t>(round.count * p.table_row_bytes);
    if (kOnGpu) {
      const DeviceCopy device_table = upload(table);
      const DeviceCopy device_ids = upload_bytes(encode_ids(ids, DType::i64), DType::i64, {round.count});
      DeviceBuffer out(out_bytes, 0);
      p.table = device_table.view.data;
      p.ids = device_ids.view.data;
      p.out = out.data();
      p.bad_id_slots = static_cast<unsigned long long*>(device_slots->data());
      cuda_check(lookup_cuda(p, nullptr), "lookup_cuda");
      device_slots->copy_to_host(host_slots, sizeof host_slots);
      // The rows too, against the CPU backend (test_lookup_split_cuda runs this with launches of
      // two blocks, so that the larger rounds take hundreds of launches).
      std::vector<std::uint8_t> got(out_bytes), expected_rows(out_bytes);
      if (out_bytes != 0) out.copy_to_host(got.data(), out_bytes);
      LookupParams host = p;
      unsigned long long host_count = 0;
      host.table = table.bytes.data();
      host.ids = ids.data();
      host.out = expected_rows.data();
      host.bad_id_slots = nullptr;
      host.bad_id_count = &host_count;
      lookup_cpu(host);
      EXPECT_EQ(host_count, expected);
      EXPECT_TRUE(got == expected_rows) << "GPU rows differ from the CPU backend's";
    } else {
      std::vector<std::uint8_t> out(out_bytes);
      p.table = table.bytes.data();
      p.ids = ids.data();
      p.out = out.data();
      p.bad_id_slots = host_slots;
      lookup_cpu(p);
    }
    EXPECT_EQ(host_slots[0], expected);
    EXPECT_EQ(host_slots[1], 0u) << "scratch left behind";
    EXPECT_EQ(host_slots[2], 0u) << "finished-block count left behind";
  }
}

}  // namespace
}  // namespace tpembed::testing

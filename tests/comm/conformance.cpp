// The Communicator conformance suite, part 1: identity, all_reduce_sum, all_gather, argument
// checks and barrier. Expected values are computed on the host from the same formulas each rank
// uses for its contribution. Output buffers carry guard bytes that must survive every call.
#include "conformance.hpp"

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <typeinfo>
#include <vector>

#include "comm_test_util.hpp"
#include "tpembed/numeric.hpp"

namespace tpembed::comm_test {

void CommConformance::SetUp() {
  comm = GetParam().make();
  ASSERT_NE(comm, nullptr);
}

std::string engine_test_name(const ::testing::TestParamInfo<CommEngine>& info) {
  return info.param.name;
}

namespace {

const std::int64_t kCounts[] = {1, 3, 7, 733, (std::int64_t{1} << 20) + 3};

void check_all_reduce(Communicator& comm, DType dtype, std::int64_t count, bool in_place) {
  SCOPED_TRACE(describe(dtype, count, in_place));
  const std::int64_t element = static_cast<std::int64_t>(element_size(dtype));
  const std::int64_t bytes = count * element;
  std::vector<std::uint8_t> send(bytes), expected(bytes);
  for (std::int64_t i = 0; i < count; ++i) {
    put_contribution(dtype, comm.rank(), i, &send[i * element]);
    put_sum(dtype, comm.size(), i, &expected[i * element]);
  }
  GuardedBuffer recv(bytes, kSentinel);
  if (in_place) {
    std::memcpy(recv.data(), send.data(), bytes);
    comm.all_reduce_sum(recv.data(), recv.data(), count, dtype);
  } else {
    const std::vector<std::uint8_t> send_before = send;
    comm.all_reduce_sum(send.data(), recv.data(), count, dtype);
    EXPECT_EQ(first_difference(send.data(), send_before.data(), bytes, element), -1)
        << "the send buffer changed";
  }
  EXPECT_EQ(first_difference(recv.data(), expected.data(), bytes, element), -1);
  EXPECT_TRUE(recv.guard_intact());
}

// Rank r's byte j of an all-gather block.
std::uint8_t gather_byte(int rank, std::int64_t j) {
  return static_cast<std::uint8_t>((j * 31 + rank * 101 + 17) % 251);
}

void check_all_gather(Communicator& comm, DType dtype, std::int64_t count, bool in_place) {
  SCOPED_TRACE(describe(dtype, count, in_place));
  const std::int64_t element = static_cast<std::int64_t>(element_size(dtype));
  const std::int64_t block = count * element;
  const int size = comm.size(), rank = comm.rank();
  std::vector<std::uint8_t> mine(block), expected(block * size);
  for (std::int64_t j = 0; j < block; ++j) mine[j] = gather_byte(rank, j);
  for (int r = 0; r < size; ++r) {
    for (std::int64_t j = 0; j < block; ++j) expected[r * block + j] = gather_byte(r, j);
  }
  GuardedBuffer recv(block * size, kSentinel);
  if (in_place) {
    std::uint8_t* own = recv.data() + rank * block;
    std::memcpy(own, mine.data(), block);
    comm.all_gather(own, recv.data(), count, dtype);
  } else {
    comm.all_gather(mine.data(), recv.data(), count, dtype);
  }
  EXPECT_EQ(first_difference(recv.data(), expected.data(), block * size, block), -1)
      << "(index is the first wrong rank block)";
  EXPECT_TRUE(recv.guard_intact());
}

}  // namespace

TEST_P(CommConformance, RankAndSizeAreConsistentAcrossRanks) {
  EXPECT_EQ(comm->engine(), GetParam().name);
  ASSERT_GE(comm->size(), 1);
  EXPECT_GE(comm->rank(), 0);
  EXPECT_LT(comm->rank(), comm->size());
  const std::int32_t mine[2] = {comm->rank(), comm->size()};
  std::vector<std::int32_t> all(2 * comm->size(), -7);
  comm->all_gather(mine, all.data(), 2, DType::i32);
  for (int r = 0; r < comm->size(); ++r) {
    EXPECT_EQ(all[2 * r], r) << "block " << r << " holds another rank's rank";
    EXPECT_EQ(all[2 * r + 1], comm->size()) << "ranks disagree on the size";
  }
}

TEST_P(CommConformance, AllReduceSumIsExactForEveryDtypeAndOddCount) {
  for (DType dtype : kSummable) {
    for (std::int64_t count : kCounts) {
      check_all_reduce(*comm, dtype, count, /*in_place=*/false);
      check_all_reduce(*comm, dtype, count, /*in_place=*/true);
    }
  }
}

// A vocab-parallel lookup sums the owner's row with zeros from every other rank: that must give
// the owner's bits back, for every value a table can hold. The one exception IEEE allows is -0,
// which plus +0 is +0 (equal, not bit-equal); NaN stays NaN.
TEST_P(CommConformance, AddingZerosFromOtherRanksKeepsEveryValue) {
  const int size = comm->size(), rank = comm->rank();
  for (DType dtype : {DType::f16, DType::bf16, DType::f32}) {
    std::vector<std::uint32_t> patterns;
    if (dtype == DType::f32) {
      patterns = {0x00000001u, 0x007fffffu, 0x00800000u, 0x7f7fffffu, 0x7f800000u,
                  0xff800000u, 0x80000001u, 0x3f800001u, 0x80000000u, 0x7fc00000u};
      for (std::uint32_t i = 0; i < (1u << 18); ++i) patterns.push_back(i * 0x9e3779b1u);
    } else {
      for (std::uint32_t bits = 0; bits < 0x10000u; ++bits) patterns.push_back(bits);
    }
    SCOPED_TRACE(dtype_name(dtype));
    const std::int64_t count = static_cast<std::int64_t>(patterns.size());
    const std::int64_t element = static_cast<std::int64_t>(element_size(dtype));
    // Element i is owned by rank i % size (like vocab rows); the others contribute +0.
    std::vector<std::uint8_t> values(count * element, 0);
    for (std::int64_t i = 0; i < count; ++i) {
      if (i % size == rank) store_bits(dtype, patterns[i], &values[i * element]);
    }
    comm->all_reduce_sum(values.data(), values.data(), count, dtype);
    std::int64_t wrong = 0;
    for (std::int64_t i = 0; i < count; ++i) {
      const std::uint32_t got = load_bits(dtype, &values[i * element]);
      const float want_value = bits_to_float(dtype, patterns[i]);
      const float got_value = bits_to_float(dtype, got);
      const bool negative_zero = want_value == 0.0f && std::signbit(want_value);
      const bool ok = std::isnan(want_value) ? std::isnan(got_value)
                      : negative_zero        ? got_value == 0.0f
                                             : got == patterns[i];
      if (!ok && wrong++ < 5) {
        ADD_FAILURE() << "pattern 0x" << std::hex << patterns[i] << " came back as 0x" << got;
      }
    }
    EXPECT_EQ(wrong, 0);
  }
}

// With two nonzero contributions (ranks 0 and 1) the f16/bf16 sum is deterministic whatever the
// reduction order: the f32 sum rounded once to the narrow type, ties to even, overflow to Inf.
TEST_P(CommConformance, NarrowFloatSumRoundsLikeTheHost) {
  if (comm->size() < 2) GTEST_SKIP() << "needs two ranks";
  const std::int64_t count = 20011;
  for (DType dtype : {DType::f16, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dtype));
    const NarrowPairs pairs = narrow_pairs(dtype, count);
    std::vector<std::uint16_t> values = pairs.contribution(comm->rank());
    comm->all_reduce_sum(values.data(), values.data(), count, dtype);
    EXPECT_EQ(count_wrong_sums(dtype, values.data(), pairs.sum.data(), count), 0);
  }
}

TEST_P(CommConformance, AllGatherPlacesEveryRanksBlock) {
  for (DType dtype : {DType::i8, DType::f16, DType::f32, DType::i64}) {
    for (std::int64_t count : kCounts) {
      check_all_gather(*comm, dtype, count, /*in_place=*/false);
      check_all_gather(*comm, dtype, count, /*in_place=*/true);
    }
  }
}

TEST_P(CommConformance, AllGatherVPlacesUnevenBlocks) {
  // Rank r sends (r * 37 + 5) % 11 bytes, each byte naming its rank; rank 1 sends nothing. Once
  // from a separate send buffer, once in place (the send block already in its place in recv).
  const int ranks = comm->size();
  std::vector<std::int64_t> counts(static_cast<std::size_t>(ranks));
  for (int r = 0; r < ranks; ++r) counts[static_cast<std::size_t>(r)] = r == 1 ? 0 : (r * 37 + 5) % 11;
  std::int64_t total = 0, displacement = 0;
  for (int r = 0; r < ranks; ++r) {
    if (r == comm->rank()) displacement = total;
    total += counts[static_cast<std::size_t>(r)];
  }
  const std::int64_t mine = counts[static_cast<std::size_t>(comm->rank())];
  std::vector<std::uint8_t> send(static_cast<std::size_t>(mine));
  for (std::int64_t i = 0; i < mine; ++i) send[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(comm->rank() * 16 + i);
  std::vector<std::uint8_t> recv;
  for (bool in_place : {false, true}) {
    recv.assign(static_cast<std::size_t>(total) + 8, 0xee);
    const void* from = send.data();
    if (in_place) {
      std::copy(send.begin(), send.end(), recv.begin() + displacement);
      from = recv.data() + displacement;
    }
    comm->all_gather_v(from, recv.data(), counts);
    std::int64_t at = 0;
    for (int r = 0; r < ranks; ++r) {
      for (std::int64_t i = 0; i < counts[static_cast<std::size_t>(r)]; ++i, ++at) {
        ASSERT_EQ(recv[static_cast<std::size_t>(at)], static_cast<std::uint8_t>(r * 16 + i))
            << "rank " << r << " byte " << i << (in_place ? " (in place)" : "");
      }
    }
    for (std::size_t g = static_cast<std::size_t>(total); g < recv.size(); ++g) ASSERT_EQ(recv[g], 0xee) << "wrote past the end";
  }
  expect_error<InvalidArgumentError>([&] { comm->all_gather_v(send.data(), recv.data(), {}); },
                                     "counts for a communicator of");
  std::vector<std::int64_t> negative(static_cast<std::size_t>(ranks), 1);
  negative[0] = -4;
  expect_error<InvalidArgumentError>(
      [&] { comm->all_gather_v(send.data(), recv.data(), negative); },
      "all_gather_v: count -4 for rank 0 is negative");
  std::vector<std::int64_t> ones(static_cast<std::size_t>(ranks), 1);
  expect_error<InvalidArgumentError>([&] { comm->all_gather_v(send.data(), nullptr, ones); },
                                     "null receive buffer");
  expect_error<InvalidArgumentError>([&] { comm->all_gather_v(nullptr, recv.data(), ones); },
                                     "null send buffer for 1 bytes");
}

TEST_P(CommConformance, ZeroCountCollectivesTouchNothing) {
  EXPECT_NO_THROW(comm->all_reduce_sum(nullptr, nullptr, 0, DType::f32));
  EXPECT_NO_THROW(comm->all_gather(nullptr, nullptr, 0, DType::i64));
  GuardedBuffer recv(0, kSentinel);
  const float send = 1.5f;
  comm->all_reduce_sum(&send, recv.data(), 0, DType::f32);
  EXPECT_TRUE(recv.guard_intact()) << "all_reduce_sum with count 0 wrote";
  comm->all_gather(&send, recv.data(), 0, DType::f32);
  EXPECT_TRUE(recv.guard_intact()) << "all_gather with count 0 wrote";
  // The communicator still works afterwards (no rank is left inside a collective).
  std::int32_t one = 1;
  comm->all_reduce_sum(&one, &one, 1, DType::i32);
  EXPECT_EQ(one, comm->size());
}

TEST_P(CommConformance, BadArgumentsThrowInvalidArgument) {
  float buffer[4] = {};
  expect_error<InvalidArgumentError>([&] { comm->all_reduce_sum(buffer, buffer, -1, DType::f32); },
                                     "all_reduce_sum: count -1 is negative");
  expect_error<InvalidArgumentError>([&] { comm->all_gather(buffer, buffer, -3, DType::f32); },
                                     "all_gather: count -3 is negative");
  expect_error<InvalidArgumentError>([&] { comm->all_reduce_sum(nullptr, buffer, 2, DType::f32); },
                                     "null buffer with count 2");
  expect_error<InvalidArgumentError>([&] { comm->all_reduce_sum(buffer, nullptr, 2, DType::f32); },
                                     "null buffer with count 2");
  expect_error<InvalidArgumentError>([&] { comm->all_gather(nullptr, buffer, 1, DType::i8); },
                                     "all_gather: null buffer with count 1");
  expect_error<InvalidArgumentError>([&] { comm->all_reduce_sum(buffer, buffer, 4, DType::i8); },
                                     "cannot sum i8");
  expect_error<InvalidArgumentError>(
      [&] { comm->all_reduce_sum(buffer, buffer, 4, DType::fp8_e4m3); }, "cannot sum fp8_e4m3");
  expect_error<InvalidArgumentError>([&] { comm->all_reduce_sum(buffer, buffer, 4, DType::i4); },
                                     "i4 has no whole elements");
  expect_error<InvalidArgumentError>([&] { comm->all_gather(buffer, buffer, 4, DType::i4); },
                                     "all_gather: i4 has no whole elements");
}

// Every rank leaves the barrier after the last one entered it (ranks enter at staggered times).
// Timestamps come from the monotonic clock, which all processes of one host share.
TEST_P(CommConformance, BarrierWaitsForTheLastRank) {
  using Clock = std::chrono::steady_clock;
  auto now_ns = [] {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
        .count();
  };
  std::this_thread::sleep_for(std::chrono::milliseconds(30 * comm->rank()));
  const std::int64_t entered = now_ns();
  comm->barrier();
  const std::int64_t left = now_ns();
  std::int64_t mine[2] = {entered, left};
  std::vector<std::int64_t> all(2 * comm->size());
  comm->all_gather(mine, all.data(), 2, DType::i64);
  std::int64_t last_entry = all[0];
  for (int r = 0; r < comm->size(); ++r) last_entry = std::max(last_entry, all[2 * r]);
  for (int r = 0; r < comm->size(); ++r) {
    EXPECT_GE(all[2 * r + 1], last_entry) << "rank " << r << " left the barrier early";
  }
}

}  // namespace tpembed::comm_test

// The Communicator conformance suite, part 3: reduce_scatter_sum and all_to_all_v (the collectives
// of the scattered layouts). Every rank computes what every other rank sends with the same
// formulas, so it knows the exact result of its own block; outputs carry guard bytes.
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "comm_test_util.hpp"
#include "conformance.hpp"

namespace tpembed::comm_test {

namespace {

// torch.tensor_split's rule: rank r of `ranks` gets rows / ranks rows, one more for the first
// rows % ranks ranks.
std::int64_t chunk_rows(std::int64_t rows, int ranks, int rank) {
  return rows / ranks + (rank < rows % ranks ? 1 : 0);
}

// The scattered layout of `rows` rows of `hidden` elements, in elements per rank.
std::vector<std::int64_t> split_counts(std::int64_t rows, std::int64_t hidden, int ranks) {
  std::vector<std::int64_t> counts;
  for (int r = 0; r < ranks; ++r) counts.push_back(chunk_rows(rows, ranks, r) * hidden);
  return counts;
}

std::string describe_counts(const std::vector<std::int64_t>& counts) {
  std::string text = "counts";
  for (std::int64_t count : counts) text += " " + std::to_string(count);
  return text;
}

std::int64_t block_start(const std::vector<std::int64_t>& counts, int rank) {
  return std::accumulate(counts.begin(), counts.begin() + rank, std::int64_t{0});
}

// The layouts a reduce-scatter is checked on, for `ranks` ranks.
std::vector<std::vector<std::int64_t>> reduce_scatter_layouts(int ranks) {
  std::vector<std::vector<std::int64_t>> layouts = {
      split_counts(1, 1, ranks),          // fewer rows than ranks: empty blocks past rank 0
      split_counts(1, 5, ranks),          //
      split_counts(3, 7, ranks),          //
      split_counts(7, 1, ranks),          //
      split_counts(733, 3, ranks),        // uneven blocks
      split_counts(5 * ranks, 4, ranks),  // equal blocks
      split_counts((std::int64_t{1} << 17) + 3, 1, ranks),  // over 256 KiB in every dtype
  };
  std::vector<std::int64_t> hole(ranks), last_only(ranks, 0);
  for (int r = 0; r < ranks; ++r) hole[r] = r == 1 ? 0 : 2 * r + 3;  // rank 1's block is empty
  last_only.back() = 11;
  layouts.push_back(hole);
  layouts.push_back(last_only);
  return layouts;
}

void check_reduce_scatter(Communicator& comm, DType dtype, const std::vector<std::int64_t>& counts,
                          bool in_place) {
  SCOPED_TRACE(std::string(dtype_name(dtype)) + (in_place ? " in place, " : " out of place, ") +
               describe_counts(counts));
  const int rank = comm.rank();
  const std::int64_t element = static_cast<std::int64_t>(element_size(dtype));
  const std::int64_t total = block_start(counts, comm.size());
  const std::int64_t start = block_start(counts, rank), mine = counts[rank];
  GuardedBuffer send(total * element, kSentinel);
  for (std::int64_t i = 0; i < total; ++i)
    put_contribution(dtype, rank, i, send.data() + i * element);
  const std::vector<std::uint8_t> send_before(send.data(), send.data() + total * element);
  std::vector<std::uint8_t> expected(mine * element);
  for (std::int64_t i = 0; i < mine; ++i)
    put_sum(dtype, comm.size(), start + i, &expected[i * element]);

  GuardedBuffer recv(mine * element, kSentinel);
  std::uint8_t* block = in_place ? send.data() + start * element : recv.data();
  comm.reduce_scatter_sum(send.data(), block, counts, dtype);
  EXPECT_EQ(first_difference(block, expected.data(), mine * element, element), -1)
      << "(index is the first wrong element)";
  // Only the block is written: the rest of send keeps its bytes, and so do the guards.
  std::vector<std::uint8_t> send_after(send.data(), send.data() + total * element);
  if (in_place)
    std::memcpy(send_after.data() + start * element, send_before.data() + start * element,
                mine * element);
  EXPECT_EQ(first_difference(send_after.data(), send_before.data(), total * element, element), -1)
      << "the send buffer changed outside this rank's block";
  EXPECT_TRUE(send.guard_intact());
  EXPECT_TRUE(recv.guard_intact());
}

// Bytes rank `from` sends rank `to` in exchange pattern `pattern`, and its byte j.
std::int64_t exchanged_bytes(int pattern, int from, int to) {
  switch (pattern) {
    case 0:  // uneven, with empty blocks
      return (from + 2 * to) % 5 == 0 ? 0 : (from * 7 + to * 3 + 1) % 13;
    case 1:  // every block over the 256 KiB of the engines' own buffers put together
      return 140000 + 1000 * from + 37 * to;
    case 2:  // rank 1 neither sends nor receives anything
      return from == 1 || to == 1 ? 0 : 3 + from + 2 * to;
    case 3:  // everyone sends to rank 0 only (a gather)
      return to == 0 ? 5 + from : 0;
    default:  // rank 0 sends to everyone, nobody else sends (a scatter)
      return from == 0 ? 9 + 4 * to : 0;
  }
}
constexpr int kExchangePatterns = 5;
std::uint8_t exchanged_byte(int from, int to, std::int64_t j) {
  return static_cast<std::uint8_t>((from * 31 + to * 17 + j * 7 + 3) % 251);
}

void check_all_to_all(Communicator& comm, int pattern) {
  SCOPED_TRACE("pattern " + std::to_string(pattern));
  const int ranks = comm.size(), me = comm.rank();
  std::vector<std::int64_t> send_bytes(ranks), recv_bytes(ranks);
  for (int p = 0; p < ranks; ++p) {
    send_bytes[p] = exchanged_bytes(pattern, me, p);
    recv_bytes[p] = exchanged_bytes(pattern, p, me);
  }
  const std::int64_t send_total = block_start(send_bytes, ranks),
                     recv_total = block_start(recv_bytes, ranks);
  std::vector<std::uint8_t> send(send_total), expected(recv_total);
  for (int p = 0, at = 0; p < ranks; ++p) {
    for (std::int64_t j = 0; j < send_bytes[p]; ++j) send[at++] = exchanged_byte(me, p, j);
  }
  for (int p = 0, at = 0; p < ranks; ++p) {
    for (std::int64_t j = 0; j < recv_bytes[p]; ++j) expected[at++] = exchanged_byte(p, me, j);
  }
  const std::vector<std::uint8_t> send_before = send;
  GuardedBuffer recv(recv_total, kSentinel);
  // A rank with nothing to send or receive passes null buffers.
  comm.all_to_all_v(send_total > 0 ? send.data() : nullptr, send_bytes,
                    recv_total > 0 ? recv.data() : nullptr, recv_bytes);
  EXPECT_EQ(first_difference(recv.data(), expected.data(), recv_total, 1), -1)
      << "(index is the first wrong byte)";
  EXPECT_TRUE(recv.guard_intact());
  EXPECT_EQ(send, send_before) << "the send buffer changed";
}

// One small sum, to show that a communicator still works after a refusal.
void expect_still_works(Communicator& comm) {
  std::int32_t one = 1;
  comm.all_reduce_sum(&one, &one, 1, DType::i32);
  EXPECT_EQ(one, comm.size());
}

}  // namespace

TEST_P(CommConformance, ReduceScatterSumGivesEachRankItsBlockForEveryDtypeAndLayout) {
  for (const std::vector<std::int64_t>& counts : reduce_scatter_layouts(comm->size())) {
    for (DType dtype : kSummable) {
      check_reduce_scatter(*comm, dtype, counts, /*in_place=*/false);
      check_reduce_scatter(*comm, dtype, counts, /*in_place=*/true);
    }
  }
}

// Worked by hand: 10 rows of one i64 and one f32 element; rank r sends 100 * r + i at position i,
// so position i sums to 100 * (0 + 1 + ... + (size - 1)) + size * i.
TEST_P(CommConformance, ReduceScatterSumOfAClosedForm) {
  const int ranks = comm->size(), me = comm->rank();
  const std::vector<std::int64_t> counts = split_counts(10, 1, ranks);
  const std::int64_t start = block_start(counts, me);
  std::vector<std::int64_t> integers(10);
  std::vector<float> reals(10);
  for (int i = 0; i < 10; ++i) {
    integers[i] = 100 * me + i;
    reals[i] = static_cast<float>(100 * me + i);
  }
  std::vector<std::int64_t> integer_block(counts[me], -1);
  std::vector<float> real_block(counts[me], -1.0f);
  comm->reduce_scatter_sum(integers.data(), integer_block.data(), counts, DType::i64);
  comm->reduce_scatter_sum(reals.data(), real_block.data(), counts, DType::f32);
  const std::int64_t base = 100 * ranks * (ranks - 1) / 2;
  for (std::int64_t i = 0; i < counts[me]; ++i) {
    EXPECT_EQ(integer_block[i], base + ranks * (start + i)) << "position " << start + i;
    EXPECT_EQ(real_block[i], static_cast<float>(base + ranks * (start + i)))
        << "position " << start + i;
  }
}

// As NarrowFloatSumRoundsLikeTheHost: two nonzero contributions, the f32 sum rounded once.
TEST_P(CommConformance, ReduceScatterNarrowFloatSumRoundsLikeTheHost) {
  if (comm->size() < 2) GTEST_SKIP() << "needs two ranks";
  const std::int64_t count = 20011;
  const std::vector<std::int64_t> counts = split_counts(count, 1, comm->size());
  const std::int64_t start = block_start(counts, comm->rank()), mine = counts[comm->rank()];
  for (DType dtype : {DType::f16, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dtype));
    const NarrowPairs pairs = narrow_pairs(dtype, count);
    const std::vector<std::uint16_t> values = pairs.contribution(comm->rank());
    std::vector<std::uint16_t> block(mine);
    comm->reduce_scatter_sum(values.data(), block.data(), counts, dtype);
    EXPECT_EQ(count_wrong_sums(dtype, block.data(), pairs.sum.data() + start, mine), 0);
  }
}

TEST_P(CommConformance, ReduceScatterSumOfNothingTouchesNothing) {
  const std::vector<std::int64_t> zeros(comm->size(), 0);
  EXPECT_NO_THROW(comm->reduce_scatter_sum(nullptr, nullptr, zeros, DType::f32));
  GuardedBuffer recv(0, kSentinel);
  const float send = 1.5f;
  comm->reduce_scatter_sum(&send, recv.data(), zeros, DType::bf16);
  EXPECT_TRUE(recv.guard_intact());
  expect_still_works(*comm);
}

TEST_P(CommConformance, ReduceScatterSumRefusesBadArguments) {
  const int ranks = comm->size(), me = comm->rank();
  std::vector<float> buffer(4 * ranks + 4, 0.0f);
  const std::vector<std::int64_t> fours(ranks, 4);
  float* own = buffer.data() + 4 * me;
  std::vector<std::int64_t> longer(ranks + 1, 1);
  expect_error<InvalidArgumentError>(
      [&] { comm->reduce_scatter_sum(buffer.data(), own, {}, DType::f32); },
      "reduce_scatter_sum: 0 counts for a communicator of " + std::to_string(ranks) + " ranks");
  expect_error<InvalidArgumentError>(
      [&] { comm->reduce_scatter_sum(buffer.data(), own, longer, DType::f32); },
      std::to_string(ranks + 1) + " counts for a communicator of");
  std::vector<std::int64_t> negative = fours;
  negative[ranks - 1] = -2;
  expect_error<InvalidArgumentError>(
      [&] { comm->reduce_scatter_sum(buffer.data(), own, negative, DType::f32); },
      "reduce_scatter_sum: count -2 for rank " + std::to_string(ranks - 1) + " is negative");
  std::vector<std::int64_t> huge(ranks, 0);
  huge[0] = std::numeric_limits<std::int64_t>::max() / 4 + 1;
  expect_error<InvalidArgumentError>(
      [&] { comm->reduce_scatter_sum(buffer.data(), own, huge, DType::f32); },
      "the counts add up to more bytes than int64 counts");
  expect_error<InvalidArgumentError>(
      [&] { comm->reduce_scatter_sum(buffer.data(), own, fours, DType::i8); },
      "reduce_scatter_sum: cannot sum i8");
  expect_error<InvalidArgumentError>(
      [&] { comm->reduce_scatter_sum(buffer.data(), own, fours, DType::fp8_e4m3); },
      "cannot sum fp8_e4m3");
  expect_error<InvalidArgumentError>(
      [&] { comm->reduce_scatter_sum(buffer.data(), own, fours, DType::i4); },
      "reduce_scatter_sum: i4 has no whole elements");
  expect_error<InvalidArgumentError>(
      [&] { comm->reduce_scatter_sum(nullptr, own, fours, DType::f32); },
      "reduce_scatter_sum: null send buffer for " + std::to_string(4 * ranks) + " elements");
  expect_error<InvalidArgumentError>(
      [&] { comm->reduce_scatter_sum(buffer.data(), nullptr, fours, DType::f32); },
      "null receive buffer for this rank's 4 elements");
  // One element past this rank's block: overlapping, but not in place.
  expect_error<InvalidArgumentError>(
      [&] { comm->reduce_scatter_sum(buffer.data(), own + 1, fours, DType::f32); },
      "recv overlaps send but is not rank " + std::to_string(me) +
          "'s block of it (in place, recv is send + " + std::to_string(4 * me) + " elements)");
  expect_still_works(*comm);
}

TEST_P(CommConformance, AllToAllVDeliversEveryBlock) {
  for (int pattern = 0; pattern < kExchangePatterns; ++pattern) check_all_to_all(*comm, pattern);
}

TEST_P(CommConformance, AllToAllVOfNothingTouchesNothing) {
  const std::vector<std::int64_t> zeros(comm->size(), 0);
  EXPECT_NO_THROW(comm->all_to_all_v(nullptr, zeros, nullptr, zeros));
  GuardedBuffer recv(0, kSentinel);
  const std::uint8_t send = 7;
  comm->all_to_all_v(&send, zeros, recv.data(), zeros);
  EXPECT_TRUE(recv.guard_intact());
  expect_still_works(*comm);
}

TEST_P(CommConformance, AllToAllVRefusesBadArguments) {
  const int ranks = comm->size(), me = comm->rank();
  const std::string rank_count = std::to_string(ranks);
  std::vector<std::uint8_t> send(3 * ranks + 8, 1), recv(3 * ranks + 8, 0);
  const std::vector<std::int64_t> threes(ranks, 3);
  const std::vector<std::int64_t> longer(ranks + 1, 3);
  expect_error<InvalidArgumentError>(
      [&] { comm->all_to_all_v(send.data(), {}, recv.data(), threes); },
      "all_to_all_v: 0 send counts for a communicator of " + rank_count + " ranks");
  expect_error<InvalidArgumentError>(
      [&] { comm->all_to_all_v(send.data(), threes, recv.data(), longer); },
      "all_to_all_v: " + std::to_string(ranks + 1) + " receive counts for a communicator of");
  std::vector<std::int64_t> negative = threes;
  negative[0] = -3;
  expect_error<InvalidArgumentError>(
      [&] { comm->all_to_all_v(send.data(), negative, recv.data(), threes); },
      "all_to_all_v: send count -3 for rank 0 is negative");
  expect_error<InvalidArgumentError>(
      [&] { comm->all_to_all_v(send.data(), threes, recv.data(), negative); },
      "all_to_all_v: receive count -3 for rank 0 is negative");
  if (ranks >= 2) {
    std::vector<std::int64_t> huge = threes;
    huge[me == 0 ? 1 : 0] = std::numeric_limits<std::int64_t>::max() - 1;
    expect_error<InvalidArgumentError>(
        [&] { comm->all_to_all_v(send.data(), huge, recv.data(), threes); },
        "the send counts add up to more bytes than int64 counts");
  }
  std::vector<std::int64_t> more_to_self = threes;
  more_to_self[me] = 4;
  const std::string self = std::to_string(me);
  expect_error<InvalidArgumentError>(
      [&] { comm->all_to_all_v(send.data(), more_to_self, recv.data(), threes); },
      "all_to_all_v: rank " + self +
          " sends itself 4 bytes but expects 3 from itself (send_bytes[" + self +
          "] must equal recv_bytes[" + self + "])");
  expect_error<InvalidArgumentError>(
      [&] { comm->all_to_all_v(nullptr, threes, recv.data(), threes); },
      "all_to_all_v: null send buffer for " + std::to_string(3 * ranks) + " bytes");
  expect_error<InvalidArgumentError>(
      [&] { comm->all_to_all_v(send.data(), threes, nullptr, threes); },
      "all_to_all_v: null receive buffer for " + std::to_string(3 * ranks) + " bytes");
  // recv starting inside send.
  expect_error<InvalidArgumentError>(
      [&] { comm->all_to_all_v(send.data(), threes, send.data() + 2, threes); },
      "overlap; the exchange has no in-place form");
  expect_still_works(*comm);
}

}  // namespace tpembed::comm_test

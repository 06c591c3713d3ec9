// The Communicator conformance suite, part 2: split() into groups (good and bad lists) and
// agree_or_throw(). Every rank computes the groups of all ranks with the same formula, so it knows
// what every other rank passed.
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <typeinfo>
#include <vector>

#include "comm_test_util.hpp"
#include "conformance.hpp"

namespace tpembed::comm_test {

namespace {

std::vector<std::int32_t> gather_one(Communicator& comm, std::int32_t value) {
  std::vector<std::int32_t> all(comm.size(), -1);
  comm.all_gather(&value, all.data(), 1, DType::i32);
  return all;
}

// Every rank's copy of `text` (up to 511 characters), so tests can check that ranks agree.
std::vector<std::string> gather_text(Communicator& comm, const std::string& text) {
  constexpr std::int64_t kLength = 512;
  std::vector<char> mine(kLength, '\0'), all(kLength * comm.size());
  std::strncpy(mine.data(), text.c_str(), kLength - 1);
  comm.all_gather(mine.data(), all.data(), kLength, DType::i8);
  std::vector<std::string> texts;
  for (int r = 0; r < comm.size(); ++r) texts.emplace_back(&all[r * kLength]);
  return texts;
}

// Checks that `sub` is the group `group` (ranks of `parent`, in group order) and that its
// collectives involve exactly its members. Groups use different counts, so cross-talk between
// groups would show as a wrong sum or a size mismatch.
void check_group(Communicator& parent, Communicator& sub, const std::vector<int>& group) {
  const int me = parent.rank();
  EXPECT_EQ(sub.engine(), parent.engine());
  EXPECT_EQ(sub.size(), static_cast<int>(group.size()));
  EXPECT_EQ(sub.rank(), std::find(group.begin(), group.end(), me) - group.begin());

  const std::vector<std::int32_t> members = gather_one(sub, me);
  EXPECT_EQ(members, std::vector<std::int32_t>(group.begin(), group.end()))
      << "rank order must follow the list";

  const std::int64_t count = 3 + 2 * *std::min_element(group.begin(), group.end());
  std::vector<std::int64_t> values(count), expected(count, 0);
  for (std::int64_t i = 0; i < count; ++i) {
    values[i] = (me + 1) * (i % 5 + 1) + (std::int64_t{me} << 33);
    for (int member : group)
      expected[i] += (member + 1) * (i % 5 + 1) + (std::int64_t{member} << 33);
  }
  sub.all_reduce_sum(values.data(), values.data(), count, DType::i64);
  EXPECT_EQ(values, expected) << "the sum must cover exactly the group's members";

  float half = 0.5f * static_cast<float>(me);
  std::vector<float> halves(sub.size(), -1.0f);
  sub.all_gather(&half, halves.data(), 1, DType::f32);
  for (std::size_t k = 0; k < group.size(); ++k) EXPECT_EQ(halves[k], 0.5f * group[k]);
}

// Consecutive pairs {0,1}, {2,3}, ...; an odd last rank is alone.
std::vector<int> pair_of(int rank, int size) {
  const int first = rank - rank % 2;
  if (first + 1 < size) return {first, first + 1};
  return {first};
}

}  // namespace

TEST_P(CommConformance, SplitIntoConsecutivePairs) {
  const std::vector<int> group = pair_of(comm->rank(), comm->size());
  auto pair = comm->split(group);
  ASSERT_NE(pair, nullptr);
  check_group(*comm, *pair, group);
  // The parent keeps working next to its child.
  EXPECT_EQ(gather_one(*comm, comm->rank()).back(), comm->size() - 1);
}

TEST_P(CommConformance, SplitInReverseOrderNumbersByListPosition) {
  std::vector<int> group(comm->size());
  for (int r = 0; r < comm->size(); ++r) group[r] = comm->size() - 1 - r;
  auto reversed = comm->split(group);
  ASSERT_NE(reversed, nullptr);
  EXPECT_EQ(reversed->rank(), comm->size() - 1 - comm->rank());
  check_group(*comm, *reversed, group);
}

TEST_P(CommConformance, SplitIntoSingletons) {
  auto alone = comm->split({comm->rank()});
  ASSERT_NE(alone, nullptr);
  EXPECT_EQ(alone->size(), 1);
  EXPECT_EQ(alone->rank(), 0);
  check_group(*comm, *alone, {comm->rank()});
}

TEST_P(CommConformance, SplitOfASplit) {
  const std::vector<int> pair = pair_of(comm->rank(), comm->size());
  auto outer = comm->split(pair);
  ASSERT_NE(outer, nullptr);
  // Inside each pair, reverse the order: ranks of `outer`, not of `comm`.
  std::vector<int> inner_group(outer->size());
  for (int r = 0; r < outer->size(); ++r) inner_group[r] = outer->size() - 1 - r;
  auto inner = outer->split(inner_group);
  ASSERT_NE(inner, nullptr);
  check_group(*outer, *inner, inner_group);
}

namespace {

struct BadSplit {
  const char* what;
  int min_size;
  std::function<std::vector<int>(int rank, int size)> group;  // what each rank passes
  std::function<std::string(int size)> fragment;              // expected in the message
};

const std::vector<BadSplit>& bad_splits() {
  static const std::vector<BadSplit> cases = {
      {"members disagree", 2,
       [](int rank, int) {
         return rank == 0 ? std::vector<int>{0, 1} : std::vector<int>{rank};
       },
       [](int) { return std::string("rank 0 passed group [0, 1] but rank 1 passed [1]"); }},
      {"group without self", 2,
       [](int rank, int size) { return std::vector<int>{(rank + 1) % size}; },
       [](int) { return std::string("rank 0 passed group [1] that does not contain itself"); }},
      {"rank past the end on the last rank", 1,
       [](int rank, int size) {
         return rank == size - 1 ? std::vector<int>{rank, size} : std::vector<int>{rank};
       },
       [](int size) {
         return detail::concat("rank ", size - 1, " passed group [", size - 1, ", ", size,
                               "] with a rank outside [0, ", size, ")");
       }},
      {"negative rank", 1,
       [](int rank, int) {
         return rank == 0 ? std::vector<int>{0, -1} : std::vector<int>{rank};
       },
       [](int size) {
         return detail::concat("rank 0 passed group [0, -1] with a rank outside [0, ", size, ")");
       }},
      {"rank named twice", 1,
       [](int rank, int) {
         return std::vector<int>{rank, rank};
       },
       [](int) { return std::string("rank 0 passed group [0, 0] that names a rank twice"); }},
      {"empty group on the last rank", 1,
       [](int rank, int size) {
         return rank == size - 1 ? std::vector<int>{} : std::vector<int>{rank};
       },
       [](int size) { return detail::concat("rank ", size - 1, " passed an empty group"); }},
  };
  return cases;
}

}  // namespace

// A bad list on any rank must give every rank the same CommunicatorError, not a hang, and leave
// the communicator usable.
TEST_P(CommConformance, BadSplitThrowsTheSameErrorOnEveryRank) {
  for (const BadSplit& bad : bad_splits()) {
    if (comm->size() < bad.min_size) continue;
    SCOPED_TRACE(bad.what);
    std::string message;
    try {
      auto unexpected = comm->split(bad.group(comm->rank(), comm->size()));
      ADD_FAILURE() << "split accepted a bad group";
    } catch (const std::exception& error) {
      EXPECT_TRUE(typeid(error) == typeid(CommunicatorError))
          << "threw " << typeid(error).name() << ": " << error.what();
      message = error.what();
    }
    EXPECT_NE(message.find(bad.fragment(comm->size())), std::string::npos)
        << "message \"" << message << "\" lacks \"" << bad.fragment(comm->size()) << "\"";
    for (const std::string& other : gather_text(*comm, message)) {
      EXPECT_EQ(other, message) << "ranks disagree on the error";
    }
  }
}

TEST_P(CommConformance, AgreeOrThrowReturnsWhenNoRankFailed) {
  EXPECT_NO_THROW(agree_or_throw(*comm, std::nullopt));
  EXPECT_EQ(gather_one(*comm, 1).size(), static_cast<std::size_t>(comm->size()));
}

// The facts ride in the same collective: every rank's, in rank order, when none failed; nothing
// written when one did. 13 bytes a rank: facts of a size that is not a multiple of 8.
TEST_P(CommConformance, AgreeOrThrowGathersFactsInTheSameCollective) {
  using Facts = std::array<char, 13>;
  const auto facts_of = [](int rank) {
    Facts facts{};
    for (std::size_t i = 0; i < facts.size(); ++i)
      facts[i] = static_cast<char>((rank * 31 + static_cast<int>(i)) % 128);
    return facts;
  };
  const Facts mine = facts_of(comm->rank());
  std::vector<Facts> all(static_cast<std::size_t>(comm->size()));
  agree_or_throw(*comm, nullptr, mine.data(), mine.size(), all.data());
  for (int r = 0; r < comm->size(); ++r)
    EXPECT_EQ(all[static_cast<std::size_t>(r)], facts_of(r)) << r;
  const int failing = comm->size() - 1;
  std::vector<Facts> untouched(static_cast<std::size_t>(comm->size()));
  expect_error<ShapeError>(
      [&] {
        agree_or_throw(
            *comm,
            comm->rank() == failing ? std::make_exception_ptr(ShapeError("no rows")) : nullptr,
            mine.data(), mine.size(), untouched.data());
      },
      detail::concat("rank ", failing, ": no rows"));
  for (const Facts& facts : untouched) EXPECT_EQ(facts, Facts{});
}

TEST_P(CommConformance, AgreeOrThrowRaisesOneRanksErrorEverywhere) {
  const int failing = comm->size() > 1 ? 1 : 0;
  const bool fails = comm->rank() == failing;
  const std::string expected = detail::concat("rank ", failing, ": shard has 5 rows, expected 6");
  // As an exception_ptr (what a catch (...) block has) and as an Error value.
  expect_error<ShapeError>(
      [&] {
        agree_or_throw(
            *comm,
            fails ? std::make_exception_ptr(ShapeError("shard has 5 rows, expected 6")) : nullptr);
      },
      expected);
  std::optional<Error> local;
  if (fails) local = ShapeError("shard has 5 rows, expected 6");
  expect_error<ShapeError>([&] { agree_or_throw(*comm, local); }, expected);
}

// An exception from outside tpembed still reaches every rank, as a BackendError.
TEST_P(CommConformance, AgreeOrThrowTurnsForeignExceptionsIntoBackendErrors) {
  const int failing = comm->size() - 1;
  std::exception_ptr local;
  if (comm->rank() == failing) local = std::make_exception_ptr(std::runtime_error("disk full"));
  expect_error<BackendError>([&] { agree_or_throw(*comm, local); },
                             detail::concat("rank ", failing, ": disk full"));
}

// Several failing ranks: the lowest one's type wins; the message lists each reason once, with the
// ranks that hit it.
TEST_P(CommConformance, AgreeOrThrowNamesEveryFailingRank) {
  const int size = comm->size();
  if (size < 2) GTEST_SKIP() << "needs two ranks";
  std::optional<Error> local;
  if (comm->rank() == 1) local = CommunicatorError("peer lost");
  if (comm->rank() >= 2) local = InvalidArgumentError("bad tp_rank");
  std::string expected = "rank 1: peer lost";
  if (size == 3) expected += "; rank 2: bad tp_rank";
  if (size > 3) {
    expected += "; ranks 2";
    for (int r = 3; r < size; ++r) expected += detail::concat(",", r);
    expected += ": bad tp_rank";
  }
  try {
    agree_or_throw(*comm, local);
    ADD_FAILURE() << "no exception";
  } catch (const std::exception& error) {
    EXPECT_TRUE(typeid(error) == typeid(CommunicatorError)) << typeid(error).name();
    EXPECT_EQ(std::string(error.what()), expected);
  }
}

TEST_P(CommConformance, AgreeOrThrowKeepsOutOfRangeDetails) {
  const int failing = comm->size() - 1;
  std::exception_ptr local;
  if (comm->rank() == failing) {
    local = std::make_exception_ptr(OutOfRangeError("id 42 at position 7", 42, 7, 3));
  }
  try {
    agree_or_throw(*comm, local);
    ADD_FAILURE() << "no exception";
  } catch (const OutOfRangeError& error) {
    EXPECT_EQ(std::string(error.what()), detail::concat("rank ", failing, ": id 42 at position 7"));
    EXPECT_EQ(error.first_bad_id(), 42);
    EXPECT_EQ(error.position(), 7);
    EXPECT_EQ(error.count(), 3);
  } catch (const std::exception& error) {
    ADD_FAILURE() << "threw " << typeid(error).name() << ": " << error.what();
  }
}

}  // namespace tpembed::comm_test

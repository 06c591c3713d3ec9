// Equal vocab shards need the same vocab_size on every rank: a rank that passes none (or another
// one) is refused at set-up on every rank, with a message that says which rank passed what — not
// the "-1" that stands for "none" inside the set-up record. Run under mpirun -np 2 and 3.
#include <gtest/gtest.h>

#include <optional>
#include <string>

#include "expect_error.hpp"
#include "tpembed/tpembed.hpp"

namespace tpembed::testing {
namespace {

Communicator& world() {
  static std::unique_ptr<Communicator> mpi = make_mpi_communicator();
  return *mpi;
}

constexpr std::int64_t kVocab = 10;

// Sets up equal vocab shards of a kVocab-row table with `vocab_size` on this rank.
void set_up(std::optional<std::int64_t> vocab_size) {
  const int tp = world().size();
  const std::int64_t rows = (kVocab + tp - 1) / tp;
  Tensor table(DType::f32, {rows, 3});
  EmbeddingConfig config;
  config.tp_size = tp;
  config.placement = ShardPlacement::equal;
  config.vocab_size = vocab_size;
  ParallelEmbedding layer(world(), EmbeddingShard::owning(std::move(table), Tensor()), config);
}

TEST(VocabSize, ARankWithoutItIsNamedOnEveryRank) {
  const int last = world().size() - 1;
  const std::string expected = "rank " + std::to_string(last) +
                               " passed no vocab_size but rank 0 passed vocab_size 10: every rank "
                               "of equal vocab shards must pass the same vocab_size";
  expect_error<ShapeError>(
      [&] { set_up(world().rank() == last ? std::nullopt : std::optional<std::int64_t>(kVocab)); },
      expected);
}

TEST(VocabSize, RankZeroWithoutItIsNamedToo) {
  expect_error<ShapeError>(
      [&] { set_up(world().rank() == 0 ? std::nullopt : std::optional<std::int64_t>(kVocab)); },
      "rank 1 passed vocab_size 10 but rank 0 passed no vocab_size");
}

TEST(VocabSize, AnotherValueIsNamed) {
  expect_error<ShapeError>(
      [&] { set_up(world().rank() == 1 ? kVocab - 1 : kVocab); },
      "rank 1 passed vocab_size 9 but rank 0 passed vocab_size 10");
}

TEST(VocabSize, TheSameOnEveryRankSetsUp) {
  EXPECT_NO_THROW(set_up(kVocab));
}

}  // namespace
}  // namespace tpembed::testing

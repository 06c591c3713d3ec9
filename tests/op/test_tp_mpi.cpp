// Tensor parallelism over real MPI ranks (run under mpirun -np 2, 3, 4): each rank holds a shard
// cut from one unsharded table, and every rank's output must equal the reference lookup of the
// whole table, bit for bit. Also: uneven shards, permuted tp ranks, groups, and errors that reach
// every rank instead of hanging.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <numeric>
#include <sstream>

#include "device_tables.hpp"
#include "reference.hpp"

// Built three times: with host tables (test_tp_mpi); with every rank's shard on the GPU, all ranks
// sharing it, collectives staged through host memory and peer_rows reading the other ranks'
// tables through CUDA IPC (test_tp_mpi_gpu); and over NCCL with one GPU per rank, bootstrapped
// through MPI (test_tp_nccl, skipped where there are fewer GPUs than ranks).
#include "on_gpu.hpp"
#ifndef TPEMBED_TEST_NCCL
#define TPEMBED_TEST_NCCL 0
#endif
#if TPEMBED_TEST_ON_GPU
#include <cuda_runtime.h>

#include "captured_graph.hpp"
#endif

namespace tpembed::testing {
namespace {

// MPI, or NCCL over MPI on the node-local rank's GPU (test_tp_nccl).
Communicator& world() {
  static std::unique_ptr<Communicator> mpi = make_mpi_communicator();
  static std::unique_ptr<Communicator> comm = [] {
    if (!TPEMBED_TEST_NCCL) return std::unique_ptr<Communicator>();
    const int device = node_local_cuda_device(*mpi);
    set_test_device(device);
    NcclOptions options;
    options.timeout_seconds = 120;  // a broken test fails instead of hanging
    return make_nccl_communicator(*mpi, device, options);
  }();
  return comm != nullptr ? *comm : *mpi;
}

struct TpCase {
  DType table;
  DType id;
  DType out;
  std::optional<DType> scale;
  int sharding_dim;
  ShardPlacement placement;
  std::int64_t vocab;
  std::int64_t hidden;
  std::int64_t padding_rows;  ///< dim 1 only (dim 0 with tp > 1 has no addressable padding)
  bool reverse_tp_ranks;      ///< tp_rank = tp - 1 - rank
  VocabExchange exchange = VocabExchange::all_reduce;  ///< dim 0: how the rows are combined
};

std::string tp_case_name(const ::testing::TestParamInfo<TpCase>& info) {
  const TpCase& c = info.param;
  std::ostringstream name;
  name << dtype_name(c.table) << "_" << dtype_name(c.id) << "_to_" << dtype_name(c.out) << "_dim"
       << c.sharding_dim << (c.placement == ShardPlacement::equal ? "_equal" : "_packed") << "_V"
       << c.vocab << "_H" << c.hidden << "_P" << c.padding_rows
       << (c.reverse_tp_ranks ? "_reversed" : "") << (c.sharding_dim == 0 ? std::string("_") + vocab_exchange_name(c.exchange) : "")
       << "_" << info.index;
  return name.str();
}

// Shard sizes along the sharded dimension: equal (ceil, zero-padded) or deliberately uneven.
std::vector<std::int64_t> shard_sizes(std::int64_t total, int tp, ShardPlacement placement) {
  std::vector<std::int64_t> sizes(tp);
  if (placement == ShardPlacement::equal) {
    std::fill(sizes.begin(), sizes.end(), (total + tp - 1) / tp);
    return sizes;
  }
  // Quadratic cut points: shards of growing size, the first possibly empty.
  std::int64_t previous = 0;
  for (int t = 0; t < tp; ++t) {
    const std::int64_t cut = total * (t + 1) * (t + 1) / (tp * tp);
    sizes[t] = cut - previous;
    previous = cut;
  }
  return sizes;
}

// This rank's shard of `problem`, as owned host tables.
struct RankShard {
  HostTable weight;
  std::optional<HostTable> scale, padding, padding_scale;
  EmbeddingShard view() const {
    EmbeddingShard shard;
    shard.weight = weight.view();
    if (scale) shard.scale = scale->view();
    if (padding) shard.padding = padding->view();
    if (padding_scale) shard.padding_scale = padding_scale->view();
    return shard;
  }
};

RankShard cut_shard(const Problem& problem, int sharding_dim, std::int64_t offset, std::int64_t size) {
  RankShard shard;
  if (sharding_dim == 0) {
    shard.weight = problem.table.slice_rows(offset, size);
    if (problem.scale) shard.scale = problem.scale->slice_rows(offset, size);
  } else {
    shard.weight = problem.table.slice_cols(offset, size);
    shard.scale = problem.scale;
    if (problem.padding) shard.padding = problem.padding->slice_cols(offset, size);
    shard.padding_scale = problem.padding_scale;
  }
  return shard;
}

// peer_rows needs every GPU of the group to read the others' memory (not so on every multi-GPU box).
bool gpus_of_the_world_reach_each_other() {
  return gpus_reach_each_other(std::min(world().size(), std::max(cuda_device_count(), 1)));
}

// Runs one tensor-parallel lookup over `group_ranks` of the world (this rank among them) and
// checks the output against the reference. Different groups may look up different ids.
void run_and_check(const TpCase& base_case, const std::vector<int>& group_ranks,
                   std::uint64_t id_seed) {
  if (base_case.exchange == VocabExchange::peer_rows && !gpus_of_the_world_reach_each_other()) {
    GTEST_SKIP() << "SKIPPED: these GPUs have no peer access to each other (peer_rows cannot run)";
  }
  const int tp = static_cast<int>(group_ranks.size());
  const int position = static_cast<int>(
      std::find(group_ranks.begin(), group_ranks.end(), world().rank()) - group_ranks.begin());
  const int tp_rank = base_case.reverse_tp_ranks ? tp - 1 - position : position;

  // Equal hidden shards need H divisible by tp (uneven H is what packed placement is for).
  TpCase c = base_case;
  if (c.sharding_dim == 1 && c.placement == ShardPlacement::equal) {
    c.hidden = std::max<std::int64_t>(tp, c.hidden - c.hidden % tp);
  }
  // Every rank builds the same whole problem from the same seed, then cuts its own shard.
  const Problem problem = random_problem(c.table, c.vocab, c.hidden, c.scale,
                                         c.sharding_dim == 1 ? c.padding_rows : 0, 4242);
  const std::int64_t total = c.sharding_dim == 0 ? c.vocab : c.hidden;
  const auto sizes = shard_sizes(total, tp, c.placement);
  std::vector<std::int64_t> offsets(tp, 0);
  for (int t = 1; t < tp; ++t) offsets[t] = offsets[t - 1] + sizes[t - 1];
  const RankShard shard = cut_shard(problem, c.sharding_dim, offsets[tp_rank], sizes[tp_rank]);

  EmbeddingConfig config;
  config.tp_size = tp;
  config.tp_group = group_ranks;
  config.sharding_dim = c.sharding_dim;
  config.tp_rank = tp_rank;
  config.placement = c.placement;
  config.vocab_exchange = c.exchange;
  if (c.sharding_dim == 0 && c.placement == ShardPlacement::equal) config.vocab_size = c.vocab;
  if (c.out != c.table || is_quantized(c.table)) config.out_dtype = c.out;
  ParallelEmbedding embedding(world(), kOnGpu ? upload_shard(shard.view()) : shard.view(), config);

  const std::int64_t padding = c.sharding_dim == 1 ? c.padding_rows : 0;
  std::vector<std::int64_t> boundaries;
  if (c.sharding_dim == 0) boundaries.assign(offsets.begin(), offsets.end());
  const auto ids = interesting_ids(c.vocab, padding, boundaries, 50, id_seed);
  const auto id_bytes = encode_ids(ids, c.id);
  const std::int64_t count = static_cast<std::int64_t>(ids.size());

  const auto expected = reference_lookup(problem, ids, c.out);
  std::vector<std::uint8_t> actual;
  if (kOnGpu) {
    const DeviceCopy device_ids = upload_bytes(id_bytes, c.id, {count});
    DeviceBuffer out(expected.size() + 16, test_device());
    cuda_fill(out.data(), 0xcd, out.size());  // poison: unwritten elements show
    embedding.forward(device_ids.view, out.view(c.out, {count, c.hidden}));
    actual = download(out.data(), expected.size());
  } else {
    const Tensor out = embedding.forward(TensorView(id_bytes.data(), c.id, {count}));
    ASSERT_EQ(out.shape(), (std::vector<std::int64_t>{count, c.hidden}));
    actual.assign(static_cast<const std::uint8_t*>(out.data()),
                  static_cast<const std::uint8_t*>(out.data()) + expected.size());
  }
  EXPECT_EQ(actual, expected) << "world rank " << world().rank() << ": "
                              << first_difference(actual, expected, c.out, c.hidden);
  std::uint64_t bad = 0;
  for (auto id : ids) bad += (id < 0 || id >= c.vocab + padding) ? 1 : 0;
  EXPECT_EQ(embedding.last_bad_id_count(), bad);
}

std::vector<int> all_ranks() {
  std::vector<int> ranks(world().size());
  std::iota(ranks.begin(), ranks.end(), 0);
  return ranks;
}

class TensorParallel : public ::testing::TestWithParam<TpCase> {};

TEST_P(TensorParallel, WholeWorldMatchesReference) { run_and_check(GetParam(), all_ranks(), 17); }

TEST_P(TensorParallel, GroupsOfTwoLookUpDifferentIds) {
  if (world().size() % 2 != 0) GTEST_SKIP() << "needs an even world size";
  const int first = world().rank() / 2 * 2;
  run_and_check(GetParam(), {first, first + 1}, 100 + static_cast<std::uint64_t>(first));
}

TEST_P(TensorParallel, InterleavedGroups) {
  if (world().size() != 4) GTEST_SKIP() << "needs a world of 4";
  const int parity = world().rank() % 2;
  run_and_check(GetParam(), {parity, parity + 2}, 200 + static_cast<std::uint64_t>(parity));
}

std::vector<TpCase> tp_cases() {
  std::vector<TpCase> cases;
  for (int dim : {0, 1}) {
    for (auto placement : {ShardPlacement::equal, ShardPlacement::packed}) {
      cases.push_back({DType::f32, DType::i64, DType::f32, std::nullopt, dim, placement, 733, 127, 3, false});
      cases.push_back({DType::bf16, DType::i32, DType::bf16, std::nullopt, dim, placement, 127, 733, 2, true});
      cases.push_back({DType::f16, DType::i64, DType::f32, DType::bf16, dim, placement, 7, 3, 1, false});
      cases.push_back({DType::i8, DType::i32, DType::bf16, DType::f32, dim, placement, 733, 7, 2, false});
      cases.push_back({DType::fp8_e4m3, DType::i64, DType::f16, DType::f16, dim, placement, 127, 7, 0, true});
      cases.push_back({DType::i4, DType::i64, DType::bf16, DType::bf16, dim, placement, 733, 127, 3, false});
      cases.push_back({DType::i4, DType::i32, DType::f32, DType::f32, dim, placement, 3, 7, 0, false});
    }
  }
  return cases;
}

// Vocab-parallel cases run with every exchange (peer_rows where the tables are on the GPU).
std::vector<TpCase> tp_cases_with_exchanges() {
  std::vector<TpCase> cases;
  for (TpCase c : tp_cases()) {
    cases.push_back(c);
    if (c.sharding_dim == 0) {
      c.exchange = VocabExchange::owned_rows;
      cases.push_back(c);
      if (kOnGpu) {
        c.exchange = VocabExchange::peer_rows;
        cases.push_back(c);
      }
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Matrix, TensorParallel, ::testing::ValuesIn(tp_cases_with_exchanges()), tp_case_name);

// ---- errors reach every rank ------------------------------------------------------------------

template <typename E>
void expect_error_everywhere(const std::function<void()>& call, const std::string& needle) {
  try {
    call();
    ADD_FAILURE() << "world rank " << world().rank() << ": no error; expected '" << needle << "'";
  } catch (const E& error) {
    EXPECT_NE(std::string(error.what()).find(needle), std::string::npos)
        << "world rank " << world().rank() << ": message '" << error.what() << "' lacks '" << needle << "'";
  } catch (const std::exception& error) {
    ADD_FAILURE() << "world rank " << world().rank() << ": wrong exception type: " << error.what();
  }
  // Every rank is still in step afterwards.
  world().barrier();
}

// A shard of just a table (host memory).
EmbeddingShard weight_only(const HostTable& table) {
  EmbeddingShard shard;
  shard.weight = table.view();
  return shard;
}

EmbeddingConfig whole_world_config(int sharding_dim) {
  EmbeddingConfig config;
  config.tp_size = world().size();
  config.sharding_dim = sharding_dim;
  config.placement = ShardPlacement::equal;  // what these tests were written for (packed is the default)
  return config;
}

TEST(TensorParallelErrors, UnequalRowsInEqualPlacement) {
  const std::int64_t rows = world().rank() == 1 ? 5 : 4;
  const HostTable table = random_table(DType::f32, rows, 3, 1);
  EmbeddingShard shard;
  shard.weight = table.view();
  expect_error_everywhere<ShapeError>(
      [&] { ParallelEmbedding(world(), shard, whole_world_config(0)); },
      "rank 1 holds 5 rows but rank 0 holds 4");
}

TEST(TensorParallelErrors, HiddenShardsWithDifferentRowCounts) {
  const HostTable table = random_table(DType::bf16, world().rank() == 1 ? 9 : 8, 3, 1);
  EmbeddingShard shard;
  shard.weight = table.view();
  expect_error_everywhere<ShapeError>(
      [&] { ParallelEmbedding(world(), shard, whole_world_config(1)); },
      "rank 1 holds 9 rows but rank 0 holds 8");
}

TEST(TensorParallelErrors, OneRankWithoutScaleForAQuantizedTable) {
  const Problem problem = random_problem(DType::i8, 8, 4, DType::f32, 0, 2);
  EmbeddingShard shard;
  shard.weight = problem.table.view();
  if (world().rank() != 1) shard.scale = problem.scale->view();
  EmbeddingConfig config = whole_world_config(0);
  config.out_dtype = DType::f32;
  expect_error_everywhere<InvalidArgumentError>(
      [&] { ParallelEmbedding(world(), shard, config); },
      "rank 1: a quantized table (i8) needs per_token_scale");
}

TEST(TensorParallelErrors, DifferentTableDtypes) {
  const HostTable table = random_table(world().rank() == 1 ? DType::f16 : DType::bf16, 8, 4, 1);
  EmbeddingShard shard;
  shard.weight = table.view();
  EmbeddingConfig config = whole_world_config(0);
  config.out_dtype = DType::f32;
  expect_error_everywhere<ShapeError>([&] { ParallelEmbedding(world(), shard, config); },
                                      "rank 1 holds a f16 table but rank 0 holds a bf16 table");
}

TEST(TensorParallelErrors, DifferentVocabExchanges) {
  const HostTable table = random_table(DType::f32, 4, 4, 1);
  const EmbeddingShard shard = weight_only(table);
  EmbeddingConfig config = whole_world_config(0);
  config.vocab_exchange = world().rank() == 1 ? VocabExchange::owned_rows : VocabExchange::all_reduce;
  expect_error_everywhere<InvalidArgumentError>(
      [&] { ParallelEmbedding(world(), shard, config); },
      "rank 1 asks for the owned_rows vocab exchange but rank 0 for all_reduce");
}

TEST(TensorParallelOp, AutomaticExchangeForHostTables) {
  const HostTable table = random_table(DType::f32, 4, 4, 1);
  const EmbeddingShard shard = weight_only(table);
  ParallelEmbedding embedding(world(), shard, whole_world_config(0));
  // Collectives through the host (MPI): owned rows; on device buffers (NCCL): the all-reduce.
  EXPECT_EQ(embedding.layout().vocab_exchange,
            world().accepts_device_buffers() ? VocabExchange::all_reduce : VocabExchange::owned_rows);
  ParallelEmbedding hidden(world(), shard, whole_world_config(1));
  EXPECT_EQ(hidden.layout().vocab_exchange, VocabExchange::all_reduce);  // unused for hidden sharding
}

TEST(TensorParallelErrors, PeerRowsNeedGpuTables) {
  const HostTable table = random_table(DType::f32, 4, 4, 1);
  const EmbeddingShard shard = weight_only(table);
  EmbeddingConfig config = whole_world_config(0);
  config.vocab_exchange = VocabExchange::peer_rows;
  expect_error_everywhere<UnsupportedError>(
      [&] { ParallelEmbedding(world(), shard, config); },
      "the peer_rows vocab exchange cannot run: rank 0 of the tp group cannot share its table: its table is in host "
      "memory");
}

TEST(TensorParallelErrors, DifferentCollectiveChecks) {
  const HostTable table = random_table(DType::f32, 4, 4, 1);
  const EmbeddingShard shard = weight_only(table);
  EmbeddingConfig config = whole_world_config(0);
  config.collective_checks = world().rank() != 1;
  expect_error_everywhere<InvalidArgumentError>([&] { ParallelEmbedding(world(), shard, config); },
                                                "rank 1 sets collective_checks off but rank 0 sets it on");
}

TEST(TensorParallelOp, WithoutCollectiveChecksEveryExchangeStillMatches) {
  const int tp = world().size();
  const Problem problem = random_problem(DType::bf16, 10 * tp, 6, std::nullopt, 0, 9);
  const RankShard mine = cut_shard(problem, 0, 10 * world().rank(), 10);
  const std::vector<std::int64_t> ids = {0, 9, 10, 10 * tp - 1, 10 * tp, -1, 3};
  const auto id_bytes = encode_ids(ids, DType::i64);
  const auto expected = reference_lookup(problem, ids, DType::bf16);
  for (VocabExchange exchange : {VocabExchange::all_reduce, VocabExchange::owned_rows}) {
    EmbeddingConfig config = whole_world_config(0);
    config.collective_checks = false;
    config.vocab_exchange = exchange;
    ParallelEmbedding embedding(world(), mine.view(), config);
    const Tensor out = embedding.forward(TensorView(id_bytes.data(), DType::i64, {7}));
    EXPECT_EQ(0, std::memcmp(out.data(), expected.data(), expected.size())) << vocab_exchange_name(exchange);
    EXPECT_EQ(embedding.last_bad_id_count(), 2u);
  }
}

TEST(TensorParallelErrors, CollidingTpRanks) {
  const HostTable table = random_table(DType::f32, 4, 4, 1);
  const EmbeddingShard shard = weight_only(table);
  EmbeddingConfig config = whole_world_config(0);
  config.tp_rank = 0;  // everyone claims shard 0
  expect_error_everywhere<InvalidArgumentError>([&] { ParallelEmbedding(world(), shard, config); },
                                                "tp_rank 0 is claimed by ranks 0,1");
}

TEST(TensorParallelErrors, DifferentIdCountsPerRank) {
  const HostTable table = random_table(DType::f32, 4, 4, 1);
  const EmbeddingShard shard = weight_only(table);
  ParallelEmbedding embedding(world(), shard, whole_world_config(0));
  const std::int64_t ids[3] = {0, 1, 2};
  const std::int64_t count = world().rank() == 1 ? 2 : 3;
  expect_error_everywhere<ShapeError>(
      [&] { embedding.forward(TensorView(ids, DType::i64, {count})); },
      "rank 1 of the tp group looks up 2 ids but rank 0 looks up 3");
}

// Ids that differ across the group with the same count would give silently wrong rows (the sum of
// two rows, an owner's zero row, columns of two rows): the forward's check compares a fingerprint of
// the ids and refuses them on every rank, on host and GPU ids alike (few GPU ids are hashed on the
// host, many by the kernel; over NCCL the kernel stores into the gathered record). The layer then
// goes on working.
TEST(TensorParallelErrors, OtherIdsOfTheSameCountAreRefusedOnEveryRank) {
  const int tp = world().size(), last = tp - 1;
  for (int sharding_dim : {0, 1}) {
    // 8 rows or 4 columns a rank.
    const Problem problem = random_problem(DType::f32, 8 * tp, sharding_dim == 0 ? 4 : 4 * tp, std::nullopt, 0, 5);
    for (VocabExchange exchange : {VocabExchange::all_reduce, VocabExchange::owned_rows}) {
      if (sharding_dim == 1 && exchange == VocabExchange::owned_rows) continue;
      const RankShard shard = cut_shard(problem, sharding_dim, (sharding_dim == 0 ? 8 : 4) * world().rank(),
                                        sharding_dim == 0 ? 8 : 4);
      EmbeddingConfig config = whole_world_config(sharding_dim);
      config.vocab_exchange = exchange;
      ParallelEmbedding embedding(world(), kOnGpu ? upload_shard(shard.view()) : shard.view(), config);
      const std::int64_t hidden = embedding.layout().global_cols;
      for (std::int64_t count : {5, 3000}) {
        std::vector<std::int64_t> ids(static_cast<std::size_t>(count));
        for (std::int64_t i = 0; i < count; ++i) ids[static_cast<std::size_t>(i)] = (i * 7) % (8 * tp);
        std::vector<std::int64_t> mine = ids;
        if (world().rank() == last) std::swap(mine[1], mine[2]);  // the same ids in another order
        auto run = [&](const std::vector<std::int64_t>& values) {
          const auto id_bytes = encode_ids(values, DType::i64);
          if (kOnGpu) {
            const DeviceCopy device_ids = upload_bytes(id_bytes, DType::i64, {count});
            DeviceBuffer out(static_cast<std::size_t>(count * hidden) * sizeof(float), test_device());
            embedding.forward(device_ids.view, out.view(DType::f32, {count, hidden}));
            return download(out.data(), out.size());
          }
          const Tensor out = embedding.forward(TensorView(id_bytes.data(), DType::i64, {count}));
          return std::vector<std::uint8_t>(static_cast<const std::uint8_t*>(out.data()),
                                           static_cast<const std::uint8_t*>(out.data()) + out.nbytes());
        };
        expect_error_everywhere<InvalidArgumentError>(
            [&] { run(mine); },
            "rank " + std::to_string(last) + " of the tp group looks up other ids than rank 0 (the same count, " +
                std::to_string(count));
        EXPECT_EQ(run(ids), reference_lookup(problem, ids, DType::f32)) << "dim " << sharding_dim << " "
                                                                          << vocab_exchange_name(exchange);
      }
    }
  }
}

TEST(TensorParallelErrors, BadIdsOnOneRankReachEveryRank) {
  const HostTable table = random_table(DType::f32, 4, 4, 1);
  const EmbeddingShard shard = weight_only(table);
  ParallelEmbedding embedding(world(), shard, whole_world_config(0));
  const float float_ids[2] = {0, 1};
  const std::int64_t ids[2] = {0, 1};
  expect_error_everywhere<InvalidArgumentError>(
      [&] {
        if (world().rank() == 1) {
          embedding.forward(TensorView(float_ids, DType::f32, {2}));
        } else {
          embedding.forward(TensorView(ids, DType::i64, {2}));
        }
      },
      "rank 1: ids must be i32 or i64, not f32");
}

TEST(TensorParallelErrors, StrictModeRaisesOnEveryRank) {
  const HostTable table = random_table(DType::f32, 4, 4, 1);
  const EmbeddingShard shard = weight_only(table);
  EmbeddingConfig config = whole_world_config(0);
  config.strict = true;
  ParallelEmbedding embedding(world(), shard, config);
  const std::int64_t valid = 4 * world().size();
  const std::int64_t ids[4] = {0, valid - 1, valid, -3};
  expect_error_everywhere<OutOfRangeError>(
      [&] { embedding.forward(TensorView(ids, DType::i64, {4})); },
      "id " + std::to_string(valid) + " at position 2");
}

TEST(TensorParallelErrors, PaddingWithVocabShardingIsRefused) {
  const HostTable table = random_table(DType::f32, 4, 4, 1);
  const HostTable padding = random_table(DType::f32, 1, 4, 2);
  EmbeddingShard shard;
  shard.weight = table.view();
  shard.padding = padding.view();
  expect_error_everywhere<InvalidArgumentError>(
      [&] { ParallelEmbedding(world(), shard, whole_world_config(0)); },
      "padding rows are addressable only where the local table holds the whole vocab");
}

// The one-call op with tp_size 1 works alone, strict or not, whatever communicator it is given:
// only rank 0 calls it here, and nobody waits for the others.
TEST(TensorParallelOp, FunctionFormWithTpSizeOneIsLocal) {
  const Problem problem = random_problem(DType::f32, 6, 3, std::nullopt, 0, 2);
  if (world().rank() == 0) {
    EmbeddingOptions options;
    options.strict = true;
    const std::int64_t ids[] = {5, 0};
    const Tensor out =
        embedding(TensorView(ids, DType::i64, {2}), problem.table.view(), options, &world());
    const auto expected = reference_lookup(problem, {5, 0}, DType::f32);
    EXPECT_EQ(0, std::memcmp(out.data(), expected.data(), expected.size()));
  }
  world().barrier();
}

TEST(TensorParallelOp, FunctionFormWithGroupAndExplicitRanks) {
  // The seed's call: embedding(ids, weight, tp_size, tp_group, sharding_dim, tp_rank), world-wide.
  const int tp = world().size();
  const Problem problem = random_problem(DType::bf16, 10 * tp, 6, std::nullopt, 0, 9);
  const HostTable mine = problem.table.slice_rows(10 * world().rank(), 10);
  EmbeddingOptions options;
  options.tp_size = tp;
  options.tp_group = all_ranks();
  options.tp_rank = world().rank();
  const std::int32_t ids[] = {0, 9, 10, 10 * tp - 1, 10 * tp, -1};
  const Tensor out = embedding(TensorView(ids, DType::i32, {2, 3}), mine.view(), options, &world());
  const auto expected = reference_lookup(problem, {0, 9, 10, 10 * tp - 1, 10 * tp, -1}, DType::bf16);
  EXPECT_EQ(out.shape(), (std::vector<std::int64_t>{2, 3, 6}));
  EXPECT_EQ(0, std::memcmp(out.data(), expected.data(), expected.size()));
}

#if TPEMBED_TEST_ON_GPU
// ---- peer_rows: every rank reads the others' tables (CUDA IPC: ranks are processes) -------------

TEST(TensorParallelPeerRows, AutomaticNeverPicksPeerRows) {
  // peer_rows makes the destructor collective: only a caller who asks for it gets it.
  const HostTable table = random_table(DType::f32, 4, 4, 1);
  ParallelEmbedding embedding(world(), upload_shard(weight_only(table)), whole_world_config(0));
  EXPECT_EQ(embedding.layout().vocab_exchange,
            world().accepts_device_buffers() ? VocabExchange::all_reduce : VocabExchange::owned_rows);
}

// Rank 1's table in managed memory, which CUDA IPC cannot share: the lookup still works with the
// other exchanges, and peer_rows fails on every rank, naming rank 1 and why.
TEST(TensorParallelPeerRows, ATableThatCannotBeSharedIsNamedOnEveryRank) {
  const int tp = world().size();
  const Problem problem = random_problem(DType::f32, 8 * tp, 16, std::nullopt, 0, 12);
  const HostTable mine = problem.table.slice_rows(8 * world().rank(), 8);
  void* managed = nullptr;
  CUDA_OK(cudaMallocManaged(&managed, mine.bytes.size()));
  std::memcpy(managed, mine.bytes.data(), mine.bytes.size());
  CUDA_OK(cudaDeviceSynchronize());
  EmbeddingShard shard = upload_shard(weight_only(mine));
  if (world().rank() == 1) shard.weight = TensorView(managed, DType::f32, {8, 16}, Device::cuda(test_device()));

  ParallelEmbedding fallback(world(), shard, whole_world_config(0));
  const std::vector<std::int64_t> ids = {0, 8 * tp - 1, 9, -4, 8 * tp, 3};
  const DeviceCopy device_ids = upload_bytes(encode_ids(ids, DType::i64), DType::i64, {6});
  DeviceBuffer out(6 * 16 * 4, test_device());
  fallback.forward(device_ids.view, out.view(DType::f32, {6, 16}));
  EXPECT_EQ(download(out.data(), out.size()), reference_lookup(problem, ids, DType::f32));

  EmbeddingConfig config = whole_world_config(0);
  config.vocab_exchange = VocabExchange::peer_rows;
  expect_error_everywhere<UnsupportedError>([&] { ParallelEmbedding(world(), shard, config); },
                                            "rank 1 of the tp group cannot share its table: the table is in managed");
  cudaFree(managed);
}

// Every rank's scales in the same allocation as its table (one packed buffer, as a caching
// allocator's segment may hold both): a process may open an allocation only once, so each peer's is
// mapped once and both the rows and the scales are read through that one mapping.
TEST(TensorParallelPeerRows, TableAndScalesInOneAllocation) {
  if (!gpus_of_the_world_reach_each_other()) GTEST_SKIP() << "SKIPPED: these GPUs have no peer access to each other";
  const int tp = world().size();
  const std::int64_t rows = 40, hidden = 64;
  const Problem problem = random_problem(DType::i8, rows * tp, hidden, DType::f32, 0, 41);
  const RankShard mine = cut_shard(problem, 0, rows * world().rank(), rows);
  const std::size_t table_bytes = mine.weight.bytes.size(), scale_bytes = mine.scale->bytes.size();
  DeviceBuffer packed(table_bytes + scale_bytes, test_device());
  auto* scales_at = static_cast<std::uint8_t*>(packed.data()) + table_bytes;
  cuda_copy(packed.data(), mine.weight.bytes.data(), table_bytes);
  cuda_copy(scales_at, mine.scale->bytes.data(), scale_bytes);
  EmbeddingShard shard;
  shard.weight = TensorView(packed.data(), DType::i8, {rows, hidden}, Device::cuda(test_device()));
  shard.scale = TensorView(scales_at, DType::f32, {rows}, Device::cuda(test_device()));
  EmbeddingConfig config = whole_world_config(0);
  config.vocab_exchange = VocabExchange::peer_rows;
  config.out_dtype = DType::bf16;
  ParallelEmbedding layer(world(), shard, config);
  const std::vector<std::int64_t> ids = {0, rows * tp - 1, rows, -1, rows * tp, 7, rows + 3};
  const auto count = static_cast<std::int64_t>(ids.size());
  const DeviceCopy device_ids = upload_bytes(encode_ids(ids, DType::i64), DType::i64, {count});
  DeviceBuffer out(static_cast<std::size_t>(count * hidden * 2), test_device());
  layer.forward(device_ids.view, out.view(DType::bf16, {count, hidden}));
  EXPECT_EQ(download(out.data(), out.size()), reference_lookup(problem, ids, DType::bf16));
  EXPECT_EQ(layer.last_bad_id_count(), 2u);
}

// The whole tp > 1 forward captured once in a CUDA graph (collective checks off: nothing but the
// lookup kernel), replayed with new ids written into the captured id buffer.
TEST(TensorParallelPeerRows, CapturedForwardReplaysWithNewIds) {
  if (!gpus_of_the_world_reach_each_other()) GTEST_SKIP() << "SKIPPED: these GPUs have no peer access to each other";
  const int tp = world().size();
  const std::int64_t vocab = 1000, hidden = 256, count = 300;
  const Problem problem = random_problem(DType::i8, vocab, hidden, DType::f32, 0, 31);
  const auto sizes = shard_sizes(vocab, tp, ShardPlacement::packed);
  std::int64_t offset = 0;
  for (int t = 0; t < world().rank(); ++t) offset += sizes[t];
  const RankShard mine = cut_shard(problem, 0, offset, sizes[world().rank()]);
  EmbeddingConfig config = whole_world_config(0);
  config.placement = ShardPlacement::packed;
  config.out_dtype = DType::bf16;
  config.vocab_exchange = VocabExchange::peer_rows;
  config.collective_checks = false;
  ParallelEmbedding embedding(world(), upload_shard(mine.view()), config);

  DeviceBuffer ids(count * sizeof(std::int64_t), test_device()), out(count * hidden * 2, test_device());
  CUDA_OK(cudaSetDevice(test_device()));
  cuda_fill(ids.data(), 0, ids.size());
  // A first call outside capture (as a caller warms up), then the capture.
  CapturedGraph graph(
      [&](cudaStream_t stream) {
        embedding.forward(ids.view(DType::i64, {count}), out.view(DType::bf16, {count, hidden}), stream);
      },
      /*warm_up=*/true);
  for (std::uint64_t round = 0; round < 3; ++round) {
    const auto new_ids = interesting_ids(vocab, 0, {}, count, 700 + round);
    std::vector<std::int64_t> batch(new_ids.begin(), new_ids.begin() + std::min<std::size_t>(count, new_ids.size()));
    batch.resize(count, 7);
    ids.copy_from_host(batch.data(), batch.size() * sizeof(std::int64_t));
    cuda_fill(out.data(), 0xcd, out.size());
    graph.replay();
    const auto expected = reference_lookup(problem, batch, DType::bf16);
    const auto actual = download(out.data(), expected.size());
    EXPECT_EQ(actual, expected) << "round " << round << ", world rank " << world().rank() << ": "
                                << first_difference(actual, expected, DType::bf16, hidden);
    std::uint64_t bad = 0;
    for (auto id : batch) bad += (id < 0 || id >= vocab) ? 1 : 0;
    unsigned long long counted = 0;
    cuda_copy(&counted, embedding.bad_id_counter(), sizeof counted);
    EXPECT_EQ(counted, bad) << "round " << round;
  }
}
#endif

}  // namespace
}  // namespace tpembed::testing

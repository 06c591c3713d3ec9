// The scattered token layouts over real MPI ranks (mpirun -np 2, 3, 4): every rank holds a shard of
// one table and receives only its chunk of the tokens (torch.tensor_split's rule along
// scatter_dim, written out again here from embedding.hpp's words); its output must equal that
// chunk of the unsharded reference lookup, bit for bit, and its backward its slice of the
// unsharded gradient (the library's CPU backward of the whole table), bit for bit. Every exchange,
// both sharding dims, scatter_dim 0 and 1, token counts that do not divide by tp, fewer tokens than
// ranks, zero tokens, replicated and scattered input, permuted tp ranks and groups of two; then the
// refusals, on every rank.
//
// Built twice: host tables (test_scattered_mpi) and every rank's shard on the GPU the ranks share
// (test_scattered_mpi_gpu, which adds peer_rows through CUDA IPC; skipped without a GPU).
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <numeric>
#include <sstream>

#include "device_tables.hpp"
#include "expect_error.hpp"
#include "on_gpu.hpp"
#include "reference.hpp"
#if TPEMBED_TEST_ON_GPU
#include "captured_graph.hpp"
#endif

namespace tpembed::testing {
namespace {

Communicator& world() {
  static std::unique_ptr<Communicator> mpi = make_mpi_communicator();
  return *mpi;
}

// ---- the rule, independently of the library -----------------------------------------------------

std::int64_t numel(const std::vector<std::int64_t>& shape) {
  return std::accumulate(shape.begin(), shape.end(), std::int64_t{1}, std::multiplies<>());
}

// Chunk t of n entries over tp parts: [first, first + size).
std::pair<std::int64_t, std::int64_t> split_rule(std::int64_t n, int tp, int t) {
  const std::int64_t base = n / tp, extra = n % tp;
  return {t * base + std::min<std::int64_t>(t, extra), base + (t < extra ? 1 : 0)};
}

// Flat positions of chunk t's tokens in the whole ids (the chunk's row-major order), and its shape.
std::vector<std::int64_t> chunk_tokens(const std::vector<std::int64_t>& shape, int dim, int tp,
                                       int t, std::vector<std::int64_t>* chunk_shape) {
  const auto [first, size] = split_rule(shape[dim], tp, t);
  std::vector<std::int64_t> chunk = shape;
  chunk[dim] = size;
  if (chunk_shape != nullptr) *chunk_shape = chunk;
  std::vector<std::int64_t> positions;
  std::vector<std::int64_t> index(shape.size(), 0);
  for (std::int64_t k = 0; k < numel(chunk); ++k) {
    std::int64_t rest = k, flat = 0;
    for (std::size_t d = shape.size(); d-- > 0;) {
      index[d] = rest % chunk[d];
      rest /= chunk[d];
    }
    index[dim] += first;
    for (std::size_t d = 0; d < shape.size(); ++d) flat = flat * shape[d] + index[d];
    positions.push_back(flat);
  }
  return positions;
}

// Rows `positions` of a row-major byte matrix of `row` bytes a row.
std::vector<std::uint8_t> take_rows(const std::vector<std::uint8_t>& rows, std::int64_t row,
                                    const std::vector<std::int64_t>& positions) {
  std::vector<std::uint8_t> out;
  for (std::int64_t p : positions)
    out.insert(out.end(), rows.begin() + p * row, rows.begin() + (p + 1) * row);
  return out;
}

// ---- running a layer on host or GPU -------------------------------------------------------------

struct Shard {
  HostTable weight;
  std::optional<HostTable> scale;
  EmbeddingShard view() const {
    EmbeddingShard shard;
    shard.weight = weight.view();
    if (scale) shard.scale = scale->view();
    return shard;
  }
};

// Uneven shards (quadratic cuts, the first possibly empty) or equal ones (ceil, zero-padded).
std::vector<std::int64_t> shard_starts(std::int64_t total, int tp, ShardPlacement placement) {
  std::vector<std::int64_t> starts(tp + 1);
  for (int t = 0; t <= tp; ++t) {
    starts[t] = placement == ShardPlacement::equal ? t * ((total + tp - 1) / tp)
                                                   : total * t * t / (tp * tp);
  }
  return starts;
}

std::vector<std::uint8_t> forward_bytes(ParallelEmbedding& layer,
                                        const std::vector<std::uint8_t>& ids, DType id_dtype,
                                        const std::vector<std::int64_t>& ids_shape,
                                        const std::vector<std::int64_t>& out_shape,
                                        DType out_dtype) {
  const std::size_t out_bytes = static_cast<std::size_t>(numel(out_shape) / out_shape.back()) *
                                static_cast<std::size_t>(row_bytes(out_dtype, out_shape.back()));
  if (kOnGpu) {
    const DeviceCopy device_ids = upload_bytes(ids, id_dtype, ids_shape);
    DeviceBuffer out(out_bytes + 16, test_device());
    cuda_fill(out.data(), 0xcd, out.size());  // poison: unwritten elements show
    layer.forward(device_ids.view, out.view(out_dtype, out_shape));
    return download(out.data(), out_bytes);
  }
  const Tensor out = layer.forward(TensorView(ids.data(), id_dtype, ids_shape));
  EXPECT_EQ(out.shape(), out_shape);
  const auto* data = static_cast<const std::uint8_t*>(out.data());
  return std::vector<std::uint8_t>(data, data + out.nbytes());
}

std::vector<std::uint8_t> backward_bytes(ParallelEmbedding& layer,
                                         const std::vector<std::uint8_t>& ids, DType id_dtype,
                                         const std::vector<std::int64_t>& ids_shape,
                                         const HostTable& grad_out,
                                         const std::vector<std::int64_t>& grad_shape,
                                         DType grad_dtype,
                                         const std::vector<std::int64_t>& weight_shape) {
  const std::size_t grad_bytes = static_cast<std::size_t>(weight_shape[0]) *
                                 static_cast<std::size_t>(row_bytes(grad_dtype, weight_shape[1]));
  const TensorView grad_view(grad_out.bytes.data(), grad_out.dtype, grad_shape);
  if (kOnGpu) {
    const DeviceCopy device_ids = upload_bytes(ids, id_dtype, ids_shape);
    const DeviceCopy device_grad = upload_bytes(grad_out.bytes, grad_out.dtype, grad_shape);
    DeviceBuffer weight(grad_bytes + 16, test_device());
    cuda_fill(weight.data(), 0xcd, weight.size());
    layer.backward(device_ids.view, device_grad.view, weight.view(grad_dtype, weight_shape));
    return download(weight.data(), grad_bytes);
  }
  std::vector<std::uint8_t> weight(grad_bytes, 0xcd);
  layer.backward(TensorView(ids.data(), id_dtype, ids_shape), grad_view,
                 TensorView(weight.data(), grad_dtype, weight_shape));
  return weight;
}

// ---- the matrix ---------------------------------------------------------------------------------

struct ScatterCase {
  int sharding_dim;
  VocabExchange exchange;  ///< dim 0 only
  TokenLayout input;
  std::vector<std::int64_t> shape;
  int scatter_dim;
  DType table;
  ShardPlacement placement;
  bool reverse_tp_ranks;
  bool collective_checks;
};

std::string case_name(const ::testing::TestParamInfo<ScatterCase>& info) {
  const ScatterCase& c = info.param;
  std::ostringstream name;
  name << "dim" << c.sharding_dim << "_"
       << (c.sharding_dim == 0 ? vocab_exchange_name(c.exchange) : "hidden") << "_"
       << token_layout_name(c.input) << "_S";
  for (std::int64_t e : c.shape) name << e << "x";
  name << "d" << c.scatter_dim << "_" << dtype_name(c.table)
       << (c.placement == ShardPlacement::equal ? "_equal" : "_packed")
       << (c.reverse_tp_ranks ? "_reversed" : "") << (c.collective_checks ? "" : "_unchecked")
       << "_" << info.index;
  return name.str();
}

void run_case(const ScatterCase& c, const std::vector<int>& group, std::uint64_t seed) {
  const int tp = static_cast<int>(group.size());
  const int position =
      static_cast<int>(std::find(group.begin(), group.end(), world().rank()) - group.begin());
  const int tp_rank = c.reverse_tp_ranks ? tp - 1 - position : position;
  const bool quantized = is_quantized(c.table);
  const DType out_dtype = quantized ? DType::bf16 : c.table;
  const std::int64_t vocab = 61,
                     hidden = c.sharding_dim == 1 && c.placement == ShardPlacement::equal ? 12 : 13;
  const Problem problem = random_problem(
      c.table, vocab, hidden, quantized ? std::optional<DType>(DType::f32) : std::nullopt, 0, 4242);
  const auto starts = shard_starts(c.sharding_dim == 0 ? vocab : hidden, tp, c.placement);
  const std::int64_t first = starts[tp_rank], size = starts[tp_rank + 1] - starts[tp_rank];
  Shard shard;
  if (c.sharding_dim == 0) {
    shard.weight = problem.table.slice_rows(first, size);
    if (problem.scale) shard.scale = problem.scale->slice_rows(first, size);
  } else {
    shard.weight = problem.table.slice_cols(first, size);
    shard.scale = problem.scale;
  }

  EmbeddingConfig config;
  config.output_layout = TokenLayout::scattered;
  config.input_layout = c.input;
  config.scatter_dim = c.scatter_dim;
  config.vocab_exchange = c.exchange;
  config.tp_size = tp;
  config.tp_group = group;
  config.tp_rank = tp_rank;
  config.sharding_dim = c.sharding_dim;
  config.placement = c.placement;
  config.collective_checks = c.collective_checks;
  if (c.sharding_dim == 0 && c.placement == ShardPlacement::equal) config.vocab_size = vocab;
  if (quantized) config.out_dtype = out_dtype;
  ParallelEmbedding layer(world(), kOnGpu ? upload_shard(shard.view()) : shard.view(), config);

  // The whole ids (the same on every rank of the group), this rank's chunk of them, the reference.
  const std::int64_t count = numel(c.shape);
  std::vector<std::int64_t> ids =
      interesting_ids(vocab, 0, {starts.begin(), starts.end()}, count, seed);
  ids.resize(static_cast<std::size_t>(count));
  std::vector<std::int64_t> chunk_shape;
  const std::vector<std::int64_t> mine =
      chunk_tokens(c.shape, c.scatter_dim, tp, tp_rank, &chunk_shape);
  std::vector<std::int64_t> chunk_ids;
  for (std::int64_t p : mine) chunk_ids.push_back(ids[p]);
  const bool scattered_input = c.input == TokenLayout::scattered;
  const DType id_dtype = c.reverse_tp_ranks ? DType::i32 : DType::i64;
  const auto id_bytes = encode_ids(scattered_input ? chunk_ids : ids, id_dtype);
  const auto& ids_shape = scattered_input ? chunk_shape : c.shape;
  std::vector<std::int64_t> out_shape = chunk_shape;
  out_shape.push_back(hidden);

  const std::int64_t out_row = row_bytes(out_dtype, hidden);
  const auto expected = take_rows(reference_lookup(problem, ids, out_dtype), out_row, mine);
  const auto actual = forward_bytes(layer, id_bytes, id_dtype, ids_shape, out_shape, out_dtype);
  EXPECT_EQ(actual, expected) << "world rank " << world().rank() << " (tp_rank " << tp_rank
                              << "): " << first_difference(actual, expected, out_dtype, hidden);
  std::uint64_t bad = 0;
  for (std::int64_t id : chunk_ids) bad += id < 0 || id >= vocab ? 1 : 0;
  EXPECT_EQ(layer.last_bad_id_count(), bad) << "the bad ids of this rank's chunk";

  if (quantized) return;  // no gradient
  // The backward: every rank passes its chunk of one whole grad_out; the reference is the CPU
  // backward of the whole table, sliced to this rank's shard.
  const HostTable whole_grad = random_table(out_dtype, count, hidden, seed + 1);
  HostTable grad_chunk(out_dtype, static_cast<std::int64_t>(mine.size()), hidden);
  grad_chunk.bytes = take_rows(whole_grad.bytes, out_row, mine);
  const DType grad_dtype = c.table;
  HostTable whole_weight(grad_dtype, vocab, hidden);
  const auto all_id_bytes = encode_ids(ids, DType::i64);
  std::vector<std::int64_t> grad_shape = c.shape;
  grad_shape.push_back(hidden);
  GradientOptions options;
  embedding_backward(TensorView(all_id_bytes.data(), DType::i64, c.shape),
                     TensorView(whole_grad.bytes.data(), out_dtype, grad_shape),
                     whole_weight.view(), options);
  const HostTable expected_grad = c.sharding_dim == 0 ? whole_weight.slice_rows(first, size)
                                                      : whole_weight.slice_cols(first, size);
  const auto actual_grad =
      backward_bytes(layer, id_bytes, id_dtype, ids_shape, grad_chunk, out_shape, grad_dtype,
                     {shard.weight.rows, shard.weight.cols});
  EXPECT_EQ(actual_grad, expected_grad.bytes)
      << "world rank " << world().rank() << ": gradient "
      << first_difference(actual_grad, expected_grad.bytes, grad_dtype, shard.weight.cols);
}

std::vector<int> all_ranks() {
  std::vector<int> ranks(static_cast<std::size_t>(world().size()));
  std::iota(ranks.begin(), ranks.end(), 0);
  return ranks;
}

bool skip_peer_rows(const ScatterCase& c) {
  return c.sharding_dim == 0 && c.exchange == VocabExchange::peer_rows &&
         !gpus_reach_each_other(std::min(world().size(), std::max(cuda_device_count(), 1)));
}

class Scattered : public ::testing::TestWithParam<ScatterCase> {};

TEST_P(Scattered, WholeWorldMatchesTheReferenceChunk) {
  if (skip_peer_rows(GetParam()))
    GTEST_SKIP() << "SKIPPED: these GPUs have no peer access to each other";
  run_case(GetParam(), all_ranks(), 17);
}

TEST_P(Scattered, GroupsOfTwo) {
  if (world().size() % 2 != 0) GTEST_SKIP() << "needs an even world size";
  if (skip_peer_rows(GetParam()))
    GTEST_SKIP() << "SKIPPED: these GPUs have no peer access to each other";
  const int first = world().rank() / 2 * 2;
  run_case(GetParam(), {first, first + 1}, 100 + static_cast<std::uint64_t>(first));
}

TEST_P(Scattered, InterleavedGroups) {
  if (world().size() != 4) GTEST_SKIP() << "needs a world of 4";
  if (skip_peer_rows(GetParam()))
    GTEST_SKIP() << "SKIPPED: these GPUs have no peer access to each other";
  const int parity = world().rank() % 2;
  run_case(GetParam(), {parity, parity + 2}, 200 + static_cast<std::uint64_t>(parity));
}

std::vector<ScatterCase> scatter_cases() {
  struct Shape {
    std::vector<std::int64_t> shape;
    int dim;
  };
  // 7 tokens (not a multiple of 2, 3 or 4), [4, 7] along either dim, [3, 5, 2] along 1, one
  // token (fewer than ranks), none at all, and none along the other dims.
  const std::vector<Shape> shapes = {{{7}, 0}, {{4, 7}, 1}, {{4, 7}, 0},    {{3, 5, 2}, 1},
                                     {{1}, 0}, {{0}, 0},    {{2, 0, 3}, 1}, {{5, 1}, 1}};
  const DType tables[] = {DType::f32, DType::bf16, DType::i8};
  std::vector<ScatterCase> cases;
  int k = 0;
  for (int dim : {0, 1}) {
    for (VocabExchange exchange :
         {VocabExchange::all_reduce, VocabExchange::owned_rows, VocabExchange::peer_rows}) {
      if (dim == 1 && exchange != VocabExchange::all_reduce) continue;
      if (exchange == VocabExchange::peer_rows && !kOnGpu)
        continue;  // GPU tables only: the GPU build
      for (TokenLayout input : {TokenLayout::replicated, TokenLayout::scattered}) {
        for (const Shape& s : shapes) {
          const ShardPlacement placement = k % 2 ? ShardPlacement::equal : ShardPlacement::packed;
          cases.push_back({dim, exchange, input, s.shape, s.dim, tables[k % 3], placement,
                           k % 4 >= 2, k % 5 != 4});
          ++k;
        }
      }
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Matrix, Scattered, ::testing::ValuesIn(scatter_cases()), case_name);

#if TPEMBED_TEST_ON_GPU
// The scattered peer_rows forward captured once in a CUDA graph (collective checks off: the lookup
// kernel of this rank's chunk and nothing else), replayed with new ids written into the captured
// buffer; whole ids (the chunk a view of them) and scattered ones (the chunk itself).
TEST(ScatteredPeerRows, CapturedForwardOfTheOwnChunk) {
  if (!gpus_reach_each_other(std::min(world().size(), std::max(cuda_device_count(), 1)))) {
    GTEST_SKIP() << "SKIPPED: these GPUs have no peer access to each other";
  }
  const int tp = world().size(), me = world().rank();
  const std::int64_t vocab = 1000, hidden = 256, count = 301;  // 301 tokens: uneven chunks
  const Problem problem = random_problem(DType::i8, vocab, hidden, DType::f32, 0, 31);
  const auto starts = shard_starts(vocab, tp, ShardPlacement::packed);
  Shard shard;
  shard.weight = problem.table.slice_rows(starts[me], starts[me + 1] - starts[me]);
  shard.scale = problem.scale->slice_rows(starts[me], starts[me + 1] - starts[me]);
  for (TokenLayout input : {TokenLayout::replicated, TokenLayout::scattered}) {
    EmbeddingConfig config;
    config.tp_size = tp;
    config.out_dtype = DType::bf16;
    config.vocab_exchange = VocabExchange::peer_rows;
    config.collective_checks = false;
    config.output_layout = TokenLayout::scattered;
    config.input_layout = input;
    ParallelEmbedding layer(world(), upload_shard(shard.view()), config);
    std::vector<std::int64_t> chunk_shape;
    const std::vector<std::int64_t> mine = chunk_tokens({count}, 0, tp, me, &chunk_shape);
    const bool whole = input == TokenLayout::replicated;
    const std::int64_t passed = whole ? count : chunk_shape[0];
    DeviceBuffer ids(static_cast<std::size_t>(passed) * 8, test_device());
    DeviceBuffer out(static_cast<std::size_t>(chunk_shape[0] * hidden * 2), test_device());
    CUDA_OK(cudaSetDevice(test_device()));
    cuda_fill(ids.data(), 0, ids.size());
    CapturedGraph graph(
        [&](cudaStream_t stream) {
          layer.forward(ids.view(DType::i64, {passed}),
                        out.view(DType::bf16, {chunk_shape[0], hidden}), stream);
        },
        /*warm_up=*/true);
    for (std::uint64_t round = 0; round < 3; ++round) {
      std::vector<std::int64_t> batch = interesting_ids(vocab, 0, {}, count, 700 + round);
      batch.resize(static_cast<std::size_t>(count), 7);
      std::vector<std::int64_t> chunk;
      for (std::int64_t p : mine) chunk.push_back(batch[static_cast<std::size_t>(p)]);
      const std::vector<std::int64_t>& written = whole ? batch : chunk;
      ids.copy_from_host(written.data(), written.size() * 8);
      cuda_fill(out.data(), 0xcd, out.size());
      graph.replay();
      const auto expected = take_rows(reference_lookup(problem, batch, DType::bf16),
                                      row_bytes(DType::bf16, hidden), mine);
      const auto actual = download(out.data(), expected.size());
      EXPECT_EQ(actual, expected) << token_layout_name(input) << " ids, round " << round << ": "
                                  << first_difference(actual, expected, DType::bf16, hidden);
      std::uint64_t bad = 0;
      for (std::int64_t id : chunk) bad += id < 0 || id >= vocab ? 1 : 0;
      unsigned long long counted = 0;
      cuda_copy(&counted, layer.bad_id_counter(), sizeof counted);
      EXPECT_EQ(counted, bad) << "round " << round;
    }
  }
}
#else
TEST(ScatteredPeerRows, RunsInTheGpuBuild) {
  GTEST_SKIP()
      << "SKIPPED: peer_rows needs GPU tables; its scattered cases run in test_scattered_mpi_gpu";
}
#endif

// ---- refusals, on every rank ------------------------------------------------------------------

// The error on this rank (expect_error), then every rank still in step.
template <typename E>
void expect_error_everywhere(const std::function<void()>& call, const std::string& needle) {
  expect_error<E>(call, needle);
  world().barrier();
}

// Vocab shards of 4 rows of 3 columns a rank (f32), scattered output over the whole world.
EmbeddingConfig scattered_config(TokenLayout input = TokenLayout::replicated, int scatter_dim = 0) {
  EmbeddingConfig config;
  config.tp_size = world().size();
  config.output_layout = TokenLayout::scattered;
  config.input_layout = input;
  config.scatter_dim = scatter_dim;
  config.vocab_exchange = VocabExchange::all_reduce;
  return config;
}

HostTable rank_table() {
  return random_table(DType::f32, 4, 3, 11 + static_cast<std::uint64_t>(world().rank()));
}

EmbeddingShard weight_only(const HostTable& table) {
  EmbeddingShard shard;
  shard.weight = table.view();
  return shard;
}

TEST(ScatteredErrors, ScatterDimOutsideTheIds) {
  const HostTable table = rank_table();
  ParallelEmbedding layer(world(), weight_only(table),
                          scattered_config(TokenLayout::replicated, 1));
  const std::int64_t ids[3] = {0, 1, 2};
  expect_error_everywhere<InvalidArgumentError>(
      [&] { layer.forward(TensorView(ids, DType::i64, {3})); },
      "scatter_dim 1 is outside the ids' 1 dimensions");
  float out[9];
  expect_error_everywhere<InvalidArgumentError>(
      [&] {
        layer.forward(TensorView(ids, DType::i64, {3}), TensorView(out, DType::f32, {3, 3}));
      },
      "scatter_dim 1 is outside the ids' 1 dimensions");
  EmbeddingConfig negative = scattered_config();
  negative.scatter_dim = -1;
  expect_error_everywhere<InvalidArgumentError>(
      [&] { ParallelEmbedding(world(), weight_only(table), negative); },
      "scatter_dim must be >= 0, got -1");
}

TEST(ScatteredErrors, ScatteredInputNeedsScatteredOutput) {
  const HostTable table = rank_table();
  EmbeddingConfig config = scattered_config(TokenLayout::scattered);
  config.output_layout = TokenLayout::replicated;
  expect_error_everywhere<InvalidArgumentError>(
      [&] { ParallelEmbedding(world(), weight_only(table), config); },
      "input_layout scattered needs output_layout scattered");
}

TEST(ScatteredErrors, RanksThatDisagreeAtSetUp) {
  const HostTable table = rank_table();
  const int last = world().size() - 1;
  const std::string rank = "rank " + std::to_string(last);
  EmbeddingConfig config = scattered_config();
  if (world().rank() == last) config.output_layout = TokenLayout::replicated;
  expect_error_everywhere<InvalidArgumentError>(
      [&] { ParallelEmbedding(world(), weight_only(table), config); },
      rank + " asks for the replicated output_layout but rank 0 for scattered");
  config = scattered_config();
  if (world().rank() == last) config.scatter_dim = 1;
  expect_error_everywhere<InvalidArgumentError>(
      [&] { ParallelEmbedding(world(), weight_only(table), config); },
      rank + " scatters the tokens along scatter_dim 1 but rank 0 along 0");
  config = scattered_config();
  if (world().rank() == last) config.input_layout = TokenLayout::scattered;
  expect_error_everywhere<InvalidArgumentError>(
      [&] { ParallelEmbedding(world(), weight_only(table), config); },
      rank + " passes scattered ids (input_layout) but rank 0 replicated ids");
}

TEST(ScatteredErrors, ChunksThatDoNotFitTheRule) {
  const int tp = world().size(), me = world().rank();
  const HostTable table = rank_table();
  for (bool checks : {true, false}) {  // the chunk shapes are gathered either way
    EmbeddingConfig config = scattered_config(TokenLayout::scattered);
    config.collective_checks = checks;
    ParallelEmbedding layer(world(), weight_only(table), config);
    // 2 tokens each: n = 2 tp fits; rank 0 with 1 and the others with 2 (n = 2 tp - 1) does not.
    const std::int64_t ids[4] = {0, 1, 2, 3};
    expect_error_everywhere<ShapeError>(
        [&] { layer.forward(TensorView(ids, DType::i64, {me == 0 ? 1 : 2})); },
        "the scattered chunks do not fit torch.tensor_split's rule for their total of " +
            std::to_string(2 * tp - 1) +
            " along scatter_dim 0 (the first n % tp chunks get one more, in tp_rank order): rank 0 "
            "of the tp group "
            "(tp_rank 0) passes 1 but chunk 0 has 2");
    // Other extents along the other dims.
    expect_error_everywhere<ShapeError>(
        [&] {
          layer.forward(TensorView(ids, DType::i64, {1, me == tp - 1 ? 1 : 2}));
        },
        "rank " + std::to_string(tp - 1) +
            " of the tp group passes a chunk of shape [1, 1] but rank 0 one of shape "
            "[1, 2]: scattered chunks differ only along scatter_dim 0");
    // Another id dtype.
    // Rank 1 passes `odd` where the others pass two i64 ids.
    auto rank_one_passes = [&](const TensorView& odd) {
      layer.forward(me == 1 ? odd : TensorView(ids, DType::i64, {2}));
    };
    const std::int32_t small[2] = {0, 1};
    expect_error_everywhere<InvalidArgumentError>(
        [&] { rank_one_passes(TensorView(small, DType::i32, {2})); },
        "rank 1 of the tp group passes i32 ids but rank 0 passes i64");
    // A rank that fails its own checks (here: a float id tensor) reaches the others' chunk check.
    const float floats[2] = {0, 1};
    expect_error_everywhere<InvalidArgumentError>(
        [&] { rank_one_passes(TensorView(floats, DType::f32, {2})); },
        "rank 1: ids must be i32 or i64, not f32");
    // And the layer still works: the whole ids 0..2tp-1, each rank its own two.
    const std::int64_t own[2] = {2 * me, 2 * me + 1};
    const Tensor out = layer.forward(TensorView(own, DType::i64, {2}));
    const Problem whole = [&] {
      Problem p;
      p.table = HostTable(DType::f32, 4 * tp, 3);
      for (int r = 0; r < tp; ++r) {
        const HostTable part = random_table(DType::f32, 4, 3, 11 + static_cast<std::uint64_t>(r));
        std::copy(part.bytes.begin(), part.bytes.end(),
                  p.table.bytes.begin() + r * static_cast<std::ptrdiff_t>(part.bytes.size()));
      }
      return p;
    }();
    const auto expected = reference_lookup(whole, {2 * me, 2 * me + 1}, DType::f32);
    EXPECT_EQ(0, std::memcmp(out.data(), expected.data(), expected.size()))
        << "collective_checks " << checks;
  }
}

TEST(ScatteredErrors, OutAndGradOutOfTheWrongShape) {
  const int tp = world().size();
  const HostTable table = rank_table();
  ParallelEmbedding layer(world(), weight_only(table), scattered_config());
  // 2 tp ids: each chunk has 2; an output of all of them is refused.
  std::vector<std::int64_t> ids(static_cast<std::size_t>(2 * tp), 1);
  std::vector<float> out(static_cast<std::size_t>(2 * tp * 3));
  expect_error_everywhere<ShapeError>(
      [&] {
        layer.forward(TensorView(ids.data(), DType::i64, {2 * tp}),
                      TensorView(out.data(), DType::f32, {2 * tp, 3}));
      },
      "out has shape [" + std::to_string(2 * tp) +
          ", 3] but this rank's chunk of the scattered output is [2, 3]");
  std::vector<float> grad(static_cast<std::size_t>(4 * 3));
  expect_error_everywhere<ShapeError>(
      [&] {
        layer.backward(TensorView(ids.data(), DType::i64, {2 * tp}),
                       TensorView(out.data(), DType::f32, {2 * tp, 3}),
                       TensorView(grad.data(), DType::f32, {4, 3}));
      },
      "backward: grad_out has shape [" + std::to_string(2 * tp) +
          ", 3] but with the scattered layout it is this "
          "rank's chunk of the whole gradient, [2, 3]");
}

TEST(ScatteredErrors, StrictModeRaisesOnEveryRank) {
  const int tp = world().size();
  const HostTable table = rank_table();
  for (TokenLayout input : {TokenLayout::replicated, TokenLayout::scattered}) {
    EmbeddingConfig config = scattered_config(input);
    config.strict = true;
    ParallelEmbedding layer(world(), weight_only(table), config);
    // One bad id, in the last rank's chunk (2 ids a chunk).
    std::vector<std::int64_t> ids(static_cast<std::size_t>(2 * tp), 1);
    ids.back() = 4 * tp;
    const bool whole = input == TokenLayout::replicated;
    const std::int64_t* data = whole ? ids.data() : ids.data() + 2 * world().rank();
    const std::int64_t position = whole ? 2 * tp - 1 : 1;
    expect_error_everywhere<OutOfRangeError>(
        [&] { layer.forward(TensorView(data, DType::i64, {whole ? 2 * tp : 2})); },
        "id " + std::to_string(4 * tp) + " at position " + std::to_string(position));
  }
}

// tp_size 1: scattered is replicated (one chunk, everything), whatever the dim.
TEST(ScatteredOp, TpSizeOneIsReplicated) {
  const Problem problem = random_problem(DType::bf16, 9, 5, std::nullopt, 0, 3);
  EmbeddingConfig config;
  config.output_layout = TokenLayout::scattered;
  config.input_layout = TokenLayout::scattered;
  config.scatter_dim = 1;
  ParallelEmbedding layer(world(), weight_only(problem.table), config);
  const std::vector<std::int64_t> ids = {0, 8, 3, -1, 9, 2};
  const auto bytes = encode_ids(ids, DType::i64);
  const Tensor out = layer.forward(TensorView(bytes.data(), DType::i64, {2, 3}));
  EXPECT_EQ(out.shape(), (std::vector<std::int64_t>{2, 3, 5}));
  const auto expected = reference_lookup(problem, ids, DType::bf16);
  EXPECT_EQ(0, std::memcmp(out.data(), expected.data(), expected.size()));
  EXPECT_EQ(layer.last_bad_id_count(), 2u);
}

// The one-call op: tp = the world returns this rank's chunk; tp 1 (each rank alone, the fast path
// into `out`) returns everything and still refuses a scatter_dim outside the ids.
TEST(ScatteredOp, FunctionForm) {
  const int tp = world().size(), me = world().rank();
  const Problem problem = random_problem(DType::f32, 6 * tp, 4, std::nullopt, 0, 8);
  const HostTable mine = problem.table.slice_rows(6 * me, 6);
  EmbeddingOptions options;
  options.tp_size = tp;
  options.output_layout = TokenLayout::scattered;
  options.scatter_dim = 1;
  std::vector<std::int64_t> ids(static_cast<std::size_t>(2 * (tp + 1)));
  std::iota(ids.begin(), ids.end(), std::int64_t{-1});  // -1, 0, 1, ...: one bad id
  const auto bytes = encode_ids(ids, DType::i64);
  const Tensor out =
      embedding(TensorView(bytes.data(), DType::i64, {2, tp + 1}), mine.view(), options, &world());
  std::vector<std::int64_t> chunk_shape;
  const auto positions = chunk_tokens({2, tp + 1}, 1, tp, me, &chunk_shape);
  chunk_shape.push_back(4);
  EXPECT_EQ(out.shape(), chunk_shape);
  const auto expected =
      take_rows(reference_lookup(problem, ids, DType::f32), row_bytes(DType::f32, 4), positions);
  EXPECT_EQ(0, std::memcmp(out.data(), expected.data(), expected.size()));

  EmbeddingOptions alone;
  alone.output_layout = TokenLayout::scattered;
  alone.scatter_dim = 1;
  std::vector<float> whole(static_cast<std::size_t>(2 * (tp + 1) * 4));
  const TensorView ids_view(bytes.data(), DType::i64, {2, tp + 1});
  embedding(ids_view, mine.view(), TensorView(whole.data(), DType::f32, {2, tp + 1, 4}), alone,
            &world());
  const Problem own = [&] {
    Problem p;
    p.table = mine;
    return p;
  }();
  const auto all_rows = reference_lookup(own, ids, DType::f32);
  EXPECT_EQ(0, std::memcmp(whole.data(), all_rows.data(), all_rows.size()));
  alone.scatter_dim = 2;
  expect_error<InvalidArgumentError>(
      [&] {
        embedding(ids_view, mine.view(), TensorView(whole.data(), DType::f32, {2, tp + 1, 4}),
                  alone, &world());
      },
      "scatter_dim 2 is outside the ids' 2 dimensions");
}

// fail_forward takes its part in the chunk check (scattered input), even with the checks off.
TEST(ScatteredErrors, FailForwardJoinsTheChunkCheck) {
  const HostTable table = rank_table();
  EmbeddingConfig config = scattered_config(TokenLayout::scattered);
  config.collective_checks = false;
  ParallelEmbedding layer(world(), weight_only(table), config);
  const std::int64_t ids[2] = {0, 1};
  expect_error_everywhere<InvalidArgumentError>(
      [&] {
        if (world().rank() == 1) {
          layer.fail_forward(
              std::make_exception_ptr(InvalidArgumentError("no tensor for these ids")));
        } else {
          layer.forward(TensorView(ids, DType::i64, {2}));
        }
      },
      "rank 1: no tensor for these ids");
}

}  // namespace
}  // namespace tpembed::testing

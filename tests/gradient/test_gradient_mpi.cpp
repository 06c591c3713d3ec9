// The backward over real MPI ranks (mpirun -np 2, 3, 4): every rank holds a shard of one table
// (vocab rows or hidden columns, uneven or the seed's equal shards) and the same replicated
// grad_out; its ParallelEmbedding::backward must equal its slice of the unsharded gradient, bit for
// bit, so that the shards side by side are the unsharded gradient. Also: the ignored id, bad ids,
// accumulation, scaled tables, a hidden shard given only its columns, and a rank whose arguments
// are wrong failing every rank of the group.
//
// Built twice: host tables (test_gradient_mpi) and every rank's shard on the one GPU, ranks
// sharing it (test_gradient_mpi_gpu).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <sstream>

#include "device_tables.hpp"
#include "expect_error.hpp"
#include "gradient_reference.hpp"
#include "on_gpu.hpp"

namespace tpembed::testing {
namespace {

Communicator& world() {
  static std::unique_ptr<Communicator> mpi = make_mpi_communicator();
  return *mpi;
}

struct ShardCase {
  int sharding_dim;
  ShardPlacement placement;
  DType table;  // the table's (and gradient's) dtype
  bool scaled;
  bool accumulate;
  bool column_slice;  // dim 1: grad_out holds only this rank's columns
  std::int64_t vocab = 203;
  std::int64_t hidden = 40;
};

std::string case_name(const ::testing::TestParamInfo<ShardCase>& info) {
  const ShardCase& c = info.param;
  std::ostringstream name;
  name << "dim" << c.sharding_dim << (c.placement == ShardPlacement::equal ? "_equal_" : "_packed_")
       << dtype_name(c.table) << (c.scaled ? "_scaled" : "") << (c.accumulate ? "_acc" : "_over")
       << (c.column_slice ? "_slice" : "") << "_V" << c.vocab << "_H" << c.hidden;
  return name.str();
}

// Uneven shards (quadratic cut points, the first possibly empty) or the seed's equal ones.
std::vector<std::int64_t> shard_offsets(std::int64_t total, int tp, ShardPlacement placement) {
  std::vector<std::int64_t> offsets(tp + 1, 0);
  for (int t = 0; t <= tp; ++t) {
    offsets[t] = placement == ShardPlacement::equal ? std::min(total, t * ((total + tp - 1) / tp))
                                                    : total * t * t / (tp * tp);
  }
  if (placement == ShardPlacement::equal) offsets[tp] = tp * ((total + tp - 1) / tp);  // zero-padded vocab
  return offsets;
}

// Ids with a hot row (several chunks), shard edges, the ignored id and bad ids; the same on every rank.
std::vector<std::int64_t> test_ids(std::int64_t vocab, const std::vector<std::int64_t>& edges) {
  constexpr std::int64_t kIgnored = 5;
  std::mt19937_64 rng(42);
  auto in_range = [&](std::int64_t id) { return id >= 0 && id < vocab && id != kIgnored; };
  std::vector<std::int64_t> ids(300, vocab / 2 == kIgnored ? 0 : vocab / 2);  // a row of ten chunks
  for (int i = 0; i < 700; ++i) {
    const std::int64_t id = static_cast<std::int64_t>(rng() % vocab);
    ids.push_back(in_range(id) ? id : 0);
  }
  for (std::int64_t edge : edges) {
    for (std::int64_t id : {edge - 1, edge, edge + 1}) {
      if (in_range(id)) ids.insert(ids.end(), 5, id);
    }
  }
  // 11 ignored and 33 out of range.
  for (std::int64_t id : {std::int64_t{-1}, vocab, vocab + 7, kIgnored}) ids.insert(ids.end(), 11, id);
  std::shuffle(ids.begin(), ids.end(), rng);
  return ids;
}

class GradientMpi : public ::testing::TestWithParam<ShardCase> {};

TEST_P(GradientMpi, ShardsSideBySideAreTheUnshardedGradient) {
  const int tp = world().size(), rank = world().rank();
  ShardCase c = GetParam();
  // The seed's equal hidden shards need H divisible by tp (uneven H is what packed placement is for).
  if (c.sharding_dim == 1 && c.placement == ShardPlacement::equal) c.hidden -= c.hidden % tp;
  const std::int64_t total = c.sharding_dim == 0 ? c.vocab : c.hidden;
  const std::vector<std::int64_t> offsets = shard_offsets(total, tp, c.placement);
  const std::int64_t first = offsets[rank], size = offsets[rank + 1] - offsets[rank];

  // The whole problem, the same on every rank.
  const std::vector<std::int64_t> ids = test_ids(c.vocab, offsets);
  const std::int64_t n = static_cast<std::int64_t>(ids.size());
  GradientProblem whole = random_gradient_problem(ids, c.vocab, c.hidden, DType::bf16, c.table, 9);
  whole.accumulate = c.accumulate;
  whole.ignored_id = 5;
  const std::int64_t padded_vocab = c.sharding_dim == 0 ? offsets[tp] : c.vocab;
  const HostTable table = random_table(c.table, padded_vocab, c.hidden, 3);
  std::optional<HostTable> scale;
  if (c.scaled) scale = random_scales(DType::f32, padded_vocab, 4);
  if (c.scaled) whole.scale = scale->slice_rows(0, c.vocab);
  const GradientResult expected = documented_gradient(whole);

  // This rank's shard and its slice of everything.
  EmbeddingShard shard;
  HostTable weight = c.sharding_dim == 0 ? table.slice_rows(first, size) : table.slice_cols(first, size);
  std::optional<HostTable> shard_scale;
  if (scale) shard_scale = c.sharding_dim == 0 ? scale->slice_rows(first, size) : *scale;
  shard.weight = weight.view();
  if (shard_scale) shard.scale = shard_scale->view();
  HostTable initial = c.sharding_dim == 0 ? whole.initial.slice_rows(first, size) : whole.initial.slice_cols(first, size);
  HostTable want = c.sharding_dim == 0 ? expected.grad.slice_rows(first, size) : expected.grad.slice_cols(first, size);
  HostTable grad_out = c.column_slice ? whole.grad_out.slice_cols(first, size) : whole.grad_out;

  EmbeddingConfig config;
  config.tp_size = tp;
  config.sharding_dim = c.sharding_dim;
  config.placement = c.placement;
  if (c.placement == ShardPlacement::equal && c.sharding_dim == 0) config.vocab_size = c.vocab;
  if (kOnGpu) shard = upload_shard(shard);
  ParallelEmbedding layer(world(), shard, config);
  std::vector<std::uint8_t> id_bytes;
  const TensorView host_ids = ids_view(whole, id_bytes);
  BackwardOptions options;
  options.accumulate = c.accumulate;
  options.ignored_id = 5;
  const std::vector<std::int64_t> out_shape{n, grad_out.cols};
  if (!kOnGpu) {
    layer.backward(host_ids, TensorView(grad_out.bytes.data(), DType::bf16, out_shape), initial.view(), nullptr, options);
  } else {
    const DeviceCopy d_ids = upload_bytes(id_bytes, whole.id_dtype, {n}), d_out = upload(grad_out), d_grad = upload(initial);
    layer.backward(d_ids.view, d_out.view, d_grad.view, nullptr, options);
    initial.bytes = download(d_grad.view.data, initial.bytes.size());
  }
  GradientResult actual{initial, HostTable(c.table, 0, size), layer.last_gradient_counts()};
  GradientResult slice{want, HostTable(c.table, 0, size), actual.counts};
  EXPECT_EQ(bit_difference(actual, slice), "") << "rank " << rank << " (shard at " << first << ", size " << size << ")";
  // Every position is counted once: its own rows' as accumulated (vocab shards: the ids in its
  // range; hidden shards: every id in range), others' as unowned, id 5 as ignored, bad ids out of range.
  std::uint64_t mine = 0, others = 0;
  for (std::int64_t id : ids) {
    if (id == 5 || id < 0 || id >= c.vocab) continue;
    const bool own = c.sharding_dim == 1 || (id >= first && id < first + size);
    ++(own ? mine : others);
  }
  EXPECT_EQ(actual.counts.accumulated, mine) << "rank " << rank;
  EXPECT_EQ(actual.counts.unowned, others) << "rank " << rank;
  EXPECT_EQ(actual.counts.ignored, 11u);
  EXPECT_EQ(actual.counts.out_of_range, 33u);
  EXPECT_EQ(actual.counts.accumulated + actual.counts.unowned + actual.counts.out_of_range + actual.counts.ignored,
            static_cast<std::uint64_t>(n));
}

std::vector<ShardCase> shard_cases() {
  std::vector<ShardCase> cases;
  for (int dim : {0, 1}) {
    for (ShardPlacement placement : {ShardPlacement::packed, ShardPlacement::equal}) {
      cases.push_back({dim, placement, DType::f32, false, false, false});
      cases.push_back({dim, placement, DType::bf16, true, true, false});
    }
  }
  cases.push_back({1, ShardPlacement::packed, DType::f32, true, false, true});
  cases.push_back({1, ShardPlacement::packed, DType::f16, false, true, true, 64, 7});
  cases.push_back({0, ShardPlacement::packed, DType::f32, false, true, false, 6, 3});  // fewer rows than some ranks
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Shards, GradientMpi, ::testing::ValuesIn(shard_cases()), case_name);

// A layer over one shard cut from `table` (rows or columns [first, first + size)), on the GPU in
// the GPU build; backward() runs it on host tensors, uploaded first in the GPU build.
struct ErrorLayer {
  HostTable weight;
  ParallelEmbedding layer;
  ErrorLayer(const HostTable& table, int sharding_dim, std::int64_t first, std::int64_t size)
      : weight(sharding_dim == 0 ? table.slice_rows(first, size) : table.slice_cols(first, size)),
        layer(world(), shard(weight), config(sharding_dim)) {}
  void backward(const std::vector<std::int64_t>& ids, const HostTable& grad_out, const HostTable& grad) {
    const std::vector<std::uint8_t> id_bytes = encode_ids(ids, DType::i64);
    const std::int64_t n = static_cast<std::int64_t>(ids.size());
    if (!kOnGpu) {
      layer.backward(TensorView(id_bytes.data(), DType::i64, {n}), grad_out.view(), grad.view());
      return;
    }
    const DeviceCopy d_ids = upload_bytes(id_bytes, DType::i64, {n}), d_out = upload(grad_out), d_grad = upload(grad);
    layer.backward(d_ids.view, d_out.view, d_grad.view);
  }
  static EmbeddingShard shard(const HostTable& weight) {
    EmbeddingShard s;
    s.weight = weight.view();
    return kOnGpu ? upload_shard(s) : s;
  }
  static EmbeddingConfig config(int sharding_dim) {
    EmbeddingConfig c;
    c.tp_size = world().size();
    c.sharding_dim = sharding_dim;
    c.placement = ShardPlacement::equal;
    return c;
  }
};

TEST(GradientMpiErrors, OneRanksBadGradientFailsEveryRank) {
  const int tp = world().size(), rank = world().rank();
  ErrorLayer layer(random_table(DType::f32, 8 * tp, 4, 1), 0, rank * 8, 8);
  // The last rank passes a gradient of the wrong shape; the others' are right, and all must fail.
  const HostTable grad_out(DType::f32, 3, 4), grad(DType::f32, rank == tp - 1 ? 7 : 8, 4);
  expect_error<ShapeError>([&] { layer.backward({1, 2, 3}, grad_out, grad); },
                           "grad_weight has shape [7, 4] but this rank's shard is [8, 4]");
}

TEST(GradientMpiErrors, HiddenShardGivenAGradientOfNeitherWidth) {
  const int tp = world().size(), rank = world().rank();
  ErrorLayer layer(random_table(DType::f32, 6, 4 * tp, 1), 1, rank * 4, 4);
  const HostTable grad_out(DType::f32, 2, 4 * tp - 1), grad(DType::f32, 6, 4);  // neither H nor this rank's 4
  expect_error<ShapeError>([&] { layer.backward({1, 2}, grad_out, grad); }, "a hidden shard takes the whole gradient's");
}

TEST(GradientMpiErrors, RanksThatPassOtherIdsFailTogether) {
  const int tp = world().size(), rank = world().rank();
  ErrorLayer layer(random_table(DType::f32, 8 * tp, 4, 1), 0, rank * 8, 8);
  const HostTable grad(DType::f32, 8, 4);
  // The last rank's ids differ (same count): every rank must refuse, none may return a gradient.
  const std::vector<std::int64_t> ids = rank == tp - 1 ? std::vector<std::int64_t>{1, 2, 4} : std::vector<std::int64_t>{1, 2, 3};
  expect_error<InvalidArgumentError>([&] { layer.backward(ids, HostTable(DType::f32, 3, 4), grad); },
                                     "up other ids than rank 0");
  // Another count on the last rank.
  const std::vector<std::int64_t> fewer = rank == tp - 1 ? std::vector<std::int64_t>{1} : std::vector<std::int64_t>{1, 2};
  expect_error<ShapeError>(
      [&] { layer.backward(fewer, HostTable(DType::f32, static_cast<std::int64_t>(fewer.size()), 4), grad); },
      "every rank of the group must pass the same ids");
}

}  // namespace
}  // namespace tpembed::testing

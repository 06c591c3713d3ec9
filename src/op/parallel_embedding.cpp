// ParallelEmbedding: group set-up with cross-rank checks, then forward = local lookup + collective
// + layout.
#include "tpembed/parallel_embedding.hpp"

#include <algorithm>
#include <cstring>
#include <functional>
#include <numeric>
#include <optional>

#include "op/checks.hpp"
#include "tpembed/lookup.hpp"

namespace tpembed {

struct ParallelEmbedding::Impl {
  EmbeddingShard shard;
  EmbeddingConfig config;
  ShardLayout layout;
  std::unique_ptr<Communicator> group;
  std::vector<int> tp_rank_of_member;  // tp_rank of each group rank
  std::vector<std::uint8_t> gather_buffer;  // sharding_dim 1: the all-gather's landing area
  std::uint64_t last_bad_id_count = 0;

  void setup(Communicator& comm);
  void forward(const TensorView& ids, const TensorView& out);
  LookupParams lookup_params(const TensorView& ids, void* out, std::int64_t out_row_stride) const;
};

namespace {

// Runs a step whose failure must be agreed across ranks before anyone throws.
std::exception_ptr run_caught(const std::function<void()>& step) {
  try {
    step();
  } catch (...) {
    return std::current_exception();
  }
  return nullptr;
}

}  // namespace

void ParallelEmbedding::Impl::setup(Communicator& comm) {
  DType out_dtype = DType::f32;
  std::vector<int> members;
  std::exception_ptr local_error = run_caught([&] {
    out_dtype = op::check_local_shard(shard, config);
    if (config.tp_size == 1) return;
    if (config.tp_group.empty()) {
      TPEMBED_EXPECTS(comm.size() == config.tp_size, InvalidArgumentError, "tp_size ",
                      config.tp_size, " but the communicator has ", comm.size(),
                      " ranks: pass tp_group to name this rank's group");
      members.resize(comm.size());
      std::iota(members.begin(), members.end(), 0);
    } else {
      members = config.tp_group;
    }
  });
  if (config.tp_size == 1) {
    // Nothing to agree on: the rank works alone.
    if (local_error) std::rethrow_exception(local_error);
    group = make_single_communicator();
  } else {
    agree_or_throw(comm, local_error);
    group = comm.split(members);
  }

  const int my_tp_rank = config.tp_rank ? *config.tp_rank : group->rank();
  const op::ShardDescription mine = op::describe_shard(shard, config, my_tp_rank, out_dtype);
  std::vector<op::ShardDescription> all(group->size());
  group->all_gather(&mine, all.data(), sizeof mine, DType::i8);
  layout = op::plan_layout(all, group->rank());
  for (const auto& description : all) tp_rank_of_member.push_back(description.tp_rank);
}

LookupParams ParallelEmbedding::Impl::lookup_params(const TensorView& ids, void* out,
                                                    std::int64_t out_row_stride) const {
  LookupParams p;
  p.table = shard.weight.data;
  p.table_dtype = shard.weight.dtype;
  p.table_rows = shard.weight.shape[0];
  p.cols = shard.weight.shape[1];
  p.table_row_bytes = row_bytes(p.table_dtype, p.cols);
  p.scale = shard.scale.data;
  p.scale_dtype = shard.scale.absent() ? DType::f32 : shard.scale.dtype;
  if (!shard.padding.absent() && layout.padding_rows > 0) {
    p.padding = shard.padding.data;
    p.padding_rows = layout.padding_rows;
    p.padding_scale = shard.padding_scale.data;
  }
  p.row_offset = layout.sharding_dim == 0 ? layout.offsets[layout.tp_rank] : 0;
  p.valid_ids = layout.valid_ids();
  p.ids = ids.data;
  p.id_dtype = ids.dtype;
  p.num_ids = ids.numel();
  p.out = out;
  p.out_dtype = layout.out_dtype;
  p.out_row_stride = out_row_stride;
  return p;
}

void ParallelEmbedding::Impl::forward(const TensorView& ids, const TensorView& out) {
  const int tp = layout.tp_size;
  std::exception_ptr local_error = run_caught([&] {
    op::check_ids(ids, shard.weight.device);
    op::check_out(out, ids, layout.global_cols, layout.out_dtype, shard.weight.device);
  });
  const std::int64_t num_ids = local_error ? -1 : ids.numel();
  if (tp > 1) {
    // A rank with bad arguments, or with a different number of ids, must not leave the others
    // waiting in the collective below.
    agree_or_throw(*group, local_error);
    std::vector<std::int64_t> counts(tp);
    group->all_gather(&num_ids, counts.data(), 1, DType::i64);
    for (int r = 1; r < tp; ++r) {
      TPEMBED_EXPECTS(counts[r] == counts[0], ShapeError, "rank ", r, " of the tp group looks up ",
                      counts[r], " ids but rank 0 looks up ", counts[0],
                      ": every rank of the group must pass the same ids");
    }
  } else if (local_error) {
    std::rethrow_exception(local_error);
  }

  unsigned long long bad = 0;
  const std::int64_t cols = shard.weight.shape[1];
  const std::int64_t out_elements = num_ids * layout.global_cols;
  if (layout.sharding_dim == 0 || tp == 1) {
    // The masked lookup writes straight into out; the sum then completes it in place.
    LookupParams p = lookup_params(ids, out.mutable_data(), cols);
    p.bad_id_count = &bad;
    p.unowned_negative_zero = tp > 1;  // keeps -0.0 rows exact through the sum
    lookup_cpu(p);
    if (tp > 1) group->all_reduce_sum(out.data, out.mutable_data(), out_elements, layout.out_dtype);
  } else {
    // Each rank writes its columns into its own block of the gather buffer ([tp][ids][widest]),
    // the blocks are gathered, then laid out as [ids, H] in tp_rank order.
    const std::int64_t widest = *std::max_element(layout.sizes.begin(), layout.sizes.end());
    const std::int64_t block_bytes = row_bytes(layout.out_dtype, widest) * num_ids;
    gather_buffer.resize(static_cast<std::size_t>(block_bytes * tp));
    std::uint8_t* blocks = gather_buffer.data();
    LookupParams p = lookup_params(ids, blocks + group->rank() * block_bytes, widest);
    p.bad_id_count = &bad;
    lookup_cpu(p);
    group->all_gather(blocks + group->rank() * block_bytes, blocks, block_bytes, DType::i8);
    auto* dst = static_cast<std::uint8_t*>(out.mutable_data());
    const std::int64_t out_row = row_bytes(layout.out_dtype, layout.global_cols);
    for (int member = 0; member < tp; ++member) {
      const int t = tp_rank_of_member[member];
      const std::int64_t piece = row_bytes(layout.out_dtype, layout.sizes[t]);
      const std::int64_t start = row_bytes(layout.out_dtype, layout.offsets[t]);
      const std::uint8_t* block = blocks + member * block_bytes;
      if (piece == 0) continue;
      for (std::int64_t i = 0; i < num_ids; ++i) {
        std::memcpy(dst + i * out_row + start, block + i * row_bytes(layout.out_dtype, widest),
                    static_cast<std::size_t>(piece));
      }
    }
  }
  last_bad_id_count = bad;

  if (config.strict) {
    std::exception_ptr strict_error;
    if (bad > 0) {
      const std::int64_t position =
          find_first_bad_id(ids.data, ids.dtype, num_ids, layout.valid_ids());
      strict_error = std::make_exception_ptr(op::out_of_range_error(
          ids, position, static_cast<std::int64_t>(bad), layout.valid_ids()));
    }
    if (tp > 1) {
      agree_or_throw(*group, strict_error);
    } else if (strict_error) {
      std::rethrow_exception(strict_error);
    }
  }
}

ParallelEmbedding::ParallelEmbedding(Communicator& comm, EmbeddingShard shard,
                                     const EmbeddingConfig& config)
    : impl_(std::make_unique<Impl>()) {
  impl_->shard = std::move(shard);
  impl_->config = config;
  impl_->setup(comm);
}

ParallelEmbedding::~ParallelEmbedding() = default;
ParallelEmbedding::ParallelEmbedding(ParallelEmbedding&&) noexcept = default;
ParallelEmbedding& ParallelEmbedding::operator=(ParallelEmbedding&&) noexcept = default;

Tensor ParallelEmbedding::forward(const TensorView& ids) {
  std::vector<std::int64_t> shape = ids.shape;
  shape.push_back(impl_->layout.global_cols);
  // Bad extents are reported (on every rank) by forward's checks, not by the allocation.
  const bool negative = std::any_of(shape.begin(), shape.end(), [](std::int64_t e) { return e < 0; });
  Tensor out(impl_->layout.out_dtype, negative ? std::vector<std::int64_t>{0} : shape);
  forward(ids, out.view());
  return out;
}

void ParallelEmbedding::forward(const TensorView& ids, const TensorView& out) {
  impl_->forward(ids, out);
}

const ShardLayout& ParallelEmbedding::layout() const { return impl_->layout; }
Communicator& ParallelEmbedding::group() { return *impl_->group; }
std::uint64_t ParallelEmbedding::last_bad_id_count() const { return impl_->last_bad_id_count; }

}  // namespace tpembed

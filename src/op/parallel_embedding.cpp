// ParallelEmbedding: group set-up with cross-rank checks, then forward = local lookup + collective
// + layout.
#include "tpembed/parallel_embedding.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <functional>
#include <optional>

#include "op/agreement.hpp"
#include "op/checks.hpp"
#include "op/gradient.hpp"
#include "op/owned_rows.hpp"
#include "op/peer_tables.hpp"
#include "op/place.hpp"
#include "op/scattered.hpp"
#include "tpembed/lookup.hpp"

namespace tpembed {

struct ParallelEmbedding::Impl {
  EmbeddingShard shard;
  EmbeddingConfig config;
  ShardLayout layout;
  std::unique_ptr<Communicator> group;
  std::vector<int> tp_rank_of_member;  // tp_rank of each group rank
  op::Workspace workspace;             // gather blocks, staging, the device bad-id counter
  // peer_rows: the peers' tables mapped here. Declared after `group` (its destructor's barrier
  // needs the group) so that it goes first.
  std::unique_ptr<op::PeerTables> peer_tables;
  unsigned long long host_bad_id_slots[3] = {0, 0, 0};  // LookupParams::bad_id_slots for host tables
  unsigned long long host_gradient_counts[4] = {0, 0, 0, 0};  // GradientParams::counts for host tables
  void* last_stream = nullptr;  // the stream the last forward queued its work on
  void* last_backward_stream = nullptr;
  bool backward_counted = false;  // a backward has stored its counts
  // Set while a thread is inside forward() of a tp > 1 layer: a second thread would interleave its
  // collectives with the first's (other ranks would pair them up wrongly), so it is refused.
  std::atomic<bool> in_forward{false};

  // Marks a forward of a tp > 1 layer as running for its scope; throws when one already is.
  class ForwardEntry {
   public:
    ForwardEntry(Impl& impl, const char* call) : flag_(impl.layout.tp_size > 1 ? &impl.in_forward : nullptr) {
      if (flag_ != nullptr && flag_->exchange(true, std::memory_order_acquire)) {
        flag_ = nullptr;
        throw InvalidArgumentError(detail::concat(
            call, ": another thread is inside forward() or backward() of this tensor-parallel layer; a layer "
                  "runs one call at a time (its collectives must pair up across ranks): use one layer per thread"));
      }
    }
    ~ForwardEntry() {
      if (flag_ != nullptr) flag_->store(false, std::memory_order_release);
    }
    ForwardEntry(const ForwardEntry&) = delete;
    ForwardEntry& operator=(const ForwardEntry&) = delete;

   private:
    std::atomic<bool>* flag_;
  };
  void check_forward_across_group(std::exception_ptr local_error, const TensorView& ids, op::Place& place);
  void reserve_workspace(std::int64_t num_ids, op::Place& place);
  // Bytes of one member's block of the hidden all-gather ([ids][widest shard] of the output dtype).
  std::int64_t hidden_block_bytes(std::int64_t num_ids) const {
    const std::int64_t widest = *std::max_element(layout.sizes.begin(), layout.sizes.end());
    return row_bytes(layout.out_dtype, widest) * num_ids;
  }

  bool on_gpu() const { return shard.weight.device.kind == DeviceKind::cuda; }
  // Scattered token layouts over several ranks (op/scattered.hpp); with tp 1 they are replicated.
  bool scattered() const { return layout.output_layout == TokenLayout::scattered && layout.tp_size > 1; }
  // Scattered input whose exchange needs the group's whole ids shape (all but peer_rows' forward):
  // the chunk shapes are gathered even with collective_checks off.
  bool gathers_chunk_shapes(bool backward) const {
    return scattered() && layout.input_layout == TokenLayout::scattered &&
           (backward || config.collective_checks || !(layout.sharding_dim == 0 && peer_tables != nullptr));
  }
  op::ScatterContext scatter_context(op::Place& place) {
    return {shard, layout, *group, workspace, place, peer_tables.get()};
  }
  // Tokens of the group a scattered call may see, before the chunk shapes are agreed (scattered
  // input: chunks differ by at most one along scatter_dim).
  std::int64_t scattered_token_bound(const TensorView& ids) const;
  op::ScatterPlan scatter_plan(std::exception_ptr local_error, const TensorView& ids, op::Place& place, bool backward);
  void setup(Communicator& comm);
  void forward(const TensorView& ids, const TensorView& out, void* stream);
  void backward(const TensorView& ids, const TensorView& grad_out, const TensorView& grad_weight, void* stream,
                const BackwardOptions& options);
  GradientParams gradient_params(const TensorView& ids, const TensorView& grad_out, const TensorView& grad_weight,
                                 const BackwardOptions& options) const;
  void exchange_owned_rows(const TensorView& ids, const TensorView& out, op::Place& place,
                           unsigned long long* counter, void* stream);
  OutOfRangeError first_bad_id_error(const TensorView& ids, std::uint64_t bad, op::Place& place) const;
  LookupParams lookup_params(const TensorView& ids, void* out, std::int64_t out_row_stride) const;
  std::uint64_t bad_id_count(void* stream) const;
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
  // Every rank of the communicator says what it holds and which group it joins in one collective
  // (with its local error, if any), and every rank checks every group from the same records: a
  // mismatch anywhere, or a rank of tp_size 1 among ranks that wait for it, raises the same error on
  // every rank before anyone waits in a collective the others will not join.
  std::vector<int> members;
  op::SetupFacts mine{};
  std::exception_ptr local_error = run_caught([&] {
    const DType out_dtype = op::check_local_shard(shard, config);
    members = op::group_members(config, comm.rank(), comm.size());
    const int position = static_cast<int>(std::find(members.begin(), members.end(), comm.rank()) - members.begin());
    const int my_tp_rank = config.tp_rank ? *config.tp_rank : position;
    mine = op::describe_setup(op::describe_shard(shard, config, my_tp_rank, out_dtype), config, members, comm.rank());
  });
  std::vector<op::SetupFacts> all(static_cast<std::size_t>(comm.size()));
  if (comm.size() == 1) {
    if (local_error) std::rethrow_exception(local_error);
    all[0] = mine;
  } else {
    try {
      agree_or_throw(comm, local_error, &mine, sizeof mine, all.data());
    } catch (const CommunicatorError& error) {
      // A rank that never came (the MPI engine's timeout): say what it should have done.
      throw CommunicatorError(detail::concat(
          "ParallelEmbedding set-up: ", error.what(),
          " (every rank of the communicator constructs the layer, ranks of tp_size 1 too, over a "
          "communicator made from the same one)"));
    }
  }
  op::SetupPlan plan = op::plan_setup(all, comm.rank());
  layout = std::move(plan.layout);
  tp_rank_of_member = std::move(plan.tp_rank_of_member);
  // The split is collective over the communicator: ranks of tp_size 1 join it when any rank needs it.
  std::unique_ptr<Communicator> split = plan.any_group ? comm.split(members) : nullptr;
  group = config.tp_size > 1 ? std::move(split) : make_single_communicator();

  // The device counter exists before the first forward, so that one can be graph-captured. It is
  // made before the peer tables, whose set-up must be the last step that can fail: a rank failing
  // after it would run its collective destructor while the others went on.
  if (on_gpu()) {
    agree_or_throw(*group, run_caught([&] {
      op::Place place(shard.weight.device, nullptr);
      workspace.device_counter(place);
    }));
  }
  layout.vocab_exchange = VocabExchange::all_reduce;
  if (layout.sharding_dim == 0 && layout.tp_size > 1) {
    const VocabExchange wanted = config.vocab_exchange;
    if (wanted == VocabExchange::peer_rows) {
      // Collective; every rank reaches the same verdict (config.vocab_exchange is agreed above).
      // Only when asked for: it makes the destructor collective, which `automatic` must not impose.
      peer_tables = op::PeerTables::connect(*group, shard, layout, tp_rank_of_member);
    }
    layout.vocab_exchange = wanted != VocabExchange::automatic ? wanted
                            : group->accepts_device_buffers()  ? VocabExchange::all_reduce
                                                               : VocabExchange::owned_rows;
  }
}

// One small collective in the common case: every member's error flag, id count and ids fingerprint.
// When some member failed, a second one (agree_or_throw) brings every failing rank's message.
void ParallelEmbedding::Impl::check_forward_across_group(std::exception_ptr local_error, const TensorView& ids,
                                                         op::Place& place) {
  std::vector<op::ForwardFacts> all;
  try {
    all = op::gather_forward_facts(*group, ids, local_error, place, workspace);
  } catch (const CommunicatorError& error) {
    throw CommunicatorError(detail::concat("forward: ", error.what(),
                                           " (every rank of the tp group calls forward(), or fail_forward(), "
                                           "for each forward, in the same order)"));
  }
  const bool any_failed =
      std::any_of(all.begin(), all.end(), [](const op::ForwardFacts& facts) { return facts.failed != 0; });
  if (any_failed) agree_or_throw(*group, local_error);  // throws on every rank
  op::check_forward_facts(all);
}

std::int64_t ParallelEmbedding::Impl::scattered_token_bound(const TensorView& ids) const {
  if (layout.input_layout == TokenLayout::replicated) return ids.numel();
  const auto d = static_cast<std::size_t>(layout.scatter_dim);
  if (d >= ids.shape.size()) return 0;
  std::int64_t others = 1;
  for (std::size_t k = 0; k < ids.shape.size(); ++k) others *= k == d ? 1 : ids.shape[k];
  return others * (ids.shape[d] + 1) * layout.tp_size;
}

// The scattered layouts' cross-rank check (replicated ids: the usual one; scattered input: every
// rank's chunk shape, which also gives the group's whole shape) and the plan of chunks.
op::ScatterPlan ParallelEmbedding::Impl::scatter_plan(std::exception_ptr local_error, const TensorView& ids,
                                                      op::Place& place, bool backward) {
  std::vector<std::int64_t> whole = ids.shape;
  if (gathers_chunk_shapes(backward)) {
    whole = op::agree_on_chunks(*group, ids, local_error, layout.scatter_dim, tp_rank_of_member);
  } else if (config.collective_checks && layout.input_layout == TokenLayout::replicated) {
    check_forward_across_group(local_error, ids, place);
  } else if (local_error) {
    std::rethrow_exception(local_error);
  }
  return op::plan_scatter(whole, layout.scatter_dim, tp_rank_of_member, group->rank());
}

// Grows, before the forward's check, every buffer that the exchange will ask for (its sizes, or for
// owned rows their bounds: each id has at most one owner), so that an allocation failing on one
// rank is agreed with the others instead of striking after they have entered the exchange.
void ParallelEmbedding::Impl::reserve_workspace(std::int64_t num_ids, op::Place& place) {
  using Scratch = op::Workspace::Scratch;
  const bool staged = !place.is_host() && !group->accepts_device_buffers();
  const auto bytes = [](std::int64_t count) { return static_cast<std::size_t>(count); };
  const std::int64_t out_bytes = num_ids * row_bytes(layout.out_dtype, layout.global_cols);
  if (layout.sharding_dim == 1) {
    const std::int64_t blocks = hidden_block_bytes(num_ids) * layout.tp_size;
    workspace.scratch(place, Scratch::gather_blocks, bytes(blocks));
    if (staged) workspace.host_stage(bytes(blocks));
  } else if (layout.vocab_exchange == VocabExchange::owned_rows) {
    if (!place.is_host()) {
      workspace.scratch(place, Scratch::exchange_ids, bytes(num_ids * 8));
      workspace.scratch(place, Scratch::exchange_positions, bytes(num_ids * 8));
    }
    workspace.scratch(place, Scratch::exchange_receive, bytes(out_bytes));
    if (staged) workspace.host_stage(bytes(out_bytes));
  } else if (peer_tables == nullptr && staged) {
    workspace.host_stage(bytes(out_bytes));
  }
}

LookupParams ParallelEmbedding::Impl::lookup_params(const TensorView& ids, void* out,
                                                    std::int64_t out_row_stride) const {
  return op::lookup_params(shard, layout, ids, out, out_row_stride);
}

void ParallelEmbedding::Impl::forward(const TensorView& ids, const TensorView& out, void* stream) {
  const int tp = layout.tp_size;
  const ForwardEntry entry(*this, "forward");
  op::Place place(shard.weight.device, stream);
  std::exception_ptr local_error = run_caught([&] {
    op::check_ids(ids, shard.weight.device);
    if (layout.output_layout == TokenLayout::scattered) {
      op::check_out(out, op::forward_out_shape(layout, ids), layout.out_dtype, shard.weight.device);
    } else {
      op::check_out(out, ids, layout.global_cols, layout.out_dtype, shard.weight.device);
    }
    if (scattered()) {
      op::reserve_scattered(scatter_context(place), scattered_token_bound(ids), false, layout.out_dtype);
    } else if (tp > 1) {
      reserve_workspace(ids.numel(), place);
    }
  });
  std::optional<op::ScatterPlan> plan;
  if (scattered()) {
    plan = scatter_plan(local_error, ids, place, false);
  } else if (tp > 1 && config.collective_checks) {
    // A rank with bad arguments, other ids or a different number of them must not leave the others
    // waiting in the exchange below, nor make them return rows of other ids: one collective
    // carries the error flag, the count and the ids' fingerprint of every rank.
    check_forward_across_group(local_error, ids, place);
  } else if (local_error) {
    std::rethrow_exception(local_error);
  }
  const std::int64_t num_ids = ids.numel();

  last_stream = stream;
  // Each lookup below stores its bad-id count in counter[0] (LookupParams::bad_id_slots): nothing to
  // reset per call, so a captured forward is the lookup (and exchange) alone.
  unsigned long long* counter = on_gpu() ? workspace.device_counter(place) : host_bad_id_slots;
  const std::int64_t cols = shard.weight.shape[1];
  const std::int64_t out_bytes = num_ids * row_bytes(layout.out_dtype, layout.global_cols);
  const DType bytes = DType::i8;  // collectives below move raw bytes unless they sum
  if (plan) {
    op::scattered_forward(scatter_context(place), *plan, ids, out, counter);
  } else if (layout.sharding_dim == 0 && tp > 1 && layout.vocab_exchange == VocabExchange::owned_rows) {
    exchange_owned_rows(ids, out, place, counter, stream);
  } else if (layout.sharding_dim == 0 || tp == 1) {
    // The lookup writes straight into out. With peer rows it reads every row from its owner's table
    // (peers' memory mapped here) and that is all; otherwise it is masked to this rank's rows and
    // the sum completes it in place.
    const bool sum = tp > 1 && peer_tables == nullptr;
    LookupParams p = lookup_params(ids, out.mutable_data(), cols);
    p.bad_id_slots = counter;
    if (peer_tables != nullptr) peer_tables->apply(p);
    p.unowned_negative_zero = sum;  // keeps -0.0 rows exact through the sum
    place.lookup(p);
    if (sum) {
      const std::int64_t elements = num_ids * layout.global_cols;
      if (place.is_host() || group->accepts_device_buffers()) {
        group->all_reduce_sum(out.data, out.mutable_data(), elements, layout.out_dtype, stream);
      } else {
        void* staged = workspace.host_stage(static_cast<std::size_t>(out_bytes));
        place.to_host(staged, out.data, static_cast<std::size_t>(out_bytes));
        group->all_reduce_sum(staged, staged, elements, layout.out_dtype);
        place.from_host(out.mutable_data(), staged, static_cast<std::size_t>(out_bytes));
        place.synchronize();  // the staging buffer is reused by the next call
      }
    }
  } else {
    // Each rank writes its columns into its own block of the gather buffer ([tp][ids][widest]),
    // the blocks are gathered, then laid out as [ids, H] in tp_rank order.
    const std::int64_t widest = *std::max_element(layout.sizes.begin(), layout.sizes.end());
    const std::int64_t widest_bytes = row_bytes(layout.out_dtype, widest);
    const std::int64_t block_bytes = hidden_block_bytes(num_ids);
    auto* blocks = static_cast<std::uint8_t*>(workspace.scratch(place, op::Workspace::Scratch::gather_blocks, static_cast<std::size_t>(block_bytes * tp)));
    std::uint8_t* own_block = blocks + group->rank() * block_bytes;
    LookupParams p = lookup_params(ids, own_block, widest);
    p.bad_id_slots = counter;
    place.lookup(p);
    if (place.is_host() || group->accepts_device_buffers()) {
      group->all_gather(own_block, blocks, block_bytes, bytes, stream);
    } else {
      auto* staged = static_cast<std::uint8_t*>(workspace.host_stage(static_cast<std::size_t>(block_bytes * tp)));
      place.to_host(staged + group->rank() * block_bytes, own_block, static_cast<std::size_t>(block_bytes));
      group->all_gather(staged + group->rank() * block_bytes, staged, block_bytes, bytes);
      place.from_host(blocks, staged, static_cast<std::size_t>(block_bytes * tp));
    }
    std::vector<LayoutPiece> pieces(static_cast<std::size_t>(tp));
    for (int member = 0; member < tp; ++member) {
      const int t = tp_rank_of_member[static_cast<std::size_t>(member)];
      pieces[static_cast<std::size_t>(member)] = {member * block_bytes, row_bytes(layout.out_dtype, layout.offsets[t]),
                                                  row_bytes(layout.out_dtype, layout.sizes[t])};
    }
    LayoutParams arrange;
    arrange.source = blocks;
    arrange.source_pitch = widest_bytes;
    arrange.out = out.mutable_data();
    arrange.out_pitch = row_bytes(layout.out_dtype, layout.global_cols);
    arrange.rows = num_ids;
    arrange.pieces = pieces.data();
    arrange.num_pieces = tp;
    place.layout_columns(arrange);
    if (!place.is_host() && !group->accepts_device_buffers()) place.synchronize();
  }

  if (config.strict) {
    // Strict mode reads the count once, after the lookup (a host synchronisation on a GPU).
    const std::uint64_t bad = bad_id_count(stream);
    std::exception_ptr strict_error;
    if (bad > 0) {
      strict_error = std::make_exception_ptr(first_bad_id_error(ids, bad, place));
    }
    if (tp > 1 && config.collective_checks) {
      agree_or_throw(*group, strict_error);
    } else if (strict_error) {
      std::rethrow_exception(strict_error);
    }
  }
}

// Each member looks up only the ids it owns (compacted, in token order), the members gather those
// rows (all_gather_v), and every member scatters them into token order. The scatter is the lookup
// again: the gathered rows are a table, and each token's position in it is its id (-1: bad id).
void ParallelEmbedding::Impl::exchange_owned_rows(const TensorView& ids, const TensorView& out, op::Place& place,
                                                  unsigned long long* counter, void* stream) {
  using Scratch = op::Workspace::Scratch;
  const std::int64_t num_ids = ids.numel();
  const std::int64_t row = row_bytes(layout.out_dtype, layout.global_cols);
  std::vector<std::uint8_t> host_ids;
  const void* ids_on_host = ids.data;
  if (!place.is_host()) {
    host_ids.resize(static_cast<std::size_t>(ids.nbytes()));
    place.to_host(host_ids.data(), ids.data, host_ids.size());
    ids_on_host = host_ids.data();
  }
  const op::OwnedRowsPlan plan =
      op::plan_owned_rows(ids_on_host, ids.dtype, num_ids, layout, tp_rank_of_member, group->rank());
  const int me = group->rank();
  const std::int64_t mine = plan.row_counts[static_cast<std::size_t>(me)];
  std::vector<std::int64_t> byte_counts(plan.row_counts.size()), first_byte(plan.row_counts.size(), 0);
  std::int64_t total_bytes = 0;
  for (std::size_t m = 0; m < plan.row_counts.size(); ++m) {
    byte_counts[m] = plan.row_counts[m] * row;
    first_byte[m] = total_bytes;
    total_bytes += byte_counts[m];
  }
  auto on_place = [&](Scratch kind, const std::vector<std::int64_t>& values) -> const void* {
    if (place.is_host()) return values.data();
    void* copy = workspace.scratch(place, kind, values.size() * sizeof(std::int64_t));
    place.from_host(copy, values.data(), values.size() * sizeof(std::int64_t));
    return copy;
  };

  // 1. This member's rows, compacted.
  auto* received = static_cast<std::uint8_t*>(workspace.scratch(place, Scratch::exchange_receive,
                                                                static_cast<std::size_t>(total_bytes)));
  std::uint8_t* own_rows = received + first_byte[static_cast<std::size_t>(me)];
  LookupParams compact = lookup_params(TensorView(on_place(Scratch::exchange_ids, plan.my_ids), DType::i64, {mine},
                                                  place.device()),
                                       own_rows, layout.global_cols);
  place.lookup(compact);

  // 2. Everyone's rows, in member order.
  if (place.is_host() || group->accepts_device_buffers()) {
    group->all_gather_v(own_rows, received, byte_counts, stream);
  } else {
    auto* staged = static_cast<std::uint8_t*>(workspace.host_stage(static_cast<std::size_t>(total_bytes)));
    std::uint8_t* own_staged = staged + first_byte[static_cast<std::size_t>(me)];
    place.to_host(own_staged, own_rows, static_cast<std::size_t>(mine * row));
    group->all_gather_v(own_staged, staged, byte_counts);
    place.from_host(received, staged, static_cast<std::size_t>(total_bytes));
  }

  // 3. Token order: a lookup in the gathered rows (same dtype, no scale: rows are copied bit for bit).
  LookupParams scatter;
  scatter.table = received;
  scatter.table_dtype = layout.out_dtype;
  scatter.table_rows = total_bytes / std::max<std::int64_t>(row, 1);
  scatter.cols = layout.global_cols;
  scatter.table_row_bytes = row;
  scatter.valid_ids = scatter.table_rows;
  scatter.ids = on_place(Scratch::exchange_positions, plan.positions);
  scatter.id_dtype = DType::i64;
  scatter.num_ids = num_ids;
  scatter.out = out.mutable_data();
  scatter.out_dtype = layout.out_dtype;
  scatter.out_row_stride = layout.global_cols;
  place.lookup(scatter);

  const unsigned long long bad = plan.bad_ids;
  place.from_host(counter, &bad, sizeof bad);
  place.synchronize();  // host buffers above (plan, staging, `bad`) are read by queued copies
}

// The backward's parameters for this rank's shard: a vocab shard's rows from its offset, a hidden
// shard's columns of the whole gradient (or the slice it was given), the table's scales.
GradientParams ParallelEmbedding::Impl::gradient_params(const TensorView& ids, const TensorView& grad_out,
                                                        const TensorView& grad_weight,
                                                        const BackwardOptions& options) const {
  TPEMBED_EXPECTS(!is_quantized(shard.weight.dtype), UnsupportedError, "backward: the table is ",
                  dtype_name(shard.weight.dtype),
                  ", and quantized tables have no gradient (they are for inference); train an f32, f16 or bf16 table");
  const std::vector<std::int64_t>& shard_shape = shard.weight.shape;
  TPEMBED_EXPECTS(grad_weight.shape == shard_shape, ShapeError, "backward: grad_weight has shape ",
                  detail::bracketed(grad_weight.shape), " but this rank's shard is ", detail::bracketed(shard_shape));
  TPEMBED_EXPECTS(grad_weight.device == shard.weight.device, InvalidArgumentError, "backward: grad_weight is on ",
                  device_name(grad_weight.device), " but the table is on ", device_name(shard.weight.device));
  // The padding rows ids can select (none with vocab sharding over several ranks, as in the forward).
  const std::int64_t padding_rows = layout.padding_rows;
  if (!options.grad_padding.absent()) {
    TPEMBED_EXPECTS(padding_rows > 0, InvalidArgumentError,
                    "backward: grad_padding is given but the layer has no padding rows that ids select");
    TPEMBED_EXPECTS(options.grad_padding.ndim() == 2 && options.grad_padding.shape[0] == padding_rows, ShapeError,
                    "backward: grad_padding has shape ", detail::bracketed(options.grad_padding.shape), " but the layer has ",
                    padding_rows, " padding rows of ", shard_shape[1], " columns");
  }
  GradientOptions o;
  o.valid_ids = layout.valid_ids();
  o.ignored_id = options.ignored_id;
  o.accumulate = options.accumulate;
  o.per_token_scale = shard.scale;
  if (!options.grad_padding.absent()) {
    o.grad_padding = options.grad_padding;
    o.padding_scale = shard.padding_scale;
  }
  const std::int64_t first = layout.offsets[static_cast<std::size_t>(layout.tp_rank)];
  if (layout.sharding_dim == 0) {
    o.row_offset = first;
  } else {
    // The whole gradient (every rank holds it) or this rank's columns of it; nothing in between.
    const std::int64_t width = grad_out.ndim() > 0 ? grad_out.shape.back() : -1;
    const std::int64_t cols = shard_shape[1];
    TPEMBED_EXPECTS(width == layout.global_cols || width == cols, ShapeError, "backward: grad_out has ", width,
                    " columns but a hidden shard takes the whole gradient's ", layout.global_cols,
                    " or its own ", cols);
    o.column_offset = width == layout.global_cols ? first : 0;
  }
  return op::gradient_params(ids, grad_out, grad_weight, o);
}

void ParallelEmbedding::Impl::backward(const TensorView& ids, const TensorView& grad_out, const TensorView& grad_weight,
                                       void* stream, const BackwardOptions& options) {
  using Scratch = op::Workspace::Scratch;
  const ForwardEntry entry(*this, "backward");  // one call at a time: the checks pair up across ranks
  op::Place place(shard.weight.device, stream);
  GradientParams p;
  std::exception_ptr local_error = run_caught([&] {
    if (scattered()) {
      // grad_out is this rank's chunk of the whole gradient; checked here against the chunk.
      const std::vector<std::int64_t> chunk = op::forward_out_shape(layout, ids);
      TPEMBED_EXPECTS(grad_out.shape == chunk, ShapeError, "backward: grad_out has shape ",
                      detail::bracketed(grad_out.shape), " but with the scattered layout it is this rank's chunk of ",
                      "the whole gradient, ", detail::bracketed(chunk));
      p = gradient_params(TensorView(ids.data, ids.dtype, {chunk.begin(), chunk.end() - 1}, ids.device), grad_out,
                          grad_weight, options);
      p.num_ids = scattered_token_bound(ids);
      op::reserve_scattered(scatter_context(place), p.num_ids, true, grad_out.dtype);
    } else {
      p = gradient_params(ids, grad_out, grad_weight, options);
    }
    if (!place.is_host()) {
      p.workspace_bytes = gradient_workspace_bytes_cuda(p.num_ids, p.rows, p.padding_rows, p.cols);
      p.workspace = workspace.scratch(place, Scratch::gradient, p.workspace_bytes);
      p.counts = static_cast<unsigned long long*>(workspace.scratch(place, Scratch::gradient_counts, 4 * 8));
    }
  });
  op::GatheredGradient whole;  // what p reads, when scattered: lives until the backward is queued
  if (scattered()) {
    // Every member's chunk of grad_out (and of the ids, when scattered) gathered in natural order,
    // then the local backward of the whole: the unsharded gradient's order, so its bits.
    const op::ScatterPlan plan = scatter_plan(local_error, ids, place, true);
    whole = op::gather_gradient(scatter_context(place), plan, ids, grad_out);
    GradientParams all = gradient_params(whole.ids, whole.grad_out, grad_weight, options);
    all.workspace = p.workspace;
    all.workspace_bytes = p.workspace_bytes;
    all.counts = p.counts;
    p = all;
  } else if (layout.tp_size > 1 && config.collective_checks) {
    // The same check as a forward's: every rank's argument error, and the same ids everywhere.
    check_forward_across_group(local_error, ids, place);
  } else if (local_error) {
    std::rethrow_exception(local_error);
  }
  if (place.is_host()) p.counts = host_gradient_counts;
  last_backward_stream = stream;
  place.backward(p);
  backward_counted = true;
}

std::uint64_t ParallelEmbedding::Impl::bad_id_count(void* stream) const {
  if (!on_gpu()) return host_bad_id_slots[0];
  unsigned long long count = 0;
  op::Place(shard.weight.device, stream).to_host(&count, workspace.device_counter_if_any(), sizeof count);
  return count;
}

OutOfRangeError ParallelEmbedding::Impl::first_bad_id_error(const TensorView& ids, std::uint64_t bad,
                                                            op::Place& place) const {
  // Find the first bad id on the host (ids on a GPU are copied back: this is the error path).
  std::vector<std::uint8_t> host_ids;
  TensorView host_view = ids;
  if (!place.is_host()) {
    host_ids.resize(static_cast<std::size_t>(ids.nbytes()));
    place.to_host(host_ids.data(), ids.data, host_ids.size());
    host_view = TensorView(host_ids.data(), ids.dtype, ids.shape);
  }
  const std::int64_t position = find_first_bad_id(host_view.data, host_view.dtype, host_view.numel(), layout.valid_ids());
  // Scattered: the count was that of this rank's chunk; the message counts the ids it names.
  if (scattered()) bad = op::count_bad_ids(host_view, layout.valid_ids());
  return op::out_of_range_error(host_view, position, static_cast<std::int64_t>(bad), layout.valid_ids());
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
  Tensor out;
  try {
    TPEMBED_EXPECTS(!impl_->on_gpu(), InvalidArgumentError, "the table is on ",
                    device_name(impl_->shard.weight.device),
                    ": forward(ids) returns a host tensor; pass an output tensor on that device");
    std::vector<std::int64_t> shape = op::forward_out_shape(impl_->layout, ids);
    // Bad extents are reported (on every rank) by forward's checks, not by the allocation.
    const bool negative = std::any_of(shape.begin(), shape.end(), [](std::int64_t e) { return e < 0; });
    out = Tensor(impl_->layout.out_dtype, negative ? std::vector<std::int64_t>{0} : shape);
  } catch (...) {
    // No output to look up into (a GPU table, or an allocation that failed): the others' check
    // learns of it instead of waiting for this rank.
    fail_forward(std::current_exception());
  }
  forward(ids, out.view());
  return out;
}

void ParallelEmbedding::forward(const TensorView& ids, const TensorView& out, void* stream) {
  impl_->forward(ids, out, stream);
}

void ParallelEmbedding::fail_forward(std::exception_ptr error) {
  if (!error) error = std::make_exception_ptr(InvalidArgumentError("fail_forward: no error given"));
  if (impl_->gathers_chunk_shapes(false)) {
    const Impl::ForwardEntry entry(*impl_, "fail_forward");
    op::agree_on_chunks(*impl_->group, TensorView(), error, impl_->layout.scatter_dim, impl_->tp_rank_of_member);
  } else if (impl_->layout.tp_size > 1 && impl_->config.collective_checks) {
    const Impl::ForwardEntry entry(*impl_, "fail_forward");
    op::Place place(impl_->shard.weight.device, nullptr);
    impl_->check_forward_across_group(error, TensorView(), place);  // throws: `error` reaches every rank
  }
  std::rethrow_exception(error);
}

void ParallelEmbedding::backward(const TensorView& ids, const TensorView& grad_out, const TensorView& grad_weight,
                                 void* stream, const BackwardOptions& options) {
  impl_->backward(ids, grad_out, grad_weight, stream, options);
}

GradientCounts ParallelEmbedding::last_gradient_counts() const {
  unsigned long long words[4] = {0, 0, 0, 0};
  if (impl_->backward_counted) {
    if (impl_->on_gpu()) {
      op::Place place(impl_->shard.weight.device, impl_->last_backward_stream);
      // The slot exists: the counted backward allocated it, and the size asked for is not larger.
      place.to_host(words, impl_->workspace.scratch(place, op::Workspace::Scratch::gradient_counts, 4 * 8), sizeof words);
    } else {
      std::copy(impl_->host_gradient_counts, impl_->host_gradient_counts + 4, words);
    }
  }
  return {words[0], words[1], words[2], words[3]};
}

std::vector<std::int64_t> ParallelEmbedding::output_shape(const TensorView& ids) const {
  return op::forward_out_shape(impl_->layout, ids);
}
const ShardLayout& ParallelEmbedding::layout() const { return impl_->layout; }
Communicator& ParallelEmbedding::group() { return *impl_->group; }
std::uint64_t ParallelEmbedding::last_bad_id_count() const { return impl_->bad_id_count(impl_->last_stream); }
const unsigned long long* ParallelEmbedding::bad_id_counter() const {
  return impl_->on_gpu() ? impl_->workspace.device_counter_if_any() : nullptr;
}

}  // namespace tpembed

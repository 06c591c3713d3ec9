#include "op/scattered.hpp"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <sstream>
#include <utility>

#include "core/ids.hpp"
#include "op/checks.hpp"
#include "op/peer_tables.hpp"
#include "tpembed/error.hpp"
#include "tpembed/sharding.hpp"

namespace tpembed {

const char* token_layout_name(TokenLayout layout) {
  return layout == TokenLayout::scattered ? "scattered" : "replicated";
}

TokenLayout token_layout_from_name(const std::string& name, const char* what) {
  if (name == "replicated") return TokenLayout::replicated;
  if (name == "scattered") return TokenLayout::scattered;
  throw InvalidArgumentError(
      detail::concat(what, " '", name, "' is neither 'replicated' nor 'scattered'"));
}

namespace op {

static_assert(sizeof(ChunkFacts) == 16 + 8 * kMaxScatteredDims,
              "ChunkFacts is exchanged as raw bytes, without padding");

namespace {

using Scratch = Workspace::Scratch;

std::size_t size_of(std::int64_t bytes) {
  return static_cast<std::size_t>(bytes);
}

std::int64_t product(const std::vector<std::int64_t>& shape, std::size_t first, std::size_t last) {
  std::int64_t p = 1;
  for (std::size_t k = first; k < last; ++k) p *= shape[k];
  return p;
}

// Bytes on `place` holding `values` (host: the values themselves; GPU: a copy in scratch `kind`).
const void* on_place(const ScatterContext& c, Scratch kind, const void* values, std::size_t bytes) {
  if (c.place.is_host()) return values;
  void* copy = c.workspace.scratch(c.place, kind, bytes);
  c.place.from_host(copy, values, bytes);
  return copy;
}

bool direct(const ScatterContext& c) {
  return c.place.is_host() || c.group.accepts_device_buffers();
}

std::vector<std::int64_t> times(const std::vector<std::int64_t>& counts, std::int64_t factor) {
  std::vector<std::int64_t> out(counts.size());
  for (std::size_t k = 0; k < counts.size(); ++k) out[k] = counts[k] * factor;
  return out;
}

std::int64_t sum(const std::vector<std::int64_t>& values) {
  return std::accumulate(values.begin(), values.end(), std::int64_t{0});
}

// all_gather_v of byte blocks on `place` (this rank's `send`, `counts[me]` bytes), staged through
// host memory for host-only engines.
void gather_v(const ScatterContext& c, const void* send, void* recv,
              const std::vector<std::int64_t>& counts) {
  const std::int64_t total = sum(counts);
  const std::int64_t mine = counts[static_cast<std::size_t>(c.group.rank())];
  if (direct(c)) {
    c.group.all_gather_v(send, recv, counts, c.place.stream());
    return;
  }
  auto* staged = static_cast<std::uint8_t*>(c.workspace.host_stage(size_of(total + mine)));
  std::uint8_t* own = staged + total;  // the send block apart from the gathered ones
  c.place.to_host(own, send, size_of(mine));
  c.group.all_gather_v(own, staged, counts);
  c.place.from_host(recv, staged, size_of(total));
  c.place.synchronize();  // the staging buffer is reused by the next call
}

// all_to_all_v of byte blocks on `place`, staged through host memory for host-only engines.
void exchange(const ScatterContext& c, const void* send,
              const std::vector<std::int64_t>& send_bytes, void* recv,
              const std::vector<std::int64_t>& recv_bytes) {
  if (direct(c)) {
    c.group.all_to_all_v(send, send_bytes, recv, recv_bytes, c.place.stream());
    return;
  }
  const std::int64_t sent = sum(send_bytes), received = sum(recv_bytes);
  auto* staged = static_cast<std::uint8_t*>(c.workspace.host_stage(size_of(sent + received)));
  c.place.to_host(staged, send, size_of(sent));
  c.group.all_to_all_v(staged, send_bytes, staged + sent, recv_bytes);
  c.place.from_host(recv, staged + sent, size_of(received));
  c.place.synchronize();
}

// Looks up the member-ordered ids (the whole group's) with `p` as the template into `out` (rows of
// `out_row_bytes`): the blocks of the other members uncounted, this rank's block counted in
// `counter` (so a rank's count is that of its own chunk).
void lookup_member_ids(const ScatterContext& c, const ScatterPlan& plan, LookupParams p,
                       const MemberIds& ids, std::uint8_t* out, std::int64_t out_row_bytes,
                       unsigned long long* counter) {
  const std::int64_t id_bytes = static_cast<std::int64_t>(element_size(ids.dtype));
  const std::int64_t first = plan.my_first(), mine = plan.my_tokens();
  const std::int64_t ranges[3][2] = {{0, first}, {first, first + mine}, {first + mine, plan.total}};
  p.id_dtype = ids.dtype;
  for (int r = 0; r < 3; ++r) {
    const std::int64_t begin = ranges[r][0], count = ranges[r][1] - ranges[r][0];
    if (count == 0 && r != 1) continue;  // this rank's block always runs: it stores the count
    p.ids = static_cast<const std::uint8_t*>(ids.data) + begin * id_bytes;
    p.num_ids = count;
    p.out = out + begin * out_row_bytes;
    p.bad_id_slots = r == 1 ? counter : nullptr;
    p.bad_id_count = nullptr;
    c.place.lookup(p);
  }
}

// The group member whose shard holds `id` (in range).
int owner_member(std::int64_t id, const ShardLayout& layout,
                 const std::vector<int>& member_of_tp_rank) {
  const auto next = std::upper_bound(layout.offsets.begin(), layout.offsets.end(), id);
  return member_of_tp_rank[static_cast<std::size_t>(next - layout.offsets.begin() - 1)];
}

// ---- the exchanges ------------------------------------------------------------------------------

// vocab, all_reduce: the masked lookup of every token, then a reduce-scatter straight into out.
void reduce_scatter_rows(const ScatterContext& c, const ScatterPlan& plan, const MemberIds& ids,
                         const TensorView& out, unsigned long long* counter) {
  const ShardLayout& layout = c.layout;
  const std::int64_t row = row_bytes(layout.out_dtype, layout.global_cols);
  auto* rows = static_cast<std::uint8_t*>(
      c.workspace.scratch(c.place, Scratch::scatter_rows, size_of(plan.total * row)));
  LookupParams p = lookup_params(c.shard, layout, TensorView(), nullptr, layout.global_cols);
  p.unowned_negative_zero = true;  // keeps -0.0 rows exact through the sum (lookup.hpp)
  lookup_member_ids(c, plan, p, ids, rows, row, counter);
  const std::vector<std::int64_t> counts = times(plan.member_tokens, layout.global_cols);
  if (direct(c)) {
    c.group.reduce_scatter_sum(rows, out.mutable_data(), counts, layout.out_dtype,
                               c.place.stream());
    return;
  }
  auto* staged = static_cast<std::uint8_t*>(c.workspace.host_stage(size_of(plan.total * row)));
  c.place.to_host(staged, rows, size_of(plan.total * row));
  std::uint8_t* own = staged + plan.my_first() * row;
  c.group.reduce_scatter_sum(staged, own, counts, layout.out_dtype);
  c.place.from_host(out.mutable_data(), own, size_of(plan.my_tokens() * row));
  c.place.synchronize();
}

// vocab, owned_rows: every owner looks up the ids it owns grouped by the member whose chunk holds
// them (member order keeps each member's block contiguous), one all-to-all, and each member puts
// the rows it received in chunk order with a lookup in them (positions; -1: a bad id, a zero row).
void exchange_owned_rows(const ScatterContext& c, const ScatterPlan& plan, const MemberIds& ids,
                         const TensorView& out, unsigned long long* counter) {
  const ShardLayout& layout = c.layout;
  const int tp = plan.tp, me = plan.me;
  const std::int64_t row = row_bytes(layout.out_dtype, layout.global_cols);
  std::vector<int> member_of_tp_rank(static_cast<std::size_t>(tp));
  for (int m = 0; m < tp; ++m)
    member_of_tp_rank[static_cast<std::size_t>(
        plan.tp_rank_of_member[static_cast<std::size_t>(m)])] = m;
  const void* host = ids.host_data;
  auto bad_id = [&](std::int64_t id) { return id < 0 || id >= layout.valid_ids(); };

  // What this rank sends: its ids, destination by destination (each destination's block in order).
  std::vector<std::int64_t> my_ids, send_rows(static_cast<std::size_t>(tp), 0);
  for (int m = 0; m < tp; ++m) {
    const std::int64_t first = plan.member_first[static_cast<std::size_t>(m)];
    for (std::int64_t k = first; k < first + plan.member_tokens[static_cast<std::size_t>(m)]; ++k) {
      const std::int64_t id = id_at(host, ids.dtype, k);
      if (bad_id(id) || owner_member(id, layout, member_of_tp_rank) != me) continue;
      my_ids.push_back(id);
      ++send_rows[static_cast<std::size_t>(m)];
    }
  }
  // What it receives: its chunk's rows from each owner, and each token's place among them.
  const std::int64_t mine = plan.my_tokens(), my_first = plan.my_first();
  std::vector<std::int64_t> recv_rows(static_cast<std::size_t>(tp), 0), owner(size_of(mine), -1),
      index(size_of(mine), 0), positions(size_of(mine), -1);
  unsigned long long bad = 0;
  for (std::int64_t j = 0; j < mine; ++j) {
    const std::int64_t id = id_at(host, ids.dtype, my_first + j);
    if (bad_id(id)) {
      ++bad;
      continue;
    }
    const int o = owner_member(id, layout, member_of_tp_rank);
    owner[size_of(j)] = o;
    index[size_of(j)] = recv_rows[static_cast<std::size_t>(o)]++;
  }
  std::vector<std::int64_t> recv_first(static_cast<std::size_t>(tp), 0);
  for (int m = 1; m < tp; ++m)
    recv_first[static_cast<std::size_t>(m)] =
        recv_first[static_cast<std::size_t>(m - 1)] + recv_rows[static_cast<std::size_t>(m - 1)];
  for (std::int64_t j = 0; j < mine; ++j) {
    const std::int64_t o = owner[size_of(j)];
    if (o >= 0) positions[size_of(j)] = recv_first[static_cast<std::size_t>(o)] + index[size_of(j)];
  }

  const std::int64_t sent = sum(send_rows), received = sum(recv_rows);
  auto* send = static_cast<std::uint8_t*>(
      c.workspace.scratch(c.place, Scratch::scatter_rows, size_of(sent * row)));
  auto* recv = static_cast<std::uint8_t*>(
      c.workspace.scratch(c.place, Scratch::scatter_receive, size_of(received * row)));
  const auto count = static_cast<std::int64_t>(my_ids.size());
  LookupParams compact =
      lookup_params(c.shard, layout,
                    TensorView(on_place(c, Scratch::exchange_ids, my_ids.data(), my_ids.size() * 8),
                               DType::i64, {count}, c.place.device()),
                    send, layout.global_cols);
  c.place.lookup(compact);
  exchange(c, send, times(send_rows, row), recv, times(recv_rows, row));

  LookupParams place_rows;  // the received rows are a table of the output dtype, copied bit for bit
  place_rows.table = recv;
  place_rows.table_dtype = layout.out_dtype;
  place_rows.table_rows = received;
  place_rows.cols = layout.global_cols;
  place_rows.table_row_bytes = row;
  place_rows.valid_ids = received;
  place_rows.ids = on_place(c, Scratch::exchange_positions, positions.data(), positions.size() * 8);
  place_rows.id_dtype = DType::i64;
  place_rows.num_ids = mine;
  place_rows.out = out.mutable_data();
  place_rows.out_dtype = layout.out_dtype;
  place_rows.out_row_stride = layout.global_cols;
  c.place.lookup(place_rows);
  c.place.from_host(counter, &bad, sizeof bad);
  c.place.synchronize();  // host buffers above (ids, positions, `bad`) are read by queued copies
}

// vocab, peer_rows: this rank's chunk only, straight from the owners' tables: one kernel.
void lookup_own_chunk(const ScatterContext& c, const ScatterPlan& plan, const TensorView& ids,
                      const TensorView& out, unsigned long long* counter) {
  const ShardLayout& layout = c.layout;
  TensorView chunk = ids;  // scattered input: the chunk itself
  std::vector<std::uint8_t> gathered;
  if (layout.input_layout == TokenLayout::replicated) {
    const std::size_t id_bytes = element_size(ids.dtype);
    const std::int64_t tokens = plan.my_tokens();
    if (plan.chunks_contiguous()) {
      // One run of the ids: nothing but a view (the forward stays one kernel, capturable).
      const std::int64_t n = plan.shape[static_cast<std::size_t>(plan.dim)];
      const std::int64_t first =
          tokens > 0 ? chunk_start(n, plan.tp, layout.tp_rank) * plan.inner : 0;
      chunk = TensorView(static_cast<const std::uint8_t*>(ids.data) + size_of(first) * id_bytes,
                         ids.dtype, {tokens}, ids.device);
    } else {
      // Not contiguous: the chunk's ids gathered on the host (this synchronises).
      std::vector<std::uint8_t> host(size_of(ids.nbytes()));
      if (c.place.is_host()) {
        std::memcpy(host.data(), ids.data, host.size());
      } else {
        c.place.to_host(host.data(), ids.data, host.size());
      }
      gathered.resize(size_of(tokens) * id_bytes);
      const std::vector<std::int64_t> positions = plan.chunk_positions(plan.me);
      for (std::size_t k = 0; k < positions.size(); ++k) {
        std::memcpy(gathered.data() + k * id_bytes, host.data() + size_of(positions[k]) * id_bytes,
                    id_bytes);
      }
      chunk = TensorView(on_place(c, Scratch::scatter_ids, gathered.data(), gathered.size()),
                         ids.dtype, {tokens}, ids.device);
    }
  }
  LookupParams p = lookup_params(c.shard, layout, chunk, out.mutable_data(), layout.global_cols);
  p.bad_id_slots = counter;
  if (c.peer_tables != nullptr) c.peer_tables->apply(p);
  c.place.lookup(p);
  if (!gathered.empty()) c.place.synchronize();  // `gathered` is read by a queued copy
}

// hidden: this rank's columns of every token, each member sent its chunk's rows, then each
// member's columns of this rank's chunk laid out as [chunk, H].
void exchange_columns(const ScatterContext& c, const ScatterPlan& plan, const MemberIds& ids,
                      const TensorView& out, unsigned long long* counter) {
  const ShardLayout& layout = c.layout;
  const int tp = plan.tp;
  const std::int64_t cols = layout.sizes[static_cast<std::size_t>(layout.tp_rank)];
  const std::int64_t my_row = row_bytes(layout.out_dtype, cols);
  auto* rows = static_cast<std::uint8_t*>(
      c.workspace.scratch(c.place, Scratch::scatter_rows, size_of(plan.total * my_row)));
  lookup_member_ids(c, plan, lookup_params(c.shard, layout, TensorView(), nullptr, cols), ids, rows,
                    my_row, counter);

  std::vector<std::int64_t> recv_bytes(static_cast<std::size_t>(tp)),
      recv_first(static_cast<std::size_t>(tp), 0);
  for (int m = 0; m < tp; ++m) {
    const int t = plan.tp_rank_of_member[static_cast<std::size_t>(m)];
    recv_bytes[static_cast<std::size_t>(m)] =
        plan.my_tokens() * row_bytes(layout.out_dtype, layout.sizes[static_cast<std::size_t>(t)]);
    if (m > 0)
      recv_first[static_cast<std::size_t>(m)] =
          recv_first[static_cast<std::size_t>(m - 1)] + recv_bytes[static_cast<std::size_t>(m - 1)];
  }
  auto* recv = static_cast<std::uint8_t*>(
      c.workspace.scratch(c.place, Scratch::scatter_receive, size_of(sum(recv_bytes))));
  exchange(c, rows, times(plan.member_tokens, my_row), recv, recv_bytes);
  // One piece per member, each block of its own pitch (its columns).
  for (int m = 0; m < tp; ++m) {
    const int t = plan.tp_rank_of_member[static_cast<std::size_t>(m)];
    const LayoutPiece piece{
        0, row_bytes(layout.out_dtype, layout.offsets[static_cast<std::size_t>(t)]),
        row_bytes(layout.out_dtype, layout.sizes[static_cast<std::size_t>(t)])};
    LayoutParams arrange;
    arrange.source = recv + recv_first[static_cast<std::size_t>(m)];
    arrange.source_pitch = piece.bytes;
    arrange.out = out.mutable_data();
    arrange.out_pitch = row_bytes(layout.out_dtype, layout.global_cols);
    arrange.rows = plan.my_tokens();
    arrange.pieces = &piece;
    arrange.num_pieces = 1;
    if (arrange.rows > 0 && piece.bytes > 0) c.place.layout_columns(arrange);
  }
}

// The group's ids in member order (MemberIds).
MemberIds member_ids(const ScatterContext& c, const ScatterPlan& plan, const TensorView& ids,
                     bool want_host) {
  MemberIds m;
  m.dtype = ids.dtype;
  const std::size_t id_bytes = element_size(ids.dtype);
  const std::size_t total_bytes = size_of(plan.total) * id_bytes;
  if (c.layout.input_layout == TokenLayout::scattered) {
    const std::vector<std::int64_t> counts =
        times(plan.member_tokens, static_cast<std::int64_t>(id_bytes));
    if (c.place.is_host()) {
      m.host.resize(total_bytes);
      c.group.all_gather_v(ids.data, m.host.data(), counts);
      m.data = m.host_data = m.host.data();
      return m;
    }
    void* gathered = c.workspace.scratch(c.place, Scratch::scatter_ids, total_bytes);
    gather_v(c, ids.data, gathered, counts);
    m.data = gathered;
    if (want_host) {
      m.host.resize(total_bytes);
      c.place.to_host(m.host.data(), gathered, total_bytes);
      m.host_data = m.host.data();
    }
    return m;
  }
  if (plan.natural) {
    m.data = ids.data;
    if (want_host && c.place.is_host()) m.host_data = ids.data;
    if (want_host && !c.place.is_host()) {
      m.host.resize(total_bytes);
      c.place.to_host(m.host.data(), ids.data, total_bytes);
      m.host_data = m.host.data();
    }
    return m;
  }
  // Replicated ids in another order: permuted on the host (GPU ids: there and back, synchronising).
  std::vector<std::uint8_t> natural(total_bytes);
  if (c.place.is_host()) {
    std::memcpy(natural.data(), ids.data, total_bytes);
  } else {
    c.place.to_host(natural.data(), ids.data, total_bytes);
  }
  const std::vector<std::int64_t> positions = plan.natural_positions();
  m.host.resize(total_bytes);
  for (std::size_t k = 0; k < positions.size(); ++k) {
    std::memcpy(m.host.data() + k * id_bytes, natural.data() + size_of(positions[k]) * id_bytes,
                id_bytes);
  }
  m.host_data = m.host.data();
  m.data = on_place(c, Scratch::scatter_ids, m.host.data(), total_bytes);
  if (!c.place.is_host()) c.place.synchronize();
  return m;
}

}  // namespace

// torch.tensor_split's chunks are packed shards: the first n % parts hold one more.
std::int64_t chunk_extent(std::int64_t n, int parts, int t) {
  return shard_range(n, parts, t, ShardPlacement::packed).second;
}

std::int64_t chunk_start(std::int64_t n, int parts, int t) {
  return shard_range(n, parts, t, ShardPlacement::packed).first;
}

std::vector<std::int64_t> chunk_shape(const std::vector<std::int64_t>& shape, int dim, int parts,
                                      int t) {
  std::vector<std::int64_t> chunk = shape;
  chunk[static_cast<std::size_t>(dim)] =
      chunk_extent(shape[static_cast<std::size_t>(dim)], parts, t);
  return chunk;
}

std::vector<std::int64_t> ScatterPlan::chunk_positions(int member) const {
  const int t = tp_rank_of_member[static_cast<std::size_t>(member)];
  const std::int64_t n = shape[static_cast<std::size_t>(dim)];
  const std::int64_t start = chunk_start(n, tp, t), extent = chunk_extent(n, tp, t);
  std::vector<std::int64_t> positions;
  positions.reserve(size_of(outer * extent * inner));
  for (std::int64_t o = 0; o < outer; ++o) {
    for (std::int64_t j = start; j < start + extent; ++j) {
      for (std::int64_t i = 0; i < inner; ++i) positions.push_back((o * n + j) * inner + i);
    }
  }
  return positions;
}

std::vector<std::int64_t> ScatterPlan::natural_positions() const {
  std::vector<std::int64_t> positions;
  positions.reserve(size_of(total));
  for (int m = 0; m < tp; ++m) {
    const std::vector<std::int64_t> block = chunk_positions(m);
    positions.insert(positions.end(), block.begin(), block.end());
  }
  return positions;
}

ScatterPlan plan_scatter(const std::vector<std::int64_t>& shape, int dim,
                         const std::vector<int>& tp_rank_of_member, int me) {
  ScatterPlan plan;
  plan.shape = shape;
  plan.dim = dim;
  plan.tp = static_cast<int>(tp_rank_of_member.size());
  plan.me = me;
  plan.tp_rank_of_member = tp_rank_of_member;
  const auto d = static_cast<std::size_t>(dim);
  plan.outer = product(shape, 0, d);
  plan.inner = product(shape, d + 1, shape.size());
  const std::int64_t n = shape[d];
  plan.member_tokens.resize(static_cast<std::size_t>(plan.tp));
  plan.member_first.resize(static_cast<std::size_t>(plan.tp));
  int previous = -1, non_empty = 0;
  for (int m = 0; m < plan.tp; ++m) {
    const int t = tp_rank_of_member[static_cast<std::size_t>(m)];
    const std::int64_t tokens = plan.outer * chunk_extent(n, plan.tp, t) * plan.inner;
    plan.member_tokens[static_cast<std::size_t>(m)] = tokens;
    plan.member_first[static_cast<std::size_t>(m)] = plan.total;
    plan.total += tokens;
    if (tokens > 0) {
      // Non-empty chunks taken in increasing tp rank are the natural order when each chunk is one
      // run of the ids (outer <= 1) or when there is one chunk only.
      if (t < previous) plan.natural = false;
      previous = t;
      ++non_empty;
    }
  }
  if (plan.outer > 1 && non_empty > 1) plan.natural = false;
  return plan;
}

std::vector<std::int64_t> forward_out_shape(const ShardLayout& layout, const TensorView& ids) {
  std::vector<std::int64_t> shape = ids.shape;
  if (layout.output_layout == TokenLayout::scattered) {
    TPEMBED_EXPECTS(layout.scatter_dim < ids.ndim(), InvalidArgumentError, "scatter_dim ",
                    layout.scatter_dim, " is outside the ids' ", ids.ndim(), " dimensions (shape ",
                    detail::bracketed(ids.shape),
                    "): the scattered layout splits the ids along scatter_dim");
    const bool negative =
        std::any_of(shape.begin(), shape.end(), [](std::int64_t e) { return e < 0; });
    if (layout.input_layout == TokenLayout::replicated && !negative) {
      shape = chunk_shape(shape, layout.scatter_dim, layout.tp_size, layout.tp_rank);
    }
  }
  shape.push_back(layout.global_cols);
  return shape;
}

std::int64_t count_bad_ids(const TensorView& ids, std::int64_t valid_ids) {
  std::int64_t bad = 0;
  for (std::int64_t k = 0; k < ids.numel(); ++k) {
    const std::int64_t id = id_at(ids.data, ids.dtype, k);
    bad += id < 0 || id >= valid_ids ? 1 : 0;
  }
  return bad;
}

std::vector<std::int64_t> agree_on_chunks(Communicator& group, const TensorView& ids,
                                          std::exception_ptr local_error, int dim,
                                          const std::vector<int>& tp_rank_of_member) {
  ChunkFacts mine{};
  if (!local_error) {
    try {
      TPEMBED_EXPECTS(ids.ndim() <= kMaxScatteredDims, UnsupportedError,
                      "scattered input ids have at most ", kMaxScatteredDims,
                      " dimensions, got shape ", detail::bracketed(ids.shape));
      mine.ndim = static_cast<std::int32_t>(ids.ndim());
      mine.id_dtype = static_cast<std::int32_t>(ids.dtype);
      std::copy(ids.shape.begin(), ids.shape.end(), mine.extents);
    } catch (...) {
      local_error = std::current_exception();
    }
  }
  mine.failed = local_error ? 1 : 0;
  std::vector<ChunkFacts> all(static_cast<std::size_t>(group.size()));
  try {
    group.all_gather(&mine, all.data(), sizeof mine, DType::i8);
  } catch (const CommunicatorError& error) {
    throw CommunicatorError(
        detail::concat("forward: ", error.what(),
                       " (every rank of the tp group calls forward(), or fail_forward(), "
                       "for each forward, in the same order)"));
  }
  if (std::any_of(all.begin(), all.end(), [](const ChunkFacts& f) { return f.failed != 0; })) {
    agree_or_throw(group, local_error);  // throws on every rank
  }
  // Every rank checks the same records: the same verdict everywhere.
  const ChunkFacts& first = all[0];
  const auto shape_of = [](const ChunkFacts& f) {
    return std::vector<std::int64_t>(f.extents, f.extents + f.ndim);
  };
  const int tp = static_cast<int>(all.size());
  for (int r = 1; r < tp; ++r) {
    const ChunkFacts& f = all[static_cast<std::size_t>(r)];
    TPEMBED_EXPECTS(f.id_dtype == first.id_dtype, InvalidArgumentError, "rank ", r,
                    " of the tp group passes ", dtype_name(static_cast<DType>(f.id_dtype)),
                    " ids but rank 0 passes ", dtype_name(static_cast<DType>(first.id_dtype)),
                    ": with scattered input every rank passes ids of the same dtype");
    bool fits = f.ndim == first.ndim;
    for (int k = 0; fits && k < f.ndim; ++k) fits = k == dim || f.extents[k] == first.extents[k];
    TPEMBED_EXPECTS(fits, ShapeError, "rank ", r, " of the tp group passes a chunk of shape ",
                    detail::bracketed(shape_of(f)), " but rank 0 one of shape ",
                    detail::bracketed(shape_of(first)),
                    ": scattered chunks differ only along scatter_dim ", dim);
  }
  std::vector<std::int64_t> whole = shape_of(first);
  std::int64_t n = 0;
  for (const ChunkFacts& f : all) n += f.extents[dim];
  whole[static_cast<std::size_t>(dim)] = n;
  std::ostringstream wrong;
  for (int r = 0; r < tp; ++r) {
    const int t = tp_rank_of_member[static_cast<std::size_t>(r)];
    const std::int64_t extent = all[static_cast<std::size_t>(r)].extents[dim];
    if (extent != chunk_extent(n, tp, t)) {
      wrong << (wrong.tellp() > 0 ? "; " : "") << "rank " << r << " of the tp group (tp_rank " << t
            << ") passes " << extent << " but chunk " << t << " has " << chunk_extent(n, tp, t);
    }
  }
  if (wrong.tellp() > 0) {
    throw ShapeError(detail::concat(
        "the scattered chunks do not fit torch.tensor_split's rule for their total of ", n,
        " along scatter_dim ", dim,
        " (the first n % tp chunks get one more, in tp_rank order): ", wrong.str()));
  }
  return whole;
}

void reserve_scattered(const ScatterContext& c, std::int64_t tokens, bool backward,
                       DType grad_dtype) {
  const ShardLayout& layout = c.layout;
  const bool staged = !direct(c);
  const std::int64_t row = row_bytes(layout.out_dtype, layout.global_cols);
  const std::int64_t ids = tokens * 8;
  if (!backward && layout.sharding_dim == 0 && layout.vocab_exchange == VocabExchange::peer_rows) {
    // Nothing but the chunk's ids, when they are not one run of the whole (no staging: no
    // collective).
    if (!c.place.is_host()) c.workspace.scratch(c.place, Scratch::scatter_ids, size_of(ids));
    return;
  }
  if (!c.place.is_host()) {
    c.workspace.scratch(c.place, Scratch::scatter_ids, size_of(ids));
    c.workspace.scratch(c.place, Scratch::exchange_ids, size_of(ids));
    c.workspace.scratch(c.place, Scratch::exchange_positions, size_of(ids));
  }
  std::int64_t stage = staged ? ids * 2 : 0;
  if (backward) {
    const std::int64_t grad = tokens * row_bytes(grad_dtype, layout.global_cols);
    c.workspace.scratch(c.place, Scratch::scatter_rows, size_of(grad));
    c.workspace.scratch(c.place, Scratch::scatter_receive, size_of(grad));
    if (staged) stage = std::max(stage, 2 * grad);
  } else {
    c.workspace.scratch(c.place, Scratch::scatter_rows, size_of(tokens * row));
    c.workspace.scratch(c.place, Scratch::scatter_receive, size_of(tokens * row));
    if (staged) stage = std::max(stage, 2 * tokens * row);
  }
  if (stage > 0) c.workspace.host_stage(size_of(stage));
}

void scattered_forward(const ScatterContext& c, const ScatterPlan& plan, const TensorView& ids,
                       const TensorView& out, unsigned long long* counter) {
  const ShardLayout& layout = c.layout;
  if (layout.sharding_dim == 0 && layout.vocab_exchange == VocabExchange::peer_rows) {
    lookup_own_chunk(c, plan, ids, out, counter);
    return;
  }
  const bool plan_on_host =
      layout.sharding_dim == 0 && layout.vocab_exchange == VocabExchange::owned_rows;
  const MemberIds member = member_ids(c, plan, ids, plan_on_host);
  if (layout.sharding_dim == 1) {
    exchange_columns(c, plan, member, out, counter);
  } else if (plan_on_host) {
    exchange_owned_rows(c, plan, member, out, counter);
  } else {
    reduce_scatter_rows(c, plan, member, out, counter);
  }
  if (!c.place.is_host() && !direct(c)) c.place.synchronize();
}

// The whole gradient is gathered so that the local backward sums every row's positions in their
// natural order (gradient.hpp): the bits of the unsharded gradient. A cheaper exchange would send
// each owner only the rows of the tokens it owns (an all-to-all of owned rows, kept in natural
// order by an order-preserving compaction, which keeps the bits too): a later optimisation.
GatheredGradient gather_gradient(const ScatterContext& c, const ScatterPlan& plan,
                                 const TensorView& ids, const TensorView& grad_out) {
  const ShardLayout& layout = c.layout;
  GatheredGradient result;
  // The ids in natural order.
  if (layout.input_layout == TokenLayout::replicated) {
    result.ids = ids;
  } else {
    MemberIds member = member_ids(c, plan, ids, !plan.natural);
    if (plan.natural) {
      // Host ids live in member.host: kept alive with the result (a moved vector keeps its data).
      const bool in_host_storage = !member.host.empty() && member.data == member.host.data();
      result.host_ids = std::move(member.host);
      result.ids = TensorView(in_host_storage ? result.host_ids.data() : member.data, member.dtype,
                              plan.shape, c.place.device());
    } else {
      const std::size_t id_bytes = element_size(member.dtype);
      result.host_ids.resize(size_of(plan.total) * id_bytes);
      const std::vector<std::int64_t> positions = plan.natural_positions();
      for (std::size_t k = 0; k < positions.size(); ++k) {
        std::memcpy(result.host_ids.data() + size_of(positions[k]) * id_bytes,
                    static_cast<const std::uint8_t*>(member.host_data) + k * id_bytes, id_bytes);
      }
      result.ids = TensorView(
          on_place(c, Scratch::exchange_ids, result.host_ids.data(), result.host_ids.size()),
          member.dtype, plan.shape, c.place.device());
    }
  }
  // grad_out of every member, in member order, then (when that is not natural) in natural order.
  const DType dtype = grad_out.dtype;
  const std::int64_t row = row_bytes(dtype, layout.global_cols);
  auto* gathered = static_cast<std::uint8_t*>(
      c.workspace.scratch(c.place, Scratch::scatter_rows, size_of(plan.total * row)));
  gather_v(c, grad_out.data, gathered, times(plan.member_tokens, row));
  std::vector<std::int64_t> shape = plan.shape;
  shape.push_back(layout.global_cols);
  if (plan.natural) {
    result.grad_out = TensorView(gathered, dtype, shape, c.place.device());
  } else {
    // A lookup in the gathered rows (a table of the gradient's dtype: a bit-exact copy) puts them
    // in natural order: natural position p takes member-ordered row member_index[p].
    const std::vector<std::int64_t> positions = plan.natural_positions();
    std::vector<std::int64_t> member_index(positions.size());
    for (std::size_t k = 0; k < positions.size(); ++k)
      member_index[size_of(positions[k])] = static_cast<std::int64_t>(k);
    auto* natural = static_cast<std::uint8_t*>(
        c.workspace.scratch(c.place, Scratch::scatter_receive, size_of(plan.total * row)));
    LookupParams p;
    p.table = gathered;
    p.table_dtype = dtype;
    p.table_rows = plan.total;
    p.cols = layout.global_cols;
    p.table_row_bytes = row;
    p.valid_ids = plan.total;
    p.ids = on_place(c, Scratch::exchange_positions, member_index.data(), member_index.size() * 8);
    p.id_dtype = DType::i64;
    p.num_ids = plan.total;
    p.out = natural;
    p.out_dtype = dtype;
    p.out_row_stride = layout.global_cols;
    c.place.lookup(p);
    result.grad_out = TensorView(natural, dtype, shape, c.place.device());
    if (!c.place.is_host()) c.place.synchronize();  // `member_index` is read by a queued copy
  }
  if (!c.place.is_host()) c.place.synchronize();  // host vectors above are read by queued copies
  return result;
}

}  // namespace op
}  // namespace tpembed

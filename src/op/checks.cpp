#include "op/checks.hpp"

#include "core/ids.hpp"
#include "cuda/runtime.hpp"
#include "tpembed/cuda.hpp"

#include <algorithm>
#include <sstream>

namespace tpembed::op {

namespace {

const char* placement_name(std::int32_t placement) {
  return placement == static_cast<std::int32_t>(ShardPlacement::equal) ? "equal" : "packed";
}

// " passed vocab_size 10" or " passed no vocab_size" (ShardDescription keeps -1 for none).
std::string vocab_size_text(std::int64_t vocab_size) {
  return vocab_size < 0 ? std::string(" passed no vocab_size")
                        : " passed vocab_size " + std::to_string(vocab_size);
}
}  // namespace

void check_data(const TensorView& view, const char* name) {
  for (std::int64_t extent : view.shape) {
    TPEMBED_EXPECTS(extent >= 0, ShapeError, name, " has a negative extent: shape ",
                    detail::bracketed(view.shape));
  }
  TPEMBED_EXPECTS(view.data != nullptr || view.numel() == 0, InvalidArgumentError, name,
                  " has null data but ", view.numel(), " elements (shape ", detail::bracketed(view.shape),
                  ")");
}

void check_scale(const TensorView& scale, const char* name, std::int64_t rows, const char* rows_of,
                 const Device& device, const char* device_of) {
  check_data(scale, name);
  TPEMBED_EXPECTS(is_float(scale.dtype), InvalidArgumentError, name, " must be f32, f16 or bf16, not ",
                  dtype_name(scale.dtype));
  TPEMBED_EXPECTS(scale.ndim() == 1, ShapeError, name, " must be 1-D with one scale per row, got shape ",
                  detail::bracketed(scale.shape));
  TPEMBED_EXPECTS(scale.shape[0] == rows, ShapeError, name, " has ", scale.shape[0],
                  " entries but ", rows_of, " has ", rows, " rows");
  TPEMBED_EXPECTS(scale.device == device, InvalidArgumentError, name, " is on ", device_name(scale.device), " but ",
                  device_of, " is on ", device_name(device));
}

std::string rank_list(const std::vector<int>& ranks) {
  std::ostringstream text;
  for (std::size_t i = 0; i < ranks.size(); ++i) text << (i ? "," : "") << ranks[i];
  return text.str();
}

std::string hex(std::uint64_t value) {
  std::ostringstream text;
  text << "0x" << std::hex << value;
  return text.str();
}

DType check_local_shard(const EmbeddingShard& shard, const EmbeddingConfig& config) {
  TPEMBED_EXPECTS(config.tp_size >= 1, InvalidArgumentError, "tp_size must be >= 1, got ",
                  config.tp_size);
  TPEMBED_EXPECTS(config.sharding_dim == 0 || config.sharding_dim == 1, InvalidArgumentError,
                  "sharding_dim must be 0 (vocab) or 1 (hidden), got ", config.sharding_dim);
  if (config.tp_rank) {
    TPEMBED_EXPECTS(*config.tp_rank >= 0 && *config.tp_rank < config.tp_size, InvalidArgumentError,
                    "tp_rank ", *config.tp_rank, " is outside [0, tp_size = ", config.tp_size, ")");
  }
  TPEMBED_EXPECTS(config.input_layout == TokenLayout::replicated || config.output_layout == TokenLayout::scattered,
                  InvalidArgumentError,
                  "input_layout scattered needs output_layout scattered: each rank passes only its chunk of the "
                  "ids, so it can receive only its chunk's rows (set output_layout = scattered too)");
  TPEMBED_EXPECTS(config.scatter_dim >= 0, InvalidArgumentError, "scatter_dim must be >= 0, got ",
                  config.scatter_dim);
  if (!config.tp_group.empty()) {
    TPEMBED_EXPECTS(static_cast<int>(config.tp_group.size()) == config.tp_size, InvalidArgumentError,
                    "tp_group names ", config.tp_group.size(), " ranks but tp_size is ",
                    config.tp_size);
  }

  const TensorView& weight = shard.weight;
  TPEMBED_EXPECTS(!weight.absent(), InvalidArgumentError, "weight is missing");
  check_data(weight, "weight");
  TPEMBED_EXPECTS(is_table_dtype(weight.dtype), InvalidArgumentError, "weight dtype ",
                  dtype_name(weight.dtype),
                  " is not a table dtype (f32, f16, bf16, i8, fp8_e4m3, i4)");
  TPEMBED_EXPECTS(weight.ndim() == 2, ShapeError, "weight must be 2-D [rows, cols], got shape ",
                  detail::bracketed(weight.shape));
  const std::int64_t rows = weight.shape[0], cols = weight.shape[1];
  if (weight.device.kind == DeviceKind::cuda) {
    TPEMBED_EXPECTS(cuda_built(), UnsupportedError, "the table is on ", device_name(weight.device),
                    " but this build of tpembed has no CUDA backend");
    const int devices = cuda_device_count();
    TPEMBED_EXPECTS(weight.device.index >= 0 && weight.device.index < devices, InvalidArgumentError,
                    "the table is on ", device_name(weight.device), " but ", devices,
                    " CUDA device(s) are visible");
    TPEMBED_EXPECTS(weight.numel() == 0 || cuda_runtime::device_of(weight.data) == weight.device.index,
                    InvalidArgumentError, "the table is labelled ", device_name(weight.device),
                    " but its memory is not device memory of that GPU");
  }

  const bool quantized = is_quantized(weight.dtype);
  if (shard.scale.absent()) {
    TPEMBED_EXPECTS(!quantized, InvalidArgumentError, "a quantized table (",
                    dtype_name(weight.dtype), ") needs per_token_scale, one scale per row");
  } else {
    check_scale(shard.scale, "per_token_scale", rows, "the table", weight.device, "the table");
  }

  if (!shard.padding.absent()) {
    const TensorView& padding = shard.padding;
    check_data(padding, "padding");
    TPEMBED_EXPECTS(padding.dtype == weight.dtype, InvalidArgumentError, "padding dtype ",
                    dtype_name(padding.dtype), " differs from the table's ", dtype_name(weight.dtype));
    TPEMBED_EXPECTS(padding.ndim() == 2 && padding.shape[1] == cols, ShapeError, "padding shape ",
                    detail::bracketed(padding.shape), " does not fit a table of ", cols, " columns");
    TPEMBED_EXPECTS(padding.device == weight.device, InvalidArgumentError, "padding is on ",
                    device_name(padding.device), " but the table is on ", device_name(weight.device));
    TPEMBED_EXPECTS(config.tp_size == 1 || config.sharding_dim == 1, InvalidArgumentError,
                    "padding rows are addressable only where the local table holds the whole vocab "
                    "(tp_size 1 or sharding_dim 1), not with vocab sharding over ",
                    config.tp_size, " ranks");
    if (shard.padding_scale.absent()) {
      TPEMBED_EXPECTS(!quantized, InvalidArgumentError, "quantized padding (",
                      dtype_name(padding.dtype), ") needs padding_scale, one scale per padding row");
      TPEMBED_EXPECTS(shard.scale.absent(), InvalidArgumentError,
                      "the table has per_token_scale, so its padding needs padding_scale too");
    } else {
      check_scale(shard.padding_scale, "padding_scale", padding.shape[0], "the padding", weight.device, "the table");
      TPEMBED_EXPECTS(shard.scale.absent() || shard.padding_scale.dtype == shard.scale.dtype,
                      InvalidArgumentError, "padding_scale dtype ",
                      dtype_name(shard.padding_scale.dtype), " differs from per_token_scale's ",
                      dtype_name(shard.scale.dtype));
      TPEMBED_EXPECTS(!shard.scale.absent(), InvalidArgumentError,
                      "padding_scale given but the table has no per_token_scale");
    }
  } else {
    TPEMBED_EXPECTS(shard.padding_scale.absent(), InvalidArgumentError,
                    "padding_scale given without padding");
  }

  if (config.vocab_size) {
    TPEMBED_EXPECTS(config.sharding_dim == 0 && config.placement == ShardPlacement::equal,
                    InvalidArgumentError,
                    "vocab_size applies only to equal vocab shards (sharding_dim 0, placement equal)");
    TPEMBED_EXPECTS(*config.vocab_size >= 0 && *config.vocab_size <= rows * config.tp_size,
                    ShapeError, "vocab_size ", *config.vocab_size, " does not fit ",
                    config.tp_size, " equal shards of ", rows, " rows");
  }

  DType out_dtype = weight.dtype;
  if (config.out_dtype) {
    out_dtype = *config.out_dtype;
    TPEMBED_EXPECTS(is_float(out_dtype), InvalidArgumentError, "out_dtype ", dtype_name(out_dtype),
                    " is not f32, f16 or bf16");
  } else {
    TPEMBED_EXPECTS(!quantized, InvalidArgumentError, "a quantized table (",
                    dtype_name(weight.dtype), ") needs out_dtype (f32, f16 or bf16)");
  }
  return out_dtype;
}

ShardDescription describe_shard(const EmbeddingShard& shard, const EmbeddingConfig& config,
                                int tp_rank, DType out_dtype) {
  ShardDescription d{};
  d.tp_rank = tp_rank;
  d.sharding_dim = config.sharding_dim;
  d.placement = static_cast<std::int32_t>(config.placement);
  d.table_dtype = static_cast<std::int32_t>(shard.weight.dtype);
  d.scale_dtype = shard.scale.absent() ? -1 : static_cast<std::int32_t>(shard.scale.dtype);
  d.out_dtype = static_cast<std::int32_t>(out_dtype);
  d.rows = shard.weight.shape[0];
  d.cols = shard.weight.shape[1];
  d.padding_rows = shard.padding.absent() ? 0 : shard.padding.shape[0];
  d.vocab_size = config.vocab_size ? *config.vocab_size : -1;
  d.vocab_exchange = static_cast<std::int32_t>(config.vocab_exchange);
  d.collective_checks = config.collective_checks ? 1 : 0;
  d.strict = config.strict ? 1 : 0;
  d.output_layout = static_cast<std::int32_t>(config.output_layout);
  d.input_layout = static_cast<std::int32_t>(config.input_layout);
  // Unused (and not compared) unless a layout is scattered.
  const bool any_scattered = config.output_layout == TokenLayout::scattered;
  d.scatter_dim = any_scattered ? config.scatter_dim : 0;
  d.table_fingerprint = config.table_fingerprint;
  return d;
}

ShardLayout plan_layout(const std::vector<ShardDescription>& shards, int my_group_rank) {
  const int tp = static_cast<int>(shards.size());
  const ShardDescription& first = shards[0];
  auto scale_name = [](std::int32_t dtype) {
    return dtype < 0 ? "none" : dtype_name(static_cast<DType>(dtype));
  };
  for (int r = 1; r < tp; ++r) {
    const ShardDescription& s = shards[r];
    TPEMBED_EXPECTS(s.sharding_dim == first.sharding_dim, ShapeError, "rank ", r,
                    " shards dim ", s.sharding_dim, " but rank 0 shards dim ", first.sharding_dim);
    TPEMBED_EXPECTS(s.placement == first.placement, ShapeError, "rank ", r, " uses ",
                    placement_name(s.placement), " shard placement but rank 0 uses ",
                    placement_name(first.placement));
    TPEMBED_EXPECTS(s.table_dtype == first.table_dtype, ShapeError, "rank ", r, " holds a ",
                    dtype_name(static_cast<DType>(s.table_dtype)), " table but rank 0 holds a ",
                    dtype_name(static_cast<DType>(first.table_dtype)), " table");
    TPEMBED_EXPECTS(s.scale_dtype == first.scale_dtype, ShapeError, "rank ", r, " has scale dtype ",
                    scale_name(s.scale_dtype), " but rank 0 has ", scale_name(first.scale_dtype));
    TPEMBED_EXPECTS(s.out_dtype == first.out_dtype, ShapeError, "rank ", r, " asks for ",
                    dtype_name(static_cast<DType>(s.out_dtype)), " output but rank 0 for ",
                    dtype_name(static_cast<DType>(first.out_dtype)));
    TPEMBED_EXPECTS(s.vocab_size == first.vocab_size, ShapeError, "rank ", r, vocab_size_text(s.vocab_size),
                    " but rank 0", vocab_size_text(first.vocab_size),
                    ": every rank of equal vocab shards must pass the same vocab_size (the real vocab)");
    TPEMBED_EXPECTS(s.vocab_exchange == first.vocab_exchange, InvalidArgumentError, "rank ", r, " asks for the ",
                    vocab_exchange_name(static_cast<VocabExchange>(s.vocab_exchange)), " vocab exchange but rank 0 for ",
                    vocab_exchange_name(static_cast<VocabExchange>(first.vocab_exchange)));
    TPEMBED_EXPECTS(s.collective_checks == first.collective_checks, InvalidArgumentError, "rank ", r,
                    " sets collective_checks ", s.collective_checks ? "on" : "off", " but rank 0 sets it ",
                    first.collective_checks ? "on" : "off", " (ranks that check would wait for ranks that do not)");
    TPEMBED_EXPECTS(s.strict == first.strict, InvalidArgumentError, "rank ", r, " sets strict ",
                    s.strict ? "on" : "off", " but rank 0 sets it ", first.strict ? "on" : "off",
                    " (strict ranks would wait for the others in the out-of-range check)");
    TPEMBED_EXPECTS(s.output_layout == first.output_layout, InvalidArgumentError, "rank ", r, " asks for the ",
                    token_layout_name(static_cast<TokenLayout>(s.output_layout)),
                    " output_layout but rank 0 for ",
                    token_layout_name(static_cast<TokenLayout>(first.output_layout)));
    TPEMBED_EXPECTS(s.input_layout == first.input_layout, InvalidArgumentError, "rank ", r, " passes ",
                    token_layout_name(static_cast<TokenLayout>(s.input_layout)),
                    " ids (input_layout) but rank 0 ",
                    token_layout_name(static_cast<TokenLayout>(first.input_layout)), " ids");
    TPEMBED_EXPECTS(s.scatter_dim == first.scatter_dim, InvalidArgumentError, "rank ", r,
                    " scatters the tokens along scatter_dim ", s.scatter_dim, " but rank 0 along ",
                    first.scatter_dim);
    TPEMBED_EXPECTS(s.table_fingerprint == 0 || first.table_fingerprint == 0 ||
                        s.table_fingerprint == first.table_fingerprint,
                    InvalidArgumentError, "rank ", r, " has table fingerprint ", hex(s.table_fingerprint),
                    " but rank 0 has ", hex(first.table_fingerprint),
                    ": the ranks' shards come from different tables (another checkpoint or tensor)");
  }

  // tp ranks must be a permutation of 0..tp-1.
  std::vector<std::vector<int>> holders(tp);
  for (int r = 0; r < tp; ++r) {
    TPEMBED_EXPECTS(shards[r].tp_rank >= 0 && shards[r].tp_rank < tp, InvalidArgumentError, "rank ",
                    r, " has tp_rank ", shards[r].tp_rank, " outside [0, ", tp, ")");
    holders[shards[r].tp_rank].push_back(r);
  }
  for (int t = 0; t < tp; ++t) {
    TPEMBED_EXPECTS(holders[t].size() == 1, InvalidArgumentError, "tp_rank ", t,
                    holders[t].empty() ? " is held by no rank" : " is claimed by ranks ",
                    rank_list(holders[t]));
  }

  ShardLayout layout;
  layout.sharding_dim = first.sharding_dim;
  layout.tp_size = tp;
  layout.tp_rank = shards[my_group_rank].tp_rank;
  layout.table_dtype = static_cast<DType>(first.table_dtype);
  layout.out_dtype = static_cast<DType>(first.out_dtype);
  layout.output_layout = static_cast<TokenLayout>(first.output_layout);
  layout.input_layout = static_cast<TokenLayout>(first.input_layout);
  layout.scatter_dim = first.scatter_dim;
  layout.offsets.assign(tp, 0);
  layout.sizes.assign(tp, 0);
  const bool equal = first.placement == static_cast<std::int32_t>(ShardPlacement::equal);
  const bool vocab = first.sharding_dim == 0;
  for (int r = 1; r < tp; ++r) {
    const ShardDescription& s = shards[r];
    if (vocab) {
      TPEMBED_EXPECTS(s.cols == first.cols, ShapeError, "rank ", r, " holds rows of ", s.cols,
                      " columns but rank 0 holds rows of ", first.cols);
      TPEMBED_EXPECTS(!equal || s.rows == first.rows, ShapeError, "rank ", r, " holds ", s.rows,
                      " rows but rank 0 holds ", first.rows,
                      ": equal vocab shards need the same row count (use packed placement for "
                      "uneven shards)");
    } else {
      TPEMBED_EXPECTS(s.rows == first.rows, ShapeError, "rank ", r, " holds ", s.rows,
                      " rows but rank 0 holds ", first.rows,
                      ": hidden shards hold every row of the vocab");
      TPEMBED_EXPECTS(s.padding_rows == first.padding_rows, ShapeError, "rank ", r, " has ",
                      s.padding_rows, " padding rows but rank 0 has ", first.padding_rows);
      TPEMBED_EXPECTS(!equal || s.cols == first.cols, ShapeError, "rank ", r, " holds ", s.cols,
                      " columns but rank 0 holds ", first.cols,
                      ": equal hidden shards need the same column count (use packed placement "
                      "for uneven shards)");
    }
  }
  // Sizes by tp_rank, offsets as prefix sums in tp_rank order (equal shards give rank * size).
  for (int r = 0; r < tp; ++r) layout.sizes[shards[r].tp_rank] = vocab ? shards[r].rows : shards[r].cols;
  for (int t = 1; t < tp; ++t) layout.offsets[t] = layout.offsets[t - 1] + layout.sizes[t - 1];
  const std::int64_t total = layout.offsets[tp - 1] + layout.sizes[tp - 1];
  if (vocab) {
    layout.global_rows = first.vocab_size >= 0 ? first.vocab_size : total;
    layout.global_cols = first.cols;
    layout.padding_rows = tp == 1 ? first.padding_rows : 0;
  } else {
    layout.global_rows = first.rows;
    layout.global_cols = total;
    layout.padding_rows = first.padding_rows;
  }
  return layout;
}

LookupParams lookup_params(const EmbeddingShard& shard, const ShardLayout& layout, const TensorView& ids, void* out,
                           std::int64_t out_row_stride) {
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

void check_ids(const TensorView& ids, const Device& table_device) {
  TPEMBED_EXPECTS(is_index(ids.dtype), InvalidArgumentError, "ids must be i32 or i64, not ",
                  dtype_name(ids.dtype));
  check_data(ids, "ids");
  TPEMBED_EXPECTS(ids.device == table_device, InvalidArgumentError, "ids are on ",
                  device_name(ids.device), " but the table is on ", device_name(table_device));
}

void check_out(const TensorView& out, const TensorView& ids, std::int64_t cols, DType out_dtype,
               const Device& table_device) {
  const bool fits = out.shape.size() == ids.shape.size() + 1 && out.shape.back() == cols &&
                   std::equal(ids.shape.begin(), ids.shape.end(), out.shape.begin());
  if (!fits) {
    std::vector<std::int64_t> expected = ids.shape;
    expected.push_back(cols);
    throw ShapeError(detail::concat("out has shape ", detail::bracketed(out.shape), " but ids ", detail::bracketed(ids.shape),
                                    " need ", detail::bracketed(expected)));
  }
  check_out(out, out.shape, out_dtype, table_device);
}

void check_out(const TensorView& out, const std::vector<std::int64_t>& expected, DType out_dtype,
               const Device& table_device) {
  TPEMBED_EXPECTS(out.shape == expected, ShapeError, "out has shape ", detail::bracketed(out.shape),
                  " but this rank's chunk of the scattered output is ", detail::bracketed(expected));
  TPEMBED_EXPECTS(out.dtype == out_dtype, InvalidArgumentError, "out has dtype ",
                  dtype_name(out.dtype), " but the lookup produces ", dtype_name(out_dtype));
  check_data(out, "out");
  TPEMBED_EXPECTS(out.device == table_device, InvalidArgumentError, "out is on ",
                  device_name(out.device), " but the table is on ", device_name(table_device));
}

OutOfRangeError out_of_range_error(const TensorView& ids, std::int64_t position,
                                   std::int64_t bad_count, std::int64_t valid_ids) {
  const std::int64_t id = id_at(ids.data, ids.dtype, position);
  // The flat position as an index into the ids' shape.
  std::vector<std::int64_t> index(ids.shape.size());
  std::int64_t rest = position;
  for (std::size_t d = ids.shape.size(); d-- > 0;) {
    index[d] = rest % ids.shape[d];
    rest /= ids.shape[d];
  }
  return OutOfRangeError(detail::concat("id ", id, " at position ", position, " (index ",
                                        detail::bracketed(index), ") is out of range [0, ", valid_ids,
                                        "); ", bad_count, " of ", ids.numel(),
                                        " ids are out of range"),
                         id, position, bad_count);
}

}  // namespace tpembed::op

#include "tpembed/sharding.hpp"

#include <algorithm>
#include <cstring>

#include "tpembed/error.hpp"

namespace tpembed {

namespace {

void check_host_table(const TensorView& table, const char* what) {
  TPEMBED_EXPECTS(table.device.kind == DeviceKind::cpu, InvalidArgumentError, what,
                  ": the tensor must be in host memory, not on ", device_name(table.device));
  TPEMBED_EXPECTS(table.ndim() == 1 || table.ndim() == 2, ShapeError, what,
                  ": expected a 1-D or 2-D tensor, got ", table.describe());
  TPEMBED_EXPECTS(table.data != nullptr || table.numel() == 0, InvalidArgumentError, what,
                  ": null data with ", table.numel(), " elements");
}

}  // namespace

std::pair<std::int64_t, std::int64_t> shard_range(std::int64_t total, int tp_size, int tp_rank,
                                                  ShardPlacement placement) {
  TPEMBED_EXPECTS(tp_size >= 1 && tp_rank >= 0 && tp_rank < tp_size, InvalidArgumentError,
                  "shard_range: tp_rank ", tp_rank, " is outside [0, tp_size = ", tp_size, ")");
  TPEMBED_EXPECTS(total >= 0, InvalidArgumentError, "shard_range: negative total ", total);
  if (placement == ShardPlacement::equal) {
    // ceil(total / tp) without forming total + tp - 1, which overflows near INT64_MAX.
    const std::int64_t size = total / tp_size + (total % tp_size != 0 ? 1 : 0);
    // The last equal shards reach past `total` (zero rows): their end must still be a row index.
    std::int64_t offset = 0, end = 0;
    TPEMBED_EXPECTS(!__builtin_mul_overflow(std::int64_t{tp_rank}, size, &offset) &&
                        !__builtin_add_overflow(offset, size, &end),
                    InvalidArgumentError, "shard_range: equal shards of ", total, " over ", tp_size,
                    " ranks (", size, " each) reach past the largest 64-bit index at tp_rank ",
                    tp_rank, "; use placement 'packed', whose shards end at ", total);
    return {offset, size};
  }
  const std::int64_t base = total / tp_size, extra = total % tp_size;
  return {tp_rank * base + std::min<std::int64_t>(tp_rank, extra),
          base + (tp_rank < extra ? 1 : 0)};
}

Tensor slice_rows(const TensorView& table, std::int64_t first, std::int64_t count) {
  check_host_table(table, "slice_rows");
  TPEMBED_EXPECTS(first >= 0 && count >= 0, InvalidArgumentError, "slice_rows: bad range [", first,
                  ", ", first + count, ")");
  std::vector<std::int64_t> shape = table.shape;
  shape[0] = count;
  Tensor out(table.dtype, shape);
  const std::int64_t stride =
      table.ndim() == 1 ? row_bytes(table.dtype, 1) : row_bytes(table.dtype, table.shape[1]);
  const std::int64_t present = std::clamp<std::int64_t>(table.shape[0] - first, 0, count);
  auto* dst = static_cast<std::uint8_t*>(out.data());
  if (present > 0) {
    std::memcpy(dst, static_cast<const std::uint8_t*>(table.data) + first * stride,
                static_cast<std::size_t>(present * stride));
  }
  std::memset(dst + present * stride, 0, static_cast<std::size_t>((count - present) * stride));
  return out;
}

Tensor slice_cols(const TensorView& table, std::int64_t first, std::int64_t count) {
  check_host_table(table, "slice_cols");
  if (table.ndim() == 1) return slice_rows(table, 0, table.shape[0]);
  const std::int64_t rows = table.shape[0], cols = table.shape[1];
  TPEMBED_EXPECTS(first >= 0 && count >= 0 && first + count <= cols, InvalidArgumentError,
                  "slice_cols: columns [", first, ", ", first + count, ") are outside [0, ", cols,
                  ")");
  Tensor out(table.dtype, {rows, count});
  const auto* src = static_cast<const std::uint8_t*>(table.data);
  auto* dst = static_cast<std::uint8_t*>(out.data());
  const std::int64_t src_stride = row_bytes(table.dtype, cols),
                     dst_stride = row_bytes(table.dtype, count);
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::uint8_t* in = src + r * src_stride;
    std::uint8_t* row = dst + r * dst_stride;
    if (table.dtype != DType::i4) {
      const std::int64_t width = static_cast<std::int64_t>(element_size(table.dtype));
      std::memcpy(row, in + first * width, static_cast<std::size_t>(count * width));
      continue;
    }
    std::memset(row, 0, static_cast<std::size_t>(dst_stride));
    for (std::int64_t c = 0; c < count; ++c) {
      const std::int64_t from = first + c;
      const int nibble = (in[from >> 1] >> (4 * (from & 1))) & 0xf;
      row[c >> 1] = static_cast<std::uint8_t>(row[c >> 1] | (nibble << (4 * (c & 1))));
    }
  }
  return out;
}

}  // namespace tpembed

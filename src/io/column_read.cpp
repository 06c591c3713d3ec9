// A hidden-dimension shard: a few columns of every row, read without touching the rest.
//
// Rows that span several pages are read one slice at a time with pread, so the kernel reads only
// the pages holding the slice and none of it lands in the process's memory besides the result.
// Rows shorter than a page are read in blocks of whole rows through a small bounce buffer: every
// page holds part of the slice then, so the whole tensor passes through the page cache regardless,
// and one large read beats one small read per row.
#include <algorithm>
#include <cstring>
#include <vector>

#include "io/opened_file.hpp"

namespace tpembed::io {

namespace {

constexpr std::int64_t kPageBytes = 4096;
constexpr std::int64_t kBounceBytes = std::int64_t{1} << 20;

// Where a slice starts inside a stored row and how many stored bytes it covers.
struct SliceBytes {
  std::int64_t offset;  ///< From the row's first byte.
  std::int64_t size;
  int nibble_shift;  ///< i4: 1 when the slice starts on a high nibble.
};

SliceBytes slice_bytes(DType dtype, std::int64_t first, std::int64_t count) {
  if (dtype != DType::i4) {
    const auto width = static_cast<std::int64_t>(element_size(dtype));
    return {first * width, count * width, 0};
  }
  if (count == 0) return {0, 0, 0};
  return {first / 2, (first + count - 1) / 2 - first / 2 + 1, static_cast<int>(first & 1)};
}

// Copies one row's slice from `source` (its first stored byte) to `destination`, packing int4
// columns so that the slice starts on a low nibble and a spare high nibble is zero.
void emit_row(DType dtype, const unsigned char* source, unsigned char* destination,
              std::int64_t count, const SliceBytes& slice) {
  if (dtype != DType::i4) {
    std::memcpy(destination, source, static_cast<std::size_t>(slice.size));
    return;
  }
  const std::int64_t out_bytes = (count + 1) / 2;
  if (slice.nibble_shift == 0) {
    std::memcpy(destination, source, static_cast<std::size_t>(out_bytes));
  } else {
    for (std::int64_t j = 0; j < out_bytes; ++j) {
      const int high = 2 * j + 1 < count ? (source[j + 1] & 0x0f) << 4 : 0;
      destination[j] = static_cast<unsigned char>((source[j] >> 4) | high);
    }
  }
  if (count % 2 == 1) destination[out_bytes - 1] &= 0x0f;
}

}  // namespace

Tensor read_columns(const OpenedFile& opened, const ResolvedTensor& tensor, std::int64_t first,
                    std::int64_t count) {
  const std::int64_t rows = tensor.shape[0];
  Tensor out = allocate_for_read(opened.file.path(), tensor.dtype, {rows, count});
  const SliceBytes slice = slice_bytes(tensor.dtype, first, count);
  if (rows == 0 || slice.size == 0) return out;
  const std::int64_t out_stride = row_bytes(tensor.dtype, count);
  auto* destination = static_cast<unsigned char*>(out.data());

  const bool whole_rows = tensor.row_bytes < kPageBytes;
  const std::int64_t rows_per_block =
      whole_rows ? std::max<std::int64_t>(1, kBounceBytes / tensor.row_bytes) : 1;
  std::vector<unsigned char> bounce(
      static_cast<std::size_t>(whole_rows ? rows_per_block * tensor.row_bytes : slice.size));
  for (std::int64_t row = 0; row < rows; row += rows_per_block) {
    const std::int64_t block = std::min(rows_per_block, rows - row);
    const std::int64_t row_offset = tensor.file_offset + row * tensor.row_bytes;
    if (whole_rows) {
      opened.file.read_at(bounce.data(), row_offset, block * tensor.row_bytes);
    } else {
      opened.file.read_at(bounce.data(), row_offset + slice.offset, slice.size);
    }
    for (std::int64_t r = 0; r < block; ++r) {
      const unsigned char* source =
          whole_rows ? bounce.data() + r * tensor.row_bytes + slice.offset : bounce.data();
      emit_row(tensor.dtype, source, destination + (row + r) * out_stride, count, slice);
    }
  }
  return out;
}

}  // namespace tpembed::io

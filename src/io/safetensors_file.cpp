// SafetensorsFile: the public face of an opened file (views into the map, shard reads).
#include <algorithm>
#include <cstring>
#include <limits>

#include "io/checkpoint_error.hpp"
#include "io/fingerprint.hpp"
#include "io/opened_file.hpp"
#include "tpembed/safetensors.hpp"

namespace tpembed {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors data is little-endian; views into the map assume a little-endian host");

struct SafetensorsFile::State : io::OpenedFile {
  using io::OpenedFile::OpenedFile;
};

namespace {

void check_rows(const std::string& path, const std::string& name, const io::ResolvedTensor& tensor,
                std::int64_t first, std::int64_t count, bool past_end_allowed) {
  TPEMBED_EXPECTS(!tensor.shape.empty(), InvalidArgumentError, path, ": tensor ",
                  io::in_quotes(name), " is 0-d and has no rows");
  TPEMBED_EXPECTS(tensor.dtype != DType::i4 || tensor.shape.size() == 2, InvalidArgumentError, path,
                  ": tensor ", io::in_quotes(name), ": int4 rows need a 2-D tensor");
  const std::int64_t rows = tensor.shape[0];
  TPEMBED_EXPECTS(
      first >= 0 && count >= 0 && (past_end_allowed || (first <= rows && count <= rows - first)),
      InvalidArgumentError, path, ": rows [", first, ", ", first + count, ") are outside tensor ",
      io::in_quotes(name), " of ", rows, " rows");
}

// The map address of a tensor's byte `offset`, checked to be aligned for its elements.
const void* mapped_address(const io::OpenedFile& opened, const io::ResolvedTensor& tensor,
                           std::int64_t offset) {
  const unsigned char* address = opened.file.data() + tensor.file_offset + offset;
  const auto alignment = std::max<std::size_t>(1, element_size(tensor.dtype));
  const bool empty = tensor.info->begin == tensor.info->end;  // nothing is read through it
  if (!empty && reinterpret_cast<std::uintptr_t>(address) % alignment != 0) {
    io::fail(opened.file.path(), "tensor ", io::in_quotes(tensor.info->name),
             " starts at file offset ", tensor.file_offset, ", not aligned to its ", alignment,
             "-byte elements, so it cannot be viewed in place (copy_rows() copies it)");
  }
  return address;
}

}  // namespace

SafetensorsFile::SafetensorsFile(const std::string& path)
    : state_(std::make_shared<const State>(path)) {}

const std::string& SafetensorsFile::path() const {
  return state_->file.path();
}
std::vector<std::string> SafetensorsFile::names() const {
  return state_->names;
}
bool SafetensorsFile::contains(const std::string& name) const {
  return state_->header.position.count(name) != 0;
}
const SafetensorsTensorInfo& SafetensorsFile::info(const std::string& name) const {
  return state_->info(name);
}
const std::map<std::string, std::string>& SafetensorsFile::metadata() const {
  return state_->header.metadata;
}
std::int64_t SafetensorsFile::file_size() const {
  return state_->file.size();
}
std::uint64_t SafetensorsFile::fingerprint(const std::string& name) const {
  const SafetensorsTensorInfo& info = state_->info(name);
  io::Fnv1a hash;
  hash.add_text(info.name);
  hash.add_text(info.stored_dtype);
  hash.add(static_cast<std::int64_t>(info.stored_shape.size()));
  for (std::int64_t extent : info.stored_shape) hash.add(extent);
  hash.add(info.int4_columns.value_or(-1));
  hash.add(info.begin);
  hash.add(info.end);
  hash.add(file_size());
  return hash.nonzero();
}

std::shared_ptr<const void> SafetensorsFile::keep_alive() const {
  return state_;
}

TensorView SafetensorsFile::tensor(const std::string& name,
                                   std::optional<std::int64_t> as_int4_columns) const {
  const io::ResolvedTensor tensor = io::resolve(*state_, name, as_int4_columns);
  return TensorView(mapped_address(*state_, tensor, 0), tensor.dtype, tensor.shape);
}

TensorView SafetensorsFile::rows(const std::string& name, std::int64_t first, std::int64_t count,
                                 std::optional<std::int64_t> as_int4_columns) const {
  const io::ResolvedTensor tensor = io::resolve(*state_, name, as_int4_columns);
  check_rows(path(), name, tensor, first, count, false);
  std::vector<std::int64_t> shape = tensor.shape;
  shape[0] = count;
  state_->file.will_need(tensor.file_offset + first * tensor.row_bytes, count * tensor.row_bytes);
  return TensorView(mapped_address(*state_, tensor, first * tensor.row_bytes), tensor.dtype, shape);
}

Tensor SafetensorsFile::copy_rows(const std::string& name, std::int64_t first, std::int64_t count,
                                  std::optional<std::int64_t> as_int4_columns) const {
  const io::ResolvedTensor tensor = io::resolve(*state_, name, as_int4_columns);
  check_rows(path(), name, tensor, first, count, true);
  std::vector<std::int64_t> shape = tensor.shape;
  shape[0] = 1;
  // Bytes of one row; the header's checks keep this product in range even when the tensor is empty.
  const std::int64_t row_bytes = TensorView(nullptr, tensor.dtype, shape).nbytes();
  TPEMBED_EXPECTS(row_bytes == 0 || count <= std::numeric_limits<std::int64_t>::max() / row_bytes,
                  InvalidArgumentError, path(), ": ", count, " rows of tensor ",
                  io::in_quotes(name), " overflow a 64-bit byte count");
  shape[0] = count;
  Tensor out = io::allocate_for_read(path(), tensor.dtype, shape);
  const std::int64_t present = std::clamp<std::int64_t>(tensor.shape[0] - first, 0, count);
  auto* destination = static_cast<unsigned char*>(out.data());
  if (present > 0) {
    state_->file.read_at(destination, tensor.file_offset + first * row_bytes, present * row_bytes);
  }
  std::memset(destination + present * row_bytes, 0,
              static_cast<std::size_t>((count - present) * row_bytes));
  return out;
}

Tensor SafetensorsFile::columns(const std::string& name, std::int64_t first, std::int64_t count,
                                std::optional<std::int64_t> as_int4_columns) const {
  const io::ResolvedTensor tensor = io::resolve(*state_, name, as_int4_columns);
  TPEMBED_EXPECTS(tensor.shape.size() == 2, InvalidArgumentError, path(), ": tensor ",
                  io::in_quotes(name), " has ", tensor.shape.size(),
                  " dimensions; column shards need a 2-D tensor");
  const std::int64_t columns = tensor.shape[1];
  TPEMBED_EXPECTS(first >= 0 && count >= 0 && first <= columns && count <= columns - first,
                  InvalidArgumentError, path(), ": columns [", first, ", ", first + count,
                  ") are outside tensor ", io::in_quotes(name), " of ", columns, " columns");
  return io::read_columns(*state_, tensor, first, count);
}

}  // namespace tpembed

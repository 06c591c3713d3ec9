#include "io/opened_file.hpp"

#include <new>

#include "io/checkpoint_error.hpp"

namespace tpembed::io {

std::optional<std::int64_t> int4_columns(const std::string& path,
                                         const SafetensorsTensorInfo& info,
                                         std::optional<std::int64_t> requested,
                                         const std::string& option) {
  const std::string where = path + ": tensor " + in_quotes(info.name);
  if (info.stored_dtype != "U8") {
    TPEMBED_EXPECTS(!requested, InvalidArgumentError, where, " has dtype ", info.stored_dtype,
                    "; ", option, " applies only to U8 tensors (int4 tables)");
    return std::nullopt;
  }
  TPEMBED_EXPECTS(requested || info.int4_columns, InvalidArgumentError, where, " is stored as U8 ",
                  shape_text(info.stored_shape), ", which tpembed reads as packed int4: pass ",
                  option, " (the logical column count) or record it in the metadata entry '",
                  kInt4ColumnsKeyPrefix, escaped(info.name), "'");
  TPEMBED_EXPECTS(!info.stored_shape.empty(), InvalidArgumentError, where,
                  " is a 0-d U8 tensor; int4 needs at least one dimension");
  if (!requested) return *info.int4_columns;
  TPEMBED_EXPECTS(!info.int4_columns || *info.int4_columns == *requested, InvalidArgumentError,
                  where, ": ", option, " = ", *requested, " but the metadata records ",
                  info.int4_columns.value_or(0), " columns");
  const std::int64_t row_bytes = info.stored_shape.back();
  TPEMBED_EXPECTS(*requested >= 0 && *requested / 2 + *requested % 2 == row_bytes,
                  InvalidArgumentError, where, ": ", option, " = ", *requested,
                  " does not fit rows of ", row_bytes, " bytes (expected ",
                  int4_columns_fitting(row_bytes), ")");
  return *requested;
}

OpenedFile::OpenedFile(const std::string& path) : file(path) {
  unsigned char length_bytes[8] = {};
  if (file.size() >= 8) file.read_at(length_bytes, 0, 8);
  const std::int64_t length = checked_header_length(length_bytes, file.size(), path);
  std::string text(static_cast<std::size_t>(length), '\0');
  file.read_at(text.data(), 8, length);
  header = parse_safetensors_header(text, 8 + length, file.size() - 8 - length, path);
  names.reserve(header.tensors.size());
  for (const SafetensorsTensorInfo& info : header.tensors) names.push_back(info.name);
}

const SafetensorsTensorInfo& OpenedFile::info(const std::string& name) const {
  const auto found = header.position.find(name);
  if (found == header.position.end())
    fail(file.path(), missing_tensor_message(name, names, "file"));
  return header.tensors[found->second];
}

Tensor allocate_for_read(const std::string& file, DType dtype, std::vector<std::int64_t> shape) {
  try {
    return Tensor(dtype, shape);
  } catch (const std::bad_alloc&) {
    throw BackendError(detail::concat(file, ": out of memory: cannot allocate ",
                                      TensorView(nullptr, dtype, shape).nbytes(), " bytes for ",
                                      dtype_name(dtype), shape_text(shape), " read from the file"));
  }
}

ResolvedTensor resolve(const OpenedFile& opened, const std::string& name,
                       std::optional<std::int64_t> as_int4_columns) {
  const SafetensorsTensorInfo& info = opened.info(name);
  opened.file.check_unchanged();  // every view and read of a tensor starts here
  const StoredDType* stored = find_stored_dtype(info.stored_dtype);  // validated: never null
  ResolvedTensor tensor;
  tensor.info = &info;
  tensor.shape = info.stored_shape;
  if (!stored->dtype) {
    fail(opened.file.path(), "tensor ", in_quotes(name), " has dtype ", info.stored_dtype,
         ", which tpembed cannot read (it reads F32, F16, BF16, I8, F8_E4M3, I32, I64 and U8 as "
         "int4)");
  }
  tensor.dtype = *stored->dtype;
  const std::optional<std::int64_t> columns =
      int4_columns(opened.file.path(), info, as_int4_columns, "as_int4_columns");
  if (columns) tensor.shape.back() = *columns;
  tensor.file_offset = opened.header.data_offset + info.begin;
  if (!info.stored_shape.empty() && info.stored_shape[0] > 0) {
    tensor.row_bytes = (info.end - info.begin) / info.stored_shape[0];
  }
  return tensor;
}

}  // namespace tpembed::io

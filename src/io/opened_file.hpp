// An opened safetensors file (map + validated header) and the logical view of one of its tensors.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "io/mapped_file.hpp"
#include "io/safetensors_header.hpp"

namespace tpembed::io {

struct OpenedFile {
  MappedFile file;
  SafetensorsHeader header;
  std::vector<std::string> names;  ///< In file order.

  /// Maps `path`, reads its header with pread and validates it.
  explicit OpenedFile(const std::string& path);
  /// The entry called `name`; CheckpointError listing the tensors when there is none.
  const SafetensorsTensorInfo& info(const std::string& name) const;
};

/// A tensor as tpembed sees it: its dtype (U8 read as i4), logical shape, where its bytes are.
struct ResolvedTensor {
  const SafetensorsTensorInfo* info = nullptr;
  DType dtype = DType::f32;
  std::vector<std::int64_t> shape;
  std::int64_t file_offset = 0;  ///< Of its first byte.
  std::int64_t row_bytes = 0;    ///< Bytes of one index of the first dimension (0 when none).
};

/// A host tensor to read part of `file` into. Out of memory is a BackendError that says how many
/// bytes were asked for (std::bad_alloc says nothing).
Tensor allocate_for_read(const std::string& file, DType dtype, std::vector<std::int64_t> shape);

/// The logical column count of tensor `info` of file `path` read as int4: `requested` (checked
/// against the metadata and the stored row bytes) or the count its metadata records; nullopt for
/// a tensor that is not U8 (then `requested` must be absent). The InvalidArgumentError when the
/// count is missing, wrong or not applicable names `option`, the caller's name for it
/// ("as_int4_columns" in C++, "--int4-columns" in the CLI, "hidden" in Python).
std::optional<std::int64_t> int4_columns(const std::string& path,
                                         const SafetensorsTensorInfo& info,
                                         std::optional<std::int64_t> requested,
                                         const std::string& option);

/// Resolves `name`; `as_int4_columns` as in SafetensorsFile::tensor().
ResolvedTensor resolve(const OpenedFile& opened, const std::string& name,
                       std::optional<std::int64_t> as_int4_columns);

/// Columns [first, first + count) of every row of a 2-D tensor, read with pread (see
/// SafetensorsFile::columns()). The range has been checked.
Tensor read_columns(const OpenedFile& opened, const ResolvedTensor& tensor, std::int64_t first,
                    std::int64_t count);

}  // namespace tpembed::io

// Parsing and validating a safetensors header (internal; fuzzed by tests/fuzz/).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tpembed/safetensors.hpp"

namespace tpembed::io {

/// A dtype the safetensors format defines.
struct StoredDType {
  const char* name;            ///< "F32", "U8", ...
  std::int64_t element_size;   ///< Bytes per element.
  std::optional<DType> dtype;  ///< tpembed's dtype (U8: i4), or none.
};

/// The standard dtype called `name`, or nullptr when the format has no such dtype.
const StoredDType* find_stored_dtype(const std::string& name);

/// "2B-1 or 2B": the int4 column counts whose rows take B bytes.
std::string int4_columns_fitting(std::int64_t row_bytes);

/// Largest header accepted, as in the reference implementation: a longer one is hostile.
inline constexpr std::int64_t kMaxHeaderBytes = 100'000'000;

/// A validated header: every tensor's range lies in the data buffer, matches its shape and dtype,
/// and overlaps no other; names are unique; int4 column counts in the metadata fit their tensors.
struct SafetensorsHeader {
  std::vector<SafetensorsTensorInfo> tensors;   ///< Sorted by position in the data buffer.
  std::map<std::string, std::size_t> position;  ///< Name -> index into `tensors`.
  std::map<std::string, std::string> metadata;
  std::int64_t data_offset = 0;  ///< File offset of the data buffer: 8 + header length.
  std::int64_t data_size = 0;    ///< Bytes from there to the end of the file.
};

/// The header length stored in a file's first 8 bytes, checked against the file's size.
std::int64_t checked_header_length(const unsigned char (&length_bytes)[8], std::int64_t file_size,
                                   const std::string& file);

/// Parses and validates the JSON header of a file whose data buffer holds `data_size` bytes.
/// Throws CheckpointError("<file>: ...") on any problem.
SafetensorsHeader parse_safetensors_header(std::string_view json, std::int64_t data_offset,
                                           std::int64_t data_size, const std::string& file);

/// Parses the header of a whole file held in memory (length field, JSON, data buffer).
SafetensorsHeader parse_safetensors_bytes(const void* bytes, std::size_t size,
                                          const std::string& file);

}  // namespace tpembed::io

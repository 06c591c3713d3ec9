#include "io/safetensors_header.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "io/checkpoint_error.hpp"
#include "io/strict_json.hpp"

namespace tpembed::io {

namespace {

using nlohmann::json;

// Nesting a valid header needs: the top object (depth 0) > an entry (1) > its shape (2) > extents.
constexpr int kMaxJsonDepth = 3;
constexpr std::int64_t kInt64Max = std::numeric_limits<std::int64_t>::max();

std::optional<std::int64_t> as_non_negative(const json& value) {
  if (value.is_number_unsigned()) {
    const auto number = value.get<std::uint64_t>();
    if (number <= static_cast<std::uint64_t>(kInt64Max)) return static_cast<std::int64_t>(number);
  } else if (value.is_number_integer()) {
    const auto number = value.get<std::int64_t>();
    if (number >= 0) return number;
  }
  return std::nullopt;
}

const json& field(const json& entry, const char* key, json::value_t type, const std::string& where,
                  const std::string& file) {
  const auto found = entry.find(key);
  if (found == entry.end()) fail(file, where, ": missing field \"", key, "\"");
  if (found->type() != type) {
    fail(file, where, ": field \"", key, "\" is ", found->type_name(), " ", shown(*found), ", not ",
         json(type).type_name());
  }
  return *found;
}

SafetensorsTensorInfo parse_entry(const std::string& name, const json& entry,
                                  std::int64_t data_size, const std::string& file) {
  const std::string where = "tensor " + in_quotes(name);
  if (!entry.is_object()) {
    fail(file, where, ": entry is ", entry.type_name(), " ", shown(entry), ", not an object");
  }
  SafetensorsTensorInfo info;
  info.name = name;
  info.stored_dtype = field(entry, "dtype", json::value_t::string, where, file).get<std::string>();
  const StoredDType* stored = find_stored_dtype(info.stored_dtype);
  if (stored == nullptr) {
    fail(file, where, ": unknown dtype ", in_quotes(info.stored_dtype),
         " (expected F32, F16, BF16, I8, F8_E4M3, I32, I64, U8, BOOL, F8_E5M2, I16, U16, U32, U64"
         " or F64)");
  }
  // Zero extents aside, the extents' product must fit too: row sizes computed from a tensor with
  // no elements, such as [0, 2^62] of F32, would overflow otherwise.
  std::int64_t bytes = stored->element_size, bytes_ignoring_zeros = stored->element_size;
  for (const json& extent : field(entry, "shape", json::value_t::array, where, file)) {
    const auto value = as_non_negative(extent);
    if (!value)
      fail(file, where, ": shape extent ", shown(extent), " is not a non-negative integer");
    info.stored_shape.push_back(*value);
    if (*value > kInt64Max / bytes_ignoring_zeros) {
      fail(file, where, ": shape ", shown(entry["shape"]), " of ", info.stored_dtype,
           " overflows a 64-bit byte count");
    }
    bytes_ignoring_zeros *= std::max<std::int64_t>(*value, 1);
    bytes *= *value;
  }
  const json& offsets = field(entry, "data_offsets", json::value_t::array, where, file);
  const auto begin = offsets.size() == 2 ? as_non_negative(offsets[0]) : std::nullopt;
  const auto end = offsets.size() == 2 ? as_non_negative(offsets[1]) : std::nullopt;
  if (!begin || !end) {
    fail(file, where, ": data_offsets ", shown(offsets), " are not two non-negative integers");
  }
  info.begin = *begin;
  info.end = *end;
  const std::string range =
      "data_offsets [" + std::to_string(info.begin) + ", " + std::to_string(info.end) + "]";
  if (info.begin > info.end) fail(file, where, ": ", range, " have begin > end");
  if (info.end > data_size) {
    fail(file, where, ": ", range, " run past the end of the data buffer (", data_size, " bytes)");
  }
  if (info.end - info.begin != bytes) {
    fail(file, where, ": ", range, " hold ", info.end - info.begin, " bytes but shape ",
         shape_text(info.stored_shape), " of ", info.stored_dtype, " needs ", bytes);
  }
  return info;
}

std::map<std::string, std::string> parse_metadata(const json& metadata, const std::string& file) {
  std::map<std::string, std::string> entries;
  if (metadata.is_null()) return entries;
  if (!metadata.is_object()) {
    fail(file, "__metadata__ is ", metadata.type_name(), " ", shown(metadata), ", not an object");
  }
  for (const auto& [key, value] : metadata.items()) {
    if (!value.is_string()) {
      fail(file, "__metadata__ entry ", in_quotes(key), " is ", value.type_name(), " ",
           shown(value), ", not a string");
    }
    entries.emplace(key, value.get<std::string>());
  }
  return entries;
}

void check_no_overlap(const std::vector<SafetensorsTensorInfo>& sorted, const std::string& file) {
  const SafetensorsTensorInfo* furthest = nullptr;  // the non-empty range reaching furthest so far
  for (const SafetensorsTensorInfo& info : sorted) {
    if (info.begin == info.end) continue;  // an empty range overlaps nothing
    if (furthest != nullptr && info.begin < furthest->end) {
      fail(file, "tensors ", in_quotes(furthest->name), " [", furthest->begin, ", ", furthest->end,
           ") and ", in_quotes(info.name), " [", info.begin, ", ", info.end, ") overlap");
    }
    if (furthest == nullptr || info.end > furthest->end) furthest = &info;
  }
}

// Reads the "tpembed.int4_columns.<name>" entries into the U8 tensors they describe.
void attach_int4_columns(SafetensorsHeader& header, const std::string& file) {
  const std::string prefix = kInt4ColumnsKeyPrefix;
  for (const auto& [key, value] : header.metadata) {
    if (key.compare(0, prefix.size(), prefix) != 0) continue;
    const auto found = header.position.find(key.substr(prefix.size()));
    if (found == header.position.end() || header.tensors[found->second].stored_dtype != "U8" ||
        header.tensors[found->second].stored_shape.empty()) {
      fail(file, "__metadata__ entry ", in_quotes(key),
           " names no U8 tensor of one or more dimensions");
    }
    SafetensorsTensorInfo& info = header.tensors[found->second];
    const bool digits =
        !value.empty() && value.size() <= 18 &&
        std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; });
    const std::int64_t columns = digits ? std::stoll(value) : -1;
    const std::int64_t row_bytes = info.stored_shape.back();
    if (columns < 0 || (columns + 1) / 2 != row_bytes) {
      fail(file, "__metadata__ entry ", in_quotes(key), " = ", in_quotes(value),
           " is not an int4 column count for rows of ", row_bytes, " bytes (expected ",
           int4_columns_fitting(row_bytes), ")");
    }
    info.int4_columns = columns;
  }
}

}  // namespace

std::int64_t checked_header_length(const unsigned char (&length_bytes)[8], std::int64_t file_size,
                                   const std::string& file) {
  if (file_size < 8) {
    fail(file, "file is ", file_size, " bytes, too short for the 8-byte header length");
  }
  std::uint64_t length = 0;
  for (int i = 7; i >= 0; --i) length = (length << 8) | length_bytes[i];
  if (length > static_cast<std::uint64_t>(file_size - 8)) {
    fail(file, "header length ", length, " runs past the end of the file (", file_size - 8,
         " bytes follow the length field; truncated, or not a safetensors file?)");
  }
  if (length > static_cast<std::uint64_t>(kMaxHeaderBytes)) {
    fail(file, "header length ", length, " is larger than the ", kMaxHeaderBytes,
         "-byte limit for a safetensors header");
  }
  return static_cast<std::int64_t>(length);
}

SafetensorsHeader parse_safetensors_header(std::string_view text, std::int64_t data_offset,
                                           std::int64_t data_size, const std::string& file) {
  const json root = parse_strict_json(text, file, "header", kMaxJsonDepth, 1);
  if (!root.is_object()) {
    fail(file, "header is a JSON ", root.type_name(), ", not an object");
  }
  SafetensorsHeader header;
  header.data_offset = data_offset;
  header.data_size = data_size;
  for (const auto& [name, entry] : root.items()) {
    if (name == "__metadata__") {
      header.metadata = parse_metadata(entry, file);
    } else {
      header.tensors.push_back(parse_entry(name, entry, data_size, file));
    }
  }
  std::sort(header.tensors.begin(), header.tensors.end(), [](const auto& a, const auto& b) {
    return a.begin != b.begin ? a.begin < b.begin
           : a.end != b.end   ? a.end < b.end
                              : a.name < b.name;
  });
  check_no_overlap(header.tensors, file);
  for (std::size_t i = 0; i < header.tensors.size(); ++i) {
    header.position.emplace(header.tensors[i].name, i);
  }
  attach_int4_columns(header, file);
  return header;
}

SafetensorsHeader parse_safetensors_bytes(const void* bytes, std::size_t size,
                                          const std::string& file) {
  const auto* data = static_cast<const unsigned char*>(bytes);
  unsigned char length_bytes[8] = {};
  if (size >= 8) std::memcpy(length_bytes, data, 8);
  const std::int64_t file_size = static_cast<std::int64_t>(size);
  const std::int64_t length = checked_header_length(length_bytes, file_size, file);
  const std::string_view text(reinterpret_cast<const char*>(data) + 8,
                              static_cast<std::size_t>(length));
  return parse_safetensors_header(text, 8 + length, file_size - 8 - length, file);
}

}  // namespace tpembed::io

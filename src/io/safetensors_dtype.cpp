// The dtypes of the safetensors format and their tpembed equivalents.
#include <cstring>

#include "io/safetensors_header.hpp"

namespace tpembed {

namespace {

// Every fixed-size dtype of the format. U8 is tpembed's packed int4 (see safetensors.hpp).
const io::StoredDType kStoredDTypes[] = {
    {"F32", 4, DType::f32},          {"F16", 2, DType::f16},
    {"BF16", 2, DType::bf16},        {"I8", 1, DType::i8},
    {"F8_E4M3", 1, DType::fp8_e4m3}, {"I32", 4, DType::i32},
    {"I64", 8, DType::i64},          {"U8", 1, DType::i4},
    {"BOOL", 1, std::nullopt},       {"F8_E5M2", 1, std::nullopt},
    {"I16", 2, std::nullopt},        {"U16", 2, std::nullopt},
    {"U32", 4, std::nullopt},        {"U64", 8, std::nullopt},
    {"F64", 8, std::nullopt},
};

}  // namespace

const io::StoredDType* io::find_stored_dtype(const std::string& name) {
  for (const StoredDType& stored : kStoredDTypes) {
    if (name == stored.name) return &stored;
  }
  return nullptr;
}

std::string io::int4_columns_fitting(std::int64_t row_bytes) {
  const auto most = 2 * static_cast<std::uint64_t>(row_bytes);  // no overflow for row_bytes < 2^63
  if (most == 0) return "0";
  return std::to_string(most - 1) + " or " + std::to_string(most);
}

const char* safetensors_dtype_name(DType dtype) {
  for (const io::StoredDType& stored : kStoredDTypes) {
    if (stored.dtype == dtype) return stored.name;
  }
  return "unknown";
}

std::optional<DType> dtype_from_safetensors(const std::string& name) {
  const io::StoredDType* stored = io::find_stored_dtype(name);
  return stored == nullptr ? std::nullopt : stored->dtype;
}

}  // namespace tpembed

#include "tpembed/dtype.hpp"

#include "tpembed/error.hpp"

namespace tpembed {

namespace {
constexpr DType kAllDTypes[] = {DType::f32, DType::f16,      DType::bf16, DType::i8,
                                DType::fp8_e4m3, DType::i4, DType::i32,  DType::i64};
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::f32: return "f32";
    case DType::f16: return "f16";
    case DType::bf16: return "bf16";
    case DType::i8: return "i8";
    case DType::fp8_e4m3: return "fp8_e4m3";
    case DType::i4: return "i4";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
  }
  return "unknown";
}

DType dtype_from_name(const std::string& name) {
  for (DType dtype : kAllDTypes) {
    if (name == dtype_name(dtype)) return dtype;
  }
  throw InvalidArgumentError("unknown dtype '" + name +
                             "' (expected one of f32, f16, bf16, i8, fp8_e4m3, i4, i32, i64)");
}

}  // namespace tpembed

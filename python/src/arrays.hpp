// DLPack arrays (nanobind ndarrays) as tpembed tensor views: zero copy, C-contiguous only, and
// every dtype or device that does not map is refused with a message, never converted.
#pragma once

#include <nanobind/ndarray.h>

#include <cstdint>
#include <optional>
#include <string>

#include "tpembed/dtype.hpp"
#include "tpembed/tensor.hpp"

namespace tpembed::python {

/// Any DLPack array, read-only (inputs) or writable (outputs).
using InputArray = nanobind::ndarray<nanobind::ro>;
using OutputArray = nanobind::ndarray<>;

/// What the caller says an array holds where its DLPack dtype cannot: uint8 bytes of fp8 or packed
/// int4 (with the logical column count), uint16 bits of bf16. Empty: the array's own dtype.
struct Declared {
  std::optional<DType> dtype;
  std::optional<std::int64_t> int4_columns;  ///< i4 only: the logical column count H.
};

/// A view of `array` (named `name` in messages). Throws InvalidArgumentError (ValueError) when its
/// dtype, device or layout does not fit, or when `declared` does not match what the array holds.
TensorView to_view(const InputArray& array, const char* name, const Declared& declared = {});
TensorView to_view(const OutputArray& array, const char* name, const Declared& declared = {});

/// Parses a dtype name of tpembed's ("f32", "bf16", "fp8_e4m3", "i4", ...); InvalidArgumentError
/// (naming `what` and the accepted names) otherwise.
DType parse_dtype(const std::string& name, const char* what);

/// Parses an optional dtype name.
std::optional<DType> parse_dtype(const std::optional<std::string>& name, const char* what);

}  // namespace tpembed::python

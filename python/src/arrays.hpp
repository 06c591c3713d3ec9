// DLPack arrays (nanobind ndarrays) as tpembed tensor views: zero copy, C-contiguous only, and
// every dtype or device that does not map is refused with a message, never converted.
#pragma once

#include <nanobind/ndarray.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

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

/// `object` (an array of NumPy, PyTorch, CuPy..., or a DLPack capsule) imported as an array.
/// Throws InvalidArgumentError naming `name`, what was given and what is accepted when it cannot be
/// (None, a list, an object or big-endian array...): nanobind's own dispatch error names neither.
InputArray input_array(const nanobind::handle& object, const char* name);
/// As input_array, None being no array.
std::optional<InputArray> optional_input_array(const nanobind::handle& object, const char* name);
/// As input_array, for an array tpembed writes (read-only arrays are refused).
OutputArray output_array(const nanobind::handle& object, const char* name);

/// An input the output must not share memory with, as messages name it.
struct NamedView {
  const char* name;
  TensorView view;
};

/// Throws InvalidArgumentError when the bytes of `out` overlap those of any of `inputs`: the
/// lookup would read rows (or ids) it is overwriting.
void check_no_overlap(const TensorView& out, const std::vector<NamedView>& inputs);

/// A view of `array` (named `name` in messages). Throws InvalidArgumentError (ValueError) when its
/// dtype, device or layout does not fit, or when `declared` does not match what the array holds.
TensorView to_view(const InputArray& array, const char* name, const Declared& declared = {});
TensorView to_view(const OutputArray& array, const char* name, const Declared& declared = {});

/// The bytes of an array tpembed writes whatever its dtype says (a workspace, counts), and where.
struct RawBuffer {
  void* data = nullptr;
  std::size_t bytes = 0;
  Device device;
};

/// `array` as raw bytes: on the host or a CUDA device and C-contiguous, else InvalidArgumentError
/// naming `name`.
RawBuffer raw_buffer(const OutputArray& array, const char* name);

/// Parses a dtype name of tpembed's ("f32", "bf16", "fp8_e4m3", "i4", ...); InvalidArgumentError
/// (naming `what` and the accepted names) otherwise.
DType parse_dtype(const std::string& name, const char* what);

/// Parses an optional dtype name.
std::optional<DType> parse_dtype(const std::optional<std::string>& name, const char* what);

}  // namespace tpembed::python

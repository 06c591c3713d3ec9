#include "arrays.hpp"

#include <sstream>
#include <vector>

#include "tpembed/error.hpp"

namespace tpembed::python {

namespace dl = nanobind::dlpack;

namespace {

// DLPack device types (dlpack.h): the two tpembed runs on.
constexpr int kDLCPU = 1;
constexpr int kDLCUDA = 2;

std::string dlpack_dtype_name(const dl::dtype& dtype) {
  std::string base;
  switch (static_cast<dl::dtype_code>(dtype.code)) {
    case dl::dtype_code::Int:
      base = "int";
      break;
    case dl::dtype_code::UInt:
      base = "uint";
      break;
    case dl::dtype_code::Float:
      base = "float";
      break;
    case dl::dtype_code::Bfloat:
      base = "bfloat";
      break;
    case dl::dtype_code::Complex:
      base = "complex";
      break;
    case dl::dtype_code::Bool:
      return "bool";
    case dl::dtype_code::Float8_E4M3FN:
      return "float8_e4m3fn";
    case dl::dtype_code::Float8_E5M2:
      return "float8_e5m2";
    default:
      base = detail::concat("dlpack_type", int(dtype.code), "_");
      break;
  }
  std::string name = detail::concat(base, int(dtype.bits));
  if (dtype.lanes != 1) name += detail::concat("x", int(dtype.lanes));
  return name;
}

// The tpembed dtype an array holds by its DLPack dtype alone, if any.
std::optional<DType> natural_dtype(const dl::dtype& dtype) {
  if (dtype.lanes != 1) return std::nullopt;
  const auto code = static_cast<dl::dtype_code>(dtype.code);
  if (code == dl::dtype_code::Float && dtype.bits == 32) return DType::f32;
  if (code == dl::dtype_code::Float && dtype.bits == 16) return DType::f16;
  if (code == dl::dtype_code::Bfloat && dtype.bits == 16) return DType::bf16;
  if (code == dl::dtype_code::Float8_E4M3FN && dtype.bits == 8) return DType::fp8_e4m3;
  if (code == dl::dtype_code::Int && dtype.bits == 8) return DType::i8;
  if (code == dl::dtype_code::Int && dtype.bits == 32) return DType::i32;
  if (code == dl::dtype_code::Int && dtype.bits == 64) return DType::i64;
  return std::nullopt;
}

// Raw bytes that hold a dtype DLPack (or NumPy) cannot name, when the caller declares it.
bool holds_declared_bits(const dl::dtype& dtype, DType declared) {
  const bool uint8 = dtype.code == std::uint8_t(dl::dtype_code::UInt) && dtype.bits == 8;
  const bool uint16 = dtype.code == std::uint8_t(dl::dtype_code::UInt) && dtype.bits == 16;
  return dtype.lanes == 1 && (((declared == DType::fp8_e4m3 || declared == DType::i4) && uint8) ||
                              (declared == DType::bf16 && uint16));
}

// The host or one CUDA device, nothing else.
template <typename Array>
Device device_of(const Array& array, const char* name) {
  if (array.device_type() == kDLCPU) return Device::cpu();
  if (array.device_type() == kDLCUDA) return Device::cuda(array.device_id());
  throw InvalidArgumentError(
      detail::concat(name, " is on DLPack device type ", array.device_type(),
                     ": tpembed takes host (CPU) arrays and CUDA tensors; move it explicitly"));
}

// The extents of a dense row-major array; anything else is refused (tpembed does not copy).
template <typename Array>
std::vector<std::int64_t> c_contiguous_shape(const Array& array, const char* name) {
  std::vector<std::int64_t> shape(array.ndim());
  for (std::size_t d = 0; d < array.ndim(); ++d)
    shape[d] = static_cast<std::int64_t>(array.shape(d));
  std::int64_t expected_stride = 1;
  bool empty = false;
  for (std::size_t d = 0; d < array.ndim(); ++d) empty = empty || shape[d] == 0;
  for (std::size_t d = array.ndim(); d-- > 0;) {
    if (!empty && shape[d] != 1 && array.stride(d) != expected_stride) {
      std::ostringstream strides;
      for (std::size_t k = 0; k < array.ndim(); ++k) strides << (k ? ", " : "") << array.stride(k);
      throw InvalidArgumentError(
          detail::concat(name, " is not C-contiguous (strides [", strides.str(),
                         "] in elements); pass a contiguous array (e.g. numpy.ascontiguousarray or "
                         "tensor.contiguous()): tpembed does not copy"));
    }
    expected_stride *= shape[d];
  }
  return shape;
}

template <typename Array>
TensorView make_view(const Array& array, const char* name, const Declared& declared) {
  const Device device = device_of(array, name);

  // Dtype: the array's own, or the declared one where the array holds its raw bits.
  const dl::dtype dtype = array.dtype();
  const std::optional<DType> natural = natural_dtype(dtype);
  DType resolved;
  if (declared.dtype) {
    if (natural == declared.dtype || holds_declared_bits(dtype, *declared.dtype)) {
      resolved = *declared.dtype;
    } else {
      throw InvalidArgumentError(
          detail::concat(name, " holds ", dlpack_dtype_name(dtype), " but was declared ",
                         dtype_name(*declared.dtype),
                         " (fp8_e4m3 and i4 come as uint8 bytes, bf16 as bfloat16 "
                         "or uint16 bits); tpembed does not convert dtypes"));
    }
  } else if (natural) {
    resolved = *natural;
  } else {
    throw InvalidArgumentError(detail::concat(
        name, " has dtype ", dlpack_dtype_name(dtype),
        ", which tpembed does not take: tables are f32, f16, bf16, i8, fp8_e4m3 or i4, ids int32 "
        "or "
        "int64, scales and outputs f32, f16 or bf16; raw bits need their dtype declared "
        "(uint8: weight_dtype='fp8_e4m3' or 'i4' with hidden=; uint16: weight_dtype or "
        "scale_dtype 'bf16'); tpembed does not convert dtypes"));
  }

  std::vector<std::int64_t> shape = c_contiguous_shape(array, name);

  if (resolved == DType::i4) {
    if (!declared.int4_columns) {
      throw InvalidArgumentError(detail::concat(
          name,
          " is declared i4 (two values a byte), so it needs hidden=, the logical number of "
          "columns"));
    }
    const std::int64_t columns = *declared.int4_columns;
    // The user's own number, before a [rows, ceil(hidden / 2)] shape is derived from it.
    TPEMBED_EXPECTS(columns >= 0, InvalidArgumentError, "hidden must be the number of columns of ",
                    name, " (i4), a count >= 0, got hidden=", columns);
    if (shape.size() != 2 || shape[1] != (columns + 1) / 2) {
      throw ShapeError(detail::concat(
          name, " is declared i4 with hidden=", columns, ", so it must be uint8 [rows, ",
          (columns + 1) / 2, "] (ceil(hidden / 2) bytes a row), got ", shape.size(), "-D with ",
          shape.empty() ? 0 : shape.back(), " bytes in the last dimension"));
    }
    shape[1] = columns;
  } else if (declared.int4_columns) {
    throw InvalidArgumentError(detail::concat("hidden= applies to i4 tables only, but ", name,
                                              " is ", dtype_name(resolved)));
  }
  const void* data = static_cast<const std::uint8_t*>(array.data_handle()) + array.byte_offset();
  return TensorView(data, resolved, std::move(shape), device);
}

}  // namespace

RawBuffer raw_buffer(const OutputArray& array, const char* name) {
  RawBuffer buffer;
  buffer.device = device_of(array, name);
  c_contiguous_shape(array, name);
  buffer.data = static_cast<std::uint8_t*>(array.data()) + array.byte_offset();
  buffer.bytes = array.size() * array.itemsize();
  return buffer;
}

namespace {

// What a refused argument was, for messages: its type, and its dtype where it has one.
std::string describe_object(const nanobind::handle& object) {
  if (object.is_none()) return "None";
  std::string text = nanobind::inst_name(object).c_str();
  if (nanobind::hasattr(object, "dtype")) {
    try {
      const nanobind::object dtype = object.attr("dtype");
      const nanobind::str shown{nanobind::handle(dtype.ptr())};  // str(dtype), not a cast
      text += detail::concat(" of dtype ", shown.c_str());
    } catch (const nanobind::python_error&) {
      // A dtype that cannot be shown: the type name alone says enough.
    }
  }
  // A producer that refuses to export (a PyTorch tensor that requires grad, a byte-swapped array)
  // says why in its own words.
  if (nanobind::hasattr(object, "__dlpack__")) {
    try {
      object.attr("__dlpack__")();
    } catch (const nanobind::python_error& error) {
      text += detail::concat(", whose __dlpack__() says: ",
                             nanobind::str{nanobind::handle(error.value().ptr())}.c_str());
    }
  }
  return text;
}

template <typename Array>
Array import_array(const nanobind::handle& object, const char* name, const char* required) {
  Array array;
  if (object.is_none() || !nanobind::try_cast(object, array, /*convert=*/false)) {
    InputArray readable;
    if (!object.is_none() && nanobind::try_cast(object, readable, /*convert=*/false)) {
      throw InvalidArgumentError(
          detail::concat(name, " is read-only (", describe_object(object),
                         "); tpembed writes into it: pass a writable array"));
    }
    throw InvalidArgumentError(detail::concat(
        name, " must be ", required,
        " (NumPy, or a DLPack tensor such as PyTorch's or CuPy's) of a dtype tpembed takes, in "
        "native byte order; got ",
        describe_object(object)));
  }
  return array;
}

}  // namespace

InputArray input_array(const nanobind::handle& object, const char* name) {
  return import_array<InputArray>(object, name, "an array");
}

std::optional<InputArray> optional_input_array(const nanobind::handle& object, const char* name) {
  if (object.is_none()) return std::nullopt;
  return input_array(object, name);
}

OutputArray output_array(const nanobind::handle& object, const char* name) {
  return import_array<OutputArray>(object, name, "a writable array");
}

void check_no_overlap(const TensorView& out, const std::vector<NamedView>& inputs) {
  const auto begin = reinterpret_cast<std::uintptr_t>(out.data);
  const auto end = begin + static_cast<std::uintptr_t>(out.nbytes());
  if (begin == end) return;
  for (const NamedView& input : inputs) {
    if (input.view.data == nullptr) continue;  // an optional input not given
    const auto first = reinterpret_cast<std::uintptr_t>(input.view.data);
    const auto last = first + static_cast<std::uintptr_t>(input.view.nbytes());
    // Host and CUDA pointers share one (unified) address space: ranges compare across devices.
    if (first < end && begin < last) {
      throw InvalidArgumentError(
          detail::concat("out shares memory with ", input.name, " (bytes [0x", std::hex, begin,
                         ", 0x", end, ") and [0x", first, ", 0x", last, std::dec,
                         ")): the lookup would overwrite what it reads; pass an out of its own"));
    }
  }
}

TensorView to_view(const InputArray& array, const char* name, const Declared& declared) {
  return make_view(array, name, declared);
}

TensorView to_view(const OutputArray& array, const char* name, const Declared& declared) {
  return make_view(array, name, declared);
}

DType parse_dtype(const std::string& name, const char* what) {
  try {
    return dtype_from_name(name);
  } catch (const Error&) {
    throw InvalidArgumentError(detail::concat(
        what, " '", name, "' is not a tpembed dtype (f32, f16, bf16, i8, fp8_e4m3, i4)"));
  }
}

std::optional<DType> parse_dtype(const std::optional<std::string>& name, const char* what) {
  if (!name) return std::nullopt;
  return parse_dtype(*name, what);
}

}  // namespace tpembed::python

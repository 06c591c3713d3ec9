#include "embedding_common.hpp"

#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>

#include "tpembed/error.hpp"

namespace nb = nanobind;

namespace tpembed::python {

namespace {

// The output view: uint16 arrays hold bf16 bits; any other dtype is taken as it is and checked
// against the output dtype by the op.
TensorView output_view(const OutputArray& array, DType out_dtype) {
  Declared declared;
  const nb::dlpack::dtype dtype = array.dtype();
  if (out_dtype == DType::bf16 && dtype.code == std::uint8_t(nb::dlpack::dtype_code::UInt) &&
      dtype.bits == 16) {
    declared.dtype = DType::bf16;
  }
  return to_view(array, "out", declared);
}

// A forward's arguments as tensors, and what keeps them alive until the call returns.
struct ForwardArguments {
  std::optional<InputArray> ids_array;
  std::optional<OutputArray> out_array;
  TensorView ids, out;
  nb::object result = nb::none();
};

// `out_shape(ids)`: the shape an output allocated for these ids gets.
template <typename OutShape>
ForwardArguments forward_arguments(DType out_dtype, const OutShape& out_shape,
                                   const std::vector<NamedView>& inputs, const nb::handle& ids,
                                   const nb::handle& out, const nb::callable& allocate) {
  ForwardArguments arguments;
  arguments.ids_array = input_array(ids, "ids");
  arguments.ids = to_view(*arguments.ids_array, "ids");
  nb::object target = nb::borrow(out);
  if (out.is_none()) {
    nb::list shape;
    for (std::int64_t extent : out_shape(arguments.ids)) shape.append(extent);
    nb::tuple allocated = nb::cast<nb::tuple>(allocate(nb::tuple(shape), dtype_name(out_dtype)));
    arguments.result = allocated[0];
    target = allocated[1];
  }
  arguments.out_array = output_array(target, "out");
  arguments.out = output_view(*arguments.out_array, out_dtype);
  std::vector<NamedView> read = inputs;
  read.push_back({"ids", arguments.ids});
  check_no_overlap(arguments.out, read);
  return arguments;
}

}  // namespace

ShardArrays make_shard(const nb::handle& weight, const nb::handle& per_token_scale,
                       const nb::handle& padding, const nb::handle& padding_scale,
                       const std::optional<std::string>& weight_dtype,
                       const std::optional<std::string>& scale_dtype,
                       std::optional<std::int64_t> hidden) {
  const Declared table{parse_dtype(weight_dtype, "weight_dtype"), hidden};
  const Declared scale{parse_dtype(scale_dtype, "scale_dtype"), std::nullopt};
  ShardArrays result;
  const auto view = [&](const nb::handle& object, const char* name, const Declared& declared) {
    const std::optional<InputArray> array = optional_input_array(object, name);
    if (!array) return TensorView();
    result.arrays.push_back(*array);
    return to_view(*array, name, declared);
  };
  result.shard.weight = view(weight, "weight", table);
  TPEMBED_EXPECTS(!result.arrays.empty(), InvalidArgumentError,
                  "weight must be an array (the table), got None");
  result.shard.scale = view(per_token_scale, "per_token_scale", scale);
  // Padding rows have the table's dtype and columns: declared the same way.
  result.shard.padding = view(padding, "padding", table);
  result.shard.padding_scale = view(padding_scale, "padding_scale", scale);
  return result;
}

std::vector<NamedView> shard_inputs(const EmbeddingShard& shard) {
  return {{"weight", shard.weight},
          {"per_token_scale", shard.scale},
          {"padding", shard.padding},
          {"padding_scale", shard.padding_scale}};
}

std::exception_ptr as_tpembed_error(std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const nb::python_error& python) {
    const std::string type = nb::inst_name(python.value()).c_str();
    const std::string text = nb::str(python.value()).c_str();
    if (python.matches(PyExc_TypeError) || python.matches(PyExc_ValueError)) {
      return std::make_exception_ptr(InvalidArgumentError(text));
    }
    return std::make_exception_ptr(BackendError(detail::concat(type, ": ", text)));
  } catch (...) {
    return error;
  }
}

nb::object forward_into(ParallelEmbedding& layer, const std::vector<NamedView>& inputs,
                        const nb::handle& ids, const nb::handle& out, const nb::callable& allocate,
                        std::uintptr_t stream, bool release_gil) {
  ForwardArguments arguments;
  try {
    // ids.shape + [H], or this rank's chunk of it (scattered output)
    const auto out_shape = [&](const TensorView& ids_view) { return layer.output_shape(ids_view); };
    arguments = forward_arguments(layer.layout().out_dtype, out_shape, inputs, ids, out, allocate);
  } catch (...) {
    layer.fail_forward(as_tpembed_error(std::current_exception()));
  }
  void* cuda_stream = reinterpret_cast<void*>(stream);
  if (release_gil) {
    nb::gil_scoped_release unlocked;
    layer.forward(arguments.ids, arguments.out, cuda_stream);
  } else {
    layer.forward(arguments.ids, arguments.out, cuda_stream);
  }
  return arguments.result;
}

nb::object lookup_into(const EmbeddingOptions& options, const TensorView& weight,
                       const std::vector<NamedView>& inputs, const nb::handle& ids,
                       const nb::handle& out, const nb::callable& allocate, std::uintptr_t stream) {
  TPEMBED_EXPECTS(options.tp_size == 1 && !options.strict, InvalidArgumentError,
                  "lookup_into: tp_size 1 without strict only (the library's one-gather path)");
  const DType out_dtype = options.out_dtype.value_or(weight.dtype);
  if (!is_float(out_dtype)) {
    // A quantized table without out_dtype: the library's own check says so.
    embedding(TensorView(), weight, TensorView(), options, nullptr, reinterpret_cast<void*>(stream));
    throw InvalidArgumentError(detail::concat("out_dtype ", dtype_name(out_dtype), " is not f32, f16 or bf16"));
  }
  const auto out_shape = [&](const TensorView& ids_view) {
    std::vector<std::int64_t> shape = ids_view.shape;
    shape.push_back(weight.shape.size() == 2 ? weight.shape[1] : 0);  // a bad table is refused below
    return shape;
  };
  ForwardArguments arguments = forward_arguments(out_dtype, out_shape, inputs, ids, out, allocate);
  embedding(arguments.ids, weight, arguments.out, options, nullptr, reinterpret_cast<void*>(stream));
  return arguments.result;
}

}  // namespace tpembed::python

#include "embedding_common.hpp"

#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>

#include "tpembed/error.hpp"

namespace nb = nanobind;

namespace tpembed::python {

namespace {

TensorView optional_view(const std::optional<InputArray>& array, const char* name,
                         const Declared& declared) {
  return array ? to_view(*array, name, declared) : TensorView();
}

// The output view: uint16 arrays hold bf16 bits; any other dtype is taken as it is and checked
// against the output dtype by the op.
TensorView output_view(const nb::object& object, DType out_dtype) {
  OutputArray array;
  if (!nb::try_cast(object, array, /*convert=*/false)) {
    throw InvalidArgumentError(
        detail::concat("out must be a writable array (NumPy, or a DLPack tensor such as PyTorch's "
                       "or CuPy's); this ",
                       nb::inst_name(object).c_str(), " is read-only or not an array"));
  }
  Declared declared;
  const nb::dlpack::dtype dtype = array.dtype();
  if (out_dtype == DType::bf16 && dtype.code == std::uint8_t(nb::dlpack::dtype_code::UInt) &&
      dtype.bits == 16) {
    declared.dtype = DType::bf16;
  }
  return to_view(array, "out", declared);
}

}  // namespace

EmbeddingShard make_shard(const InputArray& weight,
                          const std::optional<InputArray>& per_token_scale,
                          const std::optional<InputArray>& padding,
                          const std::optional<InputArray>& padding_scale,
                          const std::optional<std::string>& weight_dtype,
                          const std::optional<std::string>& scale_dtype,
                          std::optional<std::int64_t> hidden) {
  Declared table{parse_dtype(weight_dtype, "weight_dtype"), hidden};
  Declared scale{parse_dtype(scale_dtype, "scale_dtype"), std::nullopt};
  EmbeddingShard shard;
  shard.weight = to_view(weight, "weight", table);
  shard.scale = optional_view(per_token_scale, "per_token_scale", scale);
  // Padding rows have the table's dtype and columns: declared the same way.
  shard.padding = optional_view(padding, "padding", table);
  shard.padding_scale = optional_view(padding_scale, "padding_scale", scale);
  return shard;
}

nb::object forward_into(ParallelEmbedding& layer, const TensorView& ids, const nb::object& out,
                        const nb::callable& allocate, std::uintptr_t stream, bool release_gil) {
  const ShardLayout& layout = layer.layout();
  nb::object result = nb::none();
  nb::object target = out;
  if (out.is_none()) {
    nb::list shape;
    for (std::int64_t extent : ids.shape) shape.append(extent);
    shape.append(layout.global_cols);
    nb::tuple allocated =
        nb::cast<nb::tuple>(allocate(nb::tuple(shape), dtype_name(layout.out_dtype)));
    result = allocated[0];
    target = allocated[1];
  }
  const TensorView out_view = output_view(target, layout.out_dtype);
  void* cuda_stream = reinterpret_cast<void*>(stream);
  if (release_gil) {
    nb::gil_scoped_release unlocked;
    layer.forward(ids, out_view, cuda_stream);
  } else {
    layer.forward(ids, out_view, cuda_stream);
  }
  return result;
}

}  // namespace tpembed::python

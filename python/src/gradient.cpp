// tpembed.embedding_backward(): the gradient of the lookup with respect to a table (or a shard of
// one), into a grad_weight the caller passes or the Python layer allocates in grad_out's framework.
// The op (tpembed/gradient.hpp) checks shapes and dtypes against each other; this file turns the
// Python arguments into views, and checks what the op cannot see: num_rows against grad_weight,
// the counts and workspace buffers, and memory shared between what is read and what is written.
#include "gradient.hpp"

#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "bindings.hpp"
#include "tpembed/error.hpp"

namespace nb = nanobind;

namespace tpembed::python {

namespace {

// The four count words: a 64-bit integer array of 4 elements on grad_weight's device.
unsigned long long* counts_buffer(const OutputArray& array, const Device& device) {
  const RawBuffer buffer = raw_buffer(array, "counts");
  const nb::dlpack::dtype dtype = array.dtype();
  const bool integer64 = dtype.bits == 64 && dtype.lanes == 1 &&
                         (dtype.code == std::uint8_t(nb::dlpack::dtype_code::Int) ||
                          dtype.code == std::uint8_t(nb::dlpack::dtype_code::UInt));
  TPEMBED_EXPECTS(integer64 && array.size() == 4, InvalidArgumentError,
                  "counts must be 4 int64 or uint64 elements (accumulated, unowned, out_of_range, "
                  "ignored), got ",
                  array.size(), " elements of ", int(dtype.bits), "-bit dtype code ",
                  int(dtype.code));
  TPEMBED_EXPECTS(buffer.device == device, InvalidArgumentError, "counts is on ",
                  device_name(buffer.device), " but grad_weight is on ", device_name(device),
                  ": the backward stores its counts where it runs");
  return static_cast<unsigned long long*>(buffer.data);
}

RawBuffer workspace_buffer(const OutputArray& array, const Device& device) {
  const RawBuffer buffer = raw_buffer(array, "workspace");
  TPEMBED_EXPECTS(buffer.device == device, InvalidArgumentError, "workspace is on ",
                  device_name(buffer.device), " but grad_weight is on ", device_name(device));
  TPEMBED_EXPECTS(reinterpret_cast<std::uintptr_t>(buffer.data) % 256 == 0, InvalidArgumentError,
                  "workspace must start on a 256-byte boundary (a fresh allocation does); got "
                  "address 0x",
                  std::hex, reinterpret_cast<std::uintptr_t>(buffer.data));
  return buffer;
}

nb::object embedding_backward(
    const nb::handle& ids, const nb::handle& grad_out, const nb::handle& grad_weight,
    const nb::callable& allocate, std::int64_t num_rows, std::optional<std::int64_t> num_cols,
    std::int64_t row_offset, std::optional<std::int64_t> valid_ids,
    std::optional<std::int64_t> padding_idx, std::int64_t column_offset,
    const nb::handle& per_token_scale, const nb::handle& padding_scale,
    const nb::handle& grad_padding, const std::optional<std::string>& scale_dtype,
    const std::optional<std::string>& grad_out_dtype, const std::optional<std::string>& out_dtype,
    bool accumulate, const nb::handle& workspace, const nb::handle& counts, std::uintptr_t stream) {
  TPEMBED_EXPECTS(num_rows >= 0, InvalidArgumentError,
                  "num_rows must be the rows of grad_weight, a count >= 0, got ", num_rows);
  const InputArray ids_array = input_array(ids, "ids");
  const TensorView ids_view = to_view(ids_array, "ids");
  const InputArray grad_out_array = input_array(grad_out, "grad_out");
  const TensorView grad_out_tensor =
      grad_out_view(grad_out_array, parse_dtype(grad_out_dtype, "grad_out_dtype"));

  GradientOptions options;
  options.row_offset = row_offset;
  options.valid_ids = valid_ids;
  options.ignored_id = padding_idx;
  options.column_offset = column_offset;
  options.accumulate = accumulate;
  const Declared scale_declared{parse_dtype(scale_dtype, "scale_dtype"), std::nullopt};
  const std::optional<InputArray> scale_array =
      optional_input_array(per_token_scale, "per_token_scale");
  if (scale_array)
    options.per_token_scale = to_view(*scale_array, "per_token_scale", scale_declared);
  const std::optional<InputArray> padding_scale_array =
      optional_input_array(padding_scale, "padding_scale");
  if (padding_scale_array) {
    options.padding_scale = to_view(*padding_scale_array, "padding_scale", scale_declared);
  }

  // The columns of an allocated gradient: grad_out's, past column_offset, unless named.
  std::int64_t cols = 0;
  if (num_cols) {
    TPEMBED_EXPECTS(*num_cols >= 0, InvalidArgumentError,
                    "num_cols must be the columns of grad_weight, a count >= 0, got ", *num_cols);
    cols = *num_cols;
  } else if (grad_weight.is_none()) {
    TPEMBED_EXPECTS(grad_out_tensor.ndim() >= 1, ShapeError,
                    "grad_out must have shape ids.shape + [H], got a 0-D array");
    cols = grad_out_tensor.shape.back() - column_offset;
    TPEMBED_EXPECTS(cols >= 0, ShapeError, "column_offset ", column_offset,
                    " is past the last column of grad_out ", detail::bracketed(grad_out_tensor.shape));
  }
  const std::optional<DType> out = parse_dtype(out_dtype, "out_dtype");
  GradientOutput weight =
      gradient_output(grad_weight, "grad_weight", out, "out_dtype", {num_rows, cols}, &allocate);
  const std::vector<std::int64_t>& weight_shape = weight.view.shape;
  if (!grad_weight.is_none()) {
    TPEMBED_EXPECTS(weight_shape.size() == 2, ShapeError, "grad_weight must be [num_rows, H], got ",
                    detail::bracketed(weight_shape));
    TPEMBED_EXPECTS(weight_shape[0] == num_rows, ShapeError, "grad_weight ",
                    detail::bracketed(weight_shape), " has ", weight_shape[0], " rows but num_rows is ",
                    num_rows);
    TPEMBED_EXPECTS(!num_cols || weight_shape[1] == *num_cols, ShapeError, "grad_weight ",
                    detail::bracketed(weight_shape), " has ", weight_shape[1], " columns but num_cols is ",
                    num_cols.value_or(0));
  }
  // grad_padding has grad_weight's dtype (the op checks that it does).
  const GradientOutput padding = gradient_output(grad_padding, "grad_padding", weight.view.dtype,
                                                 "grad_weight's dtype", {}, nullptr);
  options.grad_padding = padding.view;

  std::optional<OutputArray> counts_array, workspace_array;
  TensorView counts_view, workspace_view;
  if (!counts.is_none()) {
    counts_array = output_array(counts, "counts");
    options.counts = counts_buffer(*counts_array, weight.view.device);
    counts_view = TensorView(options.counts, DType::i64, {4}, weight.view.device);
  }
  if (!workspace.is_none()) {
    workspace_array = output_array(workspace, "workspace");
    const RawBuffer buffer = workspace_buffer(*workspace_array, weight.view.device);
    options.workspace = buffer.data;
    options.workspace_bytes = buffer.bytes;
    workspace_view = TensorView(buffer.data, DType::i8, {static_cast<std::int64_t>(buffer.bytes)},
                                buffer.device);
  }

  const std::vector<NamedView> read = {{"ids", ids_view},
                                       {"grad_out", grad_out_tensor},
                                       {"per_token_scale", options.per_token_scale},
                                       {"padding_scale", options.padding_scale}};
  std::vector<NamedView> besides_weight = read;
  besides_weight.push_back({"grad_padding", padding.view});
  besides_weight.push_back({"counts", counts_view});
  besides_weight.push_back({"workspace", workspace_view});
  check_gradient_overlap("grad_weight", weight.view, besides_weight);
  std::vector<NamedView> besides_padding = read;
  besides_padding.push_back({"counts", counts_view});
  besides_padding.push_back({"workspace", workspace_view});
  check_gradient_overlap("grad_padding", padding.view, besides_padding);
  std::vector<NamedView> besides_counts = read;
  besides_counts.push_back({"workspace", workspace_view});
  check_gradient_overlap("counts", counts_view, besides_counts);

  {
    // The arrays above keep every view alive; nothing here touches Python objects.
    nb::gil_scoped_release unlocked;
    tpembed::embedding_backward(ids_view, grad_out_tensor, weight.view, options,
                                reinterpret_cast<void*>(stream));
  }
  return weight.result;
}

}  // namespace

TensorView grad_out_view(const InputArray& array, std::optional<DType> declared) {
  const nb::dlpack::dtype dtype = array.dtype();
  const bool uint16 = dtype.code == std::uint8_t(nb::dlpack::dtype_code::UInt) && dtype.bits == 16;
  TPEMBED_EXPECTS(!uint16 || declared, InvalidArgumentError,
                  "grad_out is a uint16 array: if it holds bf16 bits, say so with "
                  "grad_out_dtype='bf16' (grad_out is f32, f16 or bf16)");
  return to_view(array, "grad_out", Declared{declared, std::nullopt});
}

GradientOutput gradient_output(const nb::handle& object, const char* name,
                               std::optional<DType> declared, const char* declared_by,
                               const std::vector<std::int64_t>& shape,
                               const nb::callable* allocate) {
  GradientOutput output;
  nb::object target = nb::borrow(object);
  if (object.is_none()) {
    if (allocate == nullptr) return output;
    nb::list extents;
    for (std::int64_t extent : shape) extents.append(extent);
    nb::tuple allocated = nb::cast<nb::tuple>(
        (*allocate)(nb::tuple(extents), dtype_name(declared.value_or(DType::f32))));
    output.result = allocated[0];
    target = allocated[1];
    declared = declared.value_or(DType::f32);
  }
  output.array = output_array(target, name);
  const nb::dlpack::dtype dtype = output.array->dtype();
  const bool uint16 = dtype.code == std::uint8_t(nb::dlpack::dtype_code::UInt) && dtype.bits == 16;
  TPEMBED_EXPECTS(!uint16 || declared, InvalidArgumentError, name,
                  " is a uint16 array: if it holds bf16 bits, say so with out_dtype='bf16' (a "
                  "gradient is f32, f16 or bf16)");
  if (uint16) {
    output.view = to_view(*output.array, name, Declared{declared, std::nullopt});
    return output;
  }
  output.view = to_view(*output.array, name);
  TPEMBED_EXPECTS(!declared || output.view.dtype == *declared, InvalidArgumentError, name, " is ",
                  dtype_name(output.view.dtype), " but ", declared_by, " is ",
                  dtype_name(declared.value_or(DType::f32)),
                  ": tpembed does not convert dtypes (pass a gradient of that dtype)");
  return output;
}

void check_gradient_overlap(const char* name, const TensorView& written,
                            const std::vector<NamedView>& others) {
  const auto begin = reinterpret_cast<std::uintptr_t>(written.data);
  const auto end = begin + static_cast<std::uintptr_t>(written.nbytes());
  if (written.data == nullptr || begin == end) return;
  for (const NamedView& other : others) {
    const auto first = reinterpret_cast<std::uintptr_t>(other.view.data);
    const auto last = first + static_cast<std::uintptr_t>(other.view.nbytes());
    TPEMBED_EXPECTS(other.view.data == nullptr || last <= begin || end <= first,
                    InvalidArgumentError, name, " shares memory with ", other.name,
                    ": the backward writes ", name,
                    " while it uses the other; pass arrays that do not overlap");
  }
}

nb::dict counts_dict(const GradientCounts& counts) {
  nb::dict d;
  d["accumulated"] = counts.accumulated;
  d["unowned"] = counts.unowned;
  d["out_of_range"] = counts.out_of_range;
  d["ignored"] = counts.ignored;
  return d;
}

void bind_gradient(nb::module_& m) {
  // Arrays come as plain objects: the helpers above import them, naming the argument.
  m.def("_embedding_backward", &embedding_backward, nb::arg("ids").none(),
        nb::arg("grad_out").none(), nb::arg("grad_weight").none(), nb::arg("allocate"),
        nb::arg("num_rows"), nb::arg("num_cols").none(), nb::arg("row_offset"),
        nb::arg("valid_ids").none(), nb::arg("padding_idx").none(), nb::arg("column_offset"),
        nb::arg("per_token_scale").none(), nb::arg("padding_scale").none(),
        nb::arg("grad_padding").none(), nb::arg("scale_dtype").none(),
        nb::arg("grad_out_dtype").none(), nb::arg("out_dtype").none(), nb::arg("accumulate"),
        nb::arg("workspace").none(), nb::arg("counts").none(), nb::arg("stream"),
        "Core of tpembed.embedding_backward(); returns the allocated grad_weight, or None when "
        "one was given.");
  m.def(
      "_gradient_workspace_bytes",
      [](bool cuda, int device, std::int64_t num_ids, std::int64_t rows, std::int64_t padding_rows,
         std::int64_t cols) {
        TPEMBED_EXPECTS(num_ids >= 0 && rows >= 0 && padding_rows >= 0 && cols >= 0,
                        InvalidArgumentError,
                        "gradient_workspace_bytes takes counts >= 0, got num_ids=", num_ids,
                        ", num_rows=", rows, ", padding_rows=", padding_rows, ", num_cols=", cols);
        return gradient_workspace_bytes(cuda ? Device::cuda(device) : Device::cpu(), num_ids, rows,
                                        padding_rows, cols);
      },
      nb::arg("cuda"), nb::arg("device"), nb::arg("num_ids"), nb::arg("rows"),
      nb::arg("padding_rows"), nb::arg("cols"));
}

}  // namespace tpembed::python

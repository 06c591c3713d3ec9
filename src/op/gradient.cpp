// embedding_backward(): checks a backward's arguments, fills the launcher's parameters and runs the
// backward on the tensors' device (gradient.hpp).
#include "op/gradient.hpp"

#include <algorithm>
#include <limits>

#include "core/gradient_rule.hpp"
#include "cuda/runtime.hpp"
#include "op/checks.hpp"
#include "op/place.hpp"
#include "tpembed/error.hpp"

namespace tpembed {

namespace op {

namespace {

void check_device(const TensorView& view, const char* name, const Device& device) {
  TPEMBED_EXPECTS(view.device == device, InvalidArgumentError, name, " is on ", device_name(view.device),
                  " but grad_weight is on ", device_name(device));
}

// A GPU reads and writes whole elements: their addresses must be multiples of the element size.
void check_element_aligned(const TensorView& view, const char* name) {
  if (view.device.kind != DeviceKind::cuda || view.data == nullptr) return;
  const std::int64_t size = row_bytes(view.dtype, 1);
  TPEMBED_EXPECTS(reinterpret_cast<std::uintptr_t>(view.data) % static_cast<std::uintptr_t>(size) == 0,
                  InvalidArgumentError, name, " is at ", view.data, ", not a multiple of its ", size,
                  "-byte elements: GPU tensors must be aligned to their elements");
}

bool overlaps(const TensorView& a, const TensorView& b) {
  if (a.numel() == 0 || b.numel() == 0 || a.device != b.device) return false;
  const auto* a0 = static_cast<const std::uint8_t*>(a.data);
  const auto* b0 = static_cast<const std::uint8_t*>(b.data);
  return a0 < b0 + b.nbytes() && b0 < a0 + a.nbytes();
}

}  // namespace

GradientParams gradient_params(const TensorView& ids, const TensorView& grad_out, const TensorView& grad_weight,
                               const GradientOptions& options) {
  TPEMBED_EXPECTS(!grad_weight.absent(), InvalidArgumentError, "grad_weight is missing");
  check_data(grad_weight, "grad_weight");
  TPEMBED_EXPECTS(!is_quantized(grad_weight.dtype), UnsupportedError, "grad_weight dtype ",
                  dtype_name(grad_weight.dtype),
                  ": quantized tables have no gradient (they are for inference); use an f32, f16 or bf16 gradient");
  TPEMBED_EXPECTS(is_float(grad_weight.dtype), InvalidArgumentError, "grad_weight must be f32, f16 or bf16, not ",
                  dtype_name(grad_weight.dtype));
  TPEMBED_EXPECTS(grad_weight.ndim() == 2, ShapeError, "grad_weight must be 2-D [rows, cols], got shape ",
                  detail::bracketed(grad_weight.shape));
  const Device device = grad_weight.device;
  const std::int64_t rows = grad_weight.shape[0], cols = grad_weight.shape[1];

  TPEMBED_EXPECTS(is_index(ids.dtype), InvalidArgumentError, "ids must be i32 or i64, not ", dtype_name(ids.dtype));
  check_data(ids, "ids");
  check_device(ids, "ids", device);
  TPEMBED_EXPECTS(ids.numel() <= gradient::kMaxIds, InvalidArgumentError, "a backward takes at most ",
                  gradient::kMaxIds, " ids, got ", ids.numel());

  check_data(grad_out, "grad_out");
  TPEMBED_EXPECTS(is_float(grad_out.dtype), InvalidArgumentError, "grad_out must be f32, f16 or bf16, not ",
                  dtype_name(grad_out.dtype));
  check_device(grad_out, "grad_out", device);
  TPEMBED_EXPECTS(options.column_offset >= 0, InvalidArgumentError, "column_offset must be >= 0, got ",
                  options.column_offset);
  const bool prefix = grad_out.ndim() == ids.ndim() + 1 &&
                      std::equal(ids.shape.begin(), ids.shape.end(), grad_out.shape.begin());
  const std::int64_t width = prefix ? grad_out.shape.back() : -1;
  if (!prefix || options.column_offset > width || width - options.column_offset < cols) {
    std::vector<std::int64_t> expected = ids.shape;
    const std::int64_t most = std::numeric_limits<std::int64_t>::max();
    expected.push_back(options.column_offset > most - cols ? most : options.column_offset + cols);  // (saturated)
    throw ShapeError(detail::concat("grad_out has shape ", detail::bracketed(grad_out.shape), " but ids ",
                                    detail::bracketed(ids.shape), " and a gradient of ", cols, " columns",
                                    options.column_offset ? detail::concat(" from column ", options.column_offset) : std::string(),
                                    " need ", detail::bracketed(expected),
                                    options.column_offset ? " (or wider)" : ""));
  }

  TPEMBED_EXPECTS(options.row_offset >= 0, InvalidArgumentError, "row_offset must be >= 0, got ", options.row_offset);
  std::int64_t padding_rows = 0;
  if (!options.grad_padding.absent()) {
    const TensorView& pad = options.grad_padding;
    check_data(pad, "grad_padding");
    TPEMBED_EXPECTS(pad.dtype == grad_weight.dtype, InvalidArgumentError, "grad_padding has dtype ",
                    dtype_name(pad.dtype), " but grad_weight has ", dtype_name(grad_weight.dtype));
    TPEMBED_EXPECTS(pad.ndim() == 2 && pad.shape[1] == cols, ShapeError, "grad_padding has shape ",
                    detail::bracketed(pad.shape), " but a gradient of ", cols, " columns needs [padding rows, ", cols,
                    "]");
    check_device(pad, "grad_padding", device);
    padding_rows = pad.shape[0];
    TPEMBED_EXPECTS(!overlaps(pad, grad_weight), InvalidArgumentError, "grad_padding overlaps grad_weight");
  }
  TPEMBED_EXPECTS(rows <= gradient::kMaxRows && padding_rows <= gradient::kMaxRows - rows, InvalidArgumentError,
                  "a backward writes at most ", gradient::kMaxRows, " rows, got ", rows, " and ", padding_rows,
                  " padding rows");
  TPEMBED_EXPECTS(device.kind == DeviceKind::cpu || cols <= gradient::kMaxGpuCols, InvalidArgumentError,
                  "a GPU backward takes at most ", gradient::kMaxGpuCols, " columns, got ", cols);
  TPEMBED_EXPECTS(options.row_offset <= gradient::kMaxRows * 4, InvalidArgumentError, "row_offset ", options.row_offset,
                  " is beyond any table");
  const std::int64_t valid_ids = options.valid_ids.value_or(options.row_offset + rows + padding_rows);
  TPEMBED_EXPECTS(valid_ids >= 0, InvalidArgumentError, "valid_ids must be >= 0, got ", valid_ids);
  if (!options.per_token_scale.absent()) {
    check_scale(options.per_token_scale, "per_token_scale", rows, "grad_weight", device, "grad_weight");
  }
  if (!options.padding_scale.absent()) {
    TPEMBED_EXPECTS(!options.grad_padding.absent(), InvalidArgumentError,
                    "padding_scale is given but grad_padding is not: there are no padding rows to scale");
    check_scale(options.padding_scale, "padding_scale", padding_rows, "grad_padding", device, "grad_weight");
    TPEMBED_EXPECTS(!options.per_token_scale.absent() && options.per_token_scale.dtype == options.padding_scale.dtype,
                    InvalidArgumentError, "padding_scale needs per_token_scale of the same dtype");
  } else {
    TPEMBED_EXPECTS(options.per_token_scale.absent() || padding_rows == 0, InvalidArgumentError,
                    "the table has per_token_scale, so its padding needs padding_scale too");
  }
  for (const auto& [view, name] : {std::pair{&grad_out, "grad_out"}, std::pair{&ids, "ids"}}) {
    TPEMBED_EXPECTS(!overlaps(*view, grad_weight) && !overlaps(*view, options.grad_padding), InvalidArgumentError,
                    "the gradient overlaps ", name, ": give it its own memory");
  }

  for (const auto& [view, name] :
       {std::pair{&ids, "ids"}, std::pair{&grad_out, "grad_out"}, std::pair{&grad_weight, "grad_weight"},
        std::pair{&options.grad_padding, "grad_padding"}, std::pair{&options.per_token_scale, "per_token_scale"},
        std::pair{&options.padding_scale, "padding_scale"}}) {
    check_element_aligned(*view, name);
  }

  GradientParams p;
  p.ids = ids.data;
  p.id_dtype = ids.dtype;
  p.num_ids = ids.numel();
  p.grad_out_dtype = grad_out.dtype;
  p.grad_out_row_stride = width;
  p.grad_out = grad_out.data;
  if (p.num_ids > 0 && options.column_offset > 0) {  // (never offset a pointer that may be null)
    p.grad_out = static_cast<const std::uint8_t*>(grad_out.data) + row_bytes(grad_out.dtype, options.column_offset);
  }
  p.cols = cols;
  p.row_offset = options.row_offset;
  p.rows = rows;
  p.padding_rows = padding_rows;
  p.valid_ids = valid_ids;
  p.has_ignored_id = options.ignored_id.has_value();
  p.ignored_id = options.ignored_id.value_or(0);
  p.scale = options.per_token_scale.data;
  p.padding_scale = options.padding_scale.data;
  p.scale_dtype = options.per_token_scale.absent() ? DType::f32 : options.per_token_scale.dtype;
  p.grad_weight = grad_weight.mutable_data();
  p.grad_weight_row_stride = cols;
  p.grad_padding = options.grad_padding.mutable_data();
  p.grad_padding_row_stride = cols;
  p.grad_dtype = grad_weight.dtype;
  p.accumulate = options.accumulate;
  p.counts = options.counts;
  return p;
}

}  // namespace op

std::size_t gradient_workspace_bytes(const Device& device, std::int64_t num_ids, std::int64_t rows,
                                     std::int64_t padding_rows, std::int64_t cols) {
  TPEMBED_EXPECTS(num_ids >= 0 && rows >= 0 && padding_rows >= 0 && cols >= 0, InvalidArgumentError,
                  "gradient_workspace_bytes: sizes must be >= 0, got ids ", num_ids, ", rows ", rows, ", padding rows ",
                  padding_rows, ", cols ", cols);
  if (device.kind == DeviceKind::cpu) return 0;
  return gradient_workspace_bytes_cuda(num_ids, rows, padding_rows, cols);
}

void embedding_backward(const TensorView& ids, const TensorView& grad_out, const TensorView& grad_weight,
                        const GradientOptions& options, void* stream) {
  GradientParams p = op::gradient_params(ids, grad_out, grad_weight, options);
  op::Place place(grad_weight.device, stream);
  if (place.is_host()) {
    place.backward(p);
    return;
  }
  const std::size_t needed = gradient_workspace_bytes_cuda(p.num_ids, p.rows, p.padding_rows, p.cols);
  if (options.workspace != nullptr) {
    TPEMBED_EXPECTS(options.workspace_bytes >= needed, InvalidArgumentError, "the workspace has ",
                    options.workspace_bytes, " bytes but this backward needs ", needed,
                    " (gradient_workspace_bytes)");
    TPEMBED_EXPECTS(reinterpret_cast<std::uintptr_t>(options.workspace) % 256 == 0, InvalidArgumentError,
                    "the workspace must be 256-byte aligned");
    p.workspace = options.workspace;
    p.workspace_bytes = options.workspace_bytes;
    place.backward(p);
    return;
  }
  // No workspace: one from the stream-ordered allocator, given back behind the work.
  p.workspace = cuda_runtime::alloc_async(needed, stream);
  p.workspace_bytes = needed;
  try {
    place.backward(p);
  } catch (...) {
    cuda_runtime::free_async(p.workspace, stream);
    throw;
  }
  cuda_runtime::free_async(p.workspace, stream);
}

}  // namespace tpembed

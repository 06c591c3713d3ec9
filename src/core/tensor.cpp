#include "tpembed/tensor.hpp"

#include <cstdlib>
#include <new>
#include <sstream>

#include "tpembed/error.hpp"

namespace tpembed {

std::string device_name(const Device& device) {
  if (device.kind == DeviceKind::cpu) return "cpu";
  return "cuda:" + std::to_string(device.index);
}

std::int64_t TensorView::numel() const {
  std::int64_t count = 1;
  for (std::int64_t extent : shape) count *= extent;
  return count;
}

std::int64_t TensorView::nbytes() const {
  if (shape.empty()) return static_cast<std::int64_t>(element_size(dtype));
  const std::int64_t cols = shape.back();
  std::int64_t rows = 1;
  for (std::size_t d = 0; d + 1 < shape.size(); ++d) rows *= shape[d];
  return rows * row_bytes(dtype, cols);
}

std::string TensorView::describe() const {
  std::ostringstream text;
  text << dtype_name(dtype) << "[";
  for (std::size_t d = 0; d < shape.size(); ++d) text << (d ? ", " : "") << shape[d];
  text << "] on " << device_name(device);
  return text.str();
}

Tensor::Tensor(DType dtype, std::vector<std::int64_t> shape)
    : dtype_(dtype), shape_(std::move(shape)) {
  for (std::int64_t extent : shape_) {
    TPEMBED_EXPECTS(extent >= 0, InvalidArgumentError, "tensor extent ", extent, " is negative");
  }
  const std::int64_t bytes = view().nbytes();
  // Round up to the alignment: aligned_alloc needs a multiple, and 64 bytes keeps rows vectorisable.
  const std::size_t rounded = (static_cast<std::size_t>(bytes) + 63) / 64 * 64;
  void* memory = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
  if (memory == nullptr) throw std::bad_alloc();
  data_.reset(memory);
}

void Tensor::FreeDeleter::operator()(void* p) const { std::free(p); }

}  // namespace tpembed

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
  // view().nbytes() multiplies the rows into the bytes of a row: refused where a product would pass
  // 2^62 bytes (or overflow).
  constexpr std::int64_t kMaxBytes = std::int64_t{1} << 62;
  if (!shape_.empty()) {
    bool fits = shape_.back() <= kMaxBytes / 8;
    std::int64_t product = fits ? row_bytes(dtype_, shape_.back()) : 0;
    for (std::size_t d = 0; fits && d + 1 < shape_.size(); ++d) {
      fits = shape_[d] == 0 || product <= kMaxBytes / shape_[d];
      product *= fits ? shape_[d] : 1;
    }
    TPEMBED_EXPECTS(fits, InvalidArgumentError, "tensor of ", view().describe(), " is too large (more than 2^62 bytes)");
  }
  const std::int64_t bytes = view().nbytes();
  // Round up to the alignment: aligned_alloc needs a multiple, and 64 bytes keeps rows vectorisable.
  const std::size_t rounded = (static_cast<std::size_t>(bytes) + 63) / 64 * 64;
  void* memory = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
  if (memory == nullptr) {
    throw BackendError(detail::concat("out of memory: cannot allocate ", bytes, " bytes on the host for a tensor of ",
                                      view().describe()));
  }
  data_.reset(memory);
}

void Tensor::FreeDeleter::operator()(void* p) const { std::free(p); }

}  // namespace tpembed

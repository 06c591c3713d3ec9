// Non-owning tensor views (what the API takes) and a small owning host tensor (what it returns).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tpembed/dtype.hpp"

namespace tpembed {

/// Where a tensor's memory lives.
enum class DeviceKind : std::uint8_t { cpu, cuda };

/// A memory location: the host, or one CUDA device.
struct Device {
  DeviceKind kind = DeviceKind::cpu;
  int index = 0;  ///< CUDA device ordinal; 0 for the host.

  static Device cpu() { return {DeviceKind::cpu, 0}; }
  static Device cuda(int index = 0) { return {DeviceKind::cuda, index}; }
  bool operator==(const Device& other) const {
    return kind == other.kind && (kind == DeviceKind::cpu || index == other.index);
  }
  bool operator!=(const Device& other) const { return !(*this == other); }
};

/// "cpu" or "cuda:N".
std::string device_name(const Device& device);

/// A dense, row-major, non-owning view of a tensor. `shape` is the logical shape: an i4 table of
/// shape [V, H] holds V rows of ceil(H/2) bytes. A view with no data and an empty shape is "absent"
/// (used for optional arguments such as scales and padding).
struct TensorView {
  const void* data = nullptr;
  DType dtype = DType::f32;
  std::vector<std::int64_t> shape;
  Device device = Device::cpu();

  TensorView() = default;
  TensorView(const void* data_, DType dtype_, std::vector<std::int64_t> shape_,
             Device device_ = Device::cpu())
      : data(data_), dtype(dtype_), shape(std::move(shape_)), device(device_) {}

  /// Number of dimensions.
  std::int64_t ndim() const { return static_cast<std::int64_t>(shape.size()); }
  /// Product of the shape (1 for a scalar view with an empty shape and data).
  std::int64_t numel() const;
  /// Bytes spanned by the data (rows of the last dimension rounded up to bytes for i4).
  std::int64_t nbytes() const;
  /// True when the view is the "absent" optional argument.
  bool absent() const { return data == nullptr && shape.empty(); }
  /// Mutable pointer to the data (outputs are views too).
  void* mutable_data() const { return const_cast<void*>(data); }
  /// Typed pointer; the caller vouches for the dtype.
  template <typename T>
  const T* as() const {
    return static_cast<const T*>(data);
  }
  /// "bf16[128, 4096] on cpu".
  std::string describe() const;
};

/// An owning, 64-byte-aligned host tensor.
class Tensor {
 public:
  Tensor() = default;
  /// Allocates (uninitialised) memory for `shape` of `dtype` on the host.
  Tensor(DType dtype, std::vector<std::int64_t> shape);

  /// A view of the whole tensor.
  TensorView view() const { return TensorView(data_.get(), dtype_, shape_); }
  operator TensorView() const { return view(); }  // NOLINT: implicit by design

  DType dtype() const { return dtype_; }
  const std::vector<std::int64_t>& shape() const { return shape_; }
  std::int64_t numel() const { return view().numel(); }
  std::int64_t nbytes() const { return view().nbytes(); }
  void* data() { return data_.get(); }
  const void* data() const { return data_.get(); }
  template <typename T>
  T* data_as() {
    return static_cast<T*>(data());
  }
  template <typename T>
  const T* data_as() const {
    return static_cast<const T*>(data());
  }

 private:
  struct FreeDeleter {
    void operator()(void* p) const;
  };
  DType dtype_ = DType::f32;
  std::vector<std::int64_t> shape_;
  std::unique_ptr<void, FreeDeleter> data_;
};

}  // namespace tpembed

// CUDA helpers of the public API: whether the backend is here, and device memory that frees itself.
// Every function throws UnsupportedError in a build without CUDA, and BackendError (naming the
// CUDA error) when the runtime fails.
#pragma once

#include <cstddef>

#include "tpembed/tensor.hpp"

namespace tpembed {

/// True when this build has the CUDA backend (it may still find no device).
bool cuda_built();

/// Number of CUDA devices visible; 0 without a build, a driver or a device.
int cuda_device_count();

/// Waits for all work queued on `stream` (a cudaStream_t; null is the legacy default stream).
void cuda_synchronize(void* stream = nullptr);

/// Copies `bytes` between any two places (host or device; cudaMemcpyDefault) and waits for it.
void cuda_copy(void* destination, const void* source, std::size_t bytes);

/// Sets `bytes` of device memory to the byte `value` and waits for it.
void cuda_fill(void* device, int value, std::size_t bytes);

/// An owning block of device memory on one CUDA device.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  /// Allocates `bytes` on CUDA device `device` (cudaMalloc; 256-byte aligned).
  DeviceBuffer(std::size_t bytes, int device = 0);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return data_; }
  std::size_t size() const { return bytes_; }
  int device() const { return device_; }
  /// Copies `bytes` from host memory to the start of the buffer (synchronous).
  void copy_from_host(const void* host, std::size_t bytes);
  /// Copies `bytes` from the start of the buffer to host memory (synchronous).
  void copy_to_host(void* host, std::size_t bytes) const;
  /// A view of the buffer as a tensor of `dtype` and `shape` on this device.
  TensorView view(DType dtype, std::vector<std::int64_t> shape) const {
    return TensorView(data_, dtype, std::move(shape), Device::cuda(device_));
  }

 private:
  void* data_ = nullptr;
  std::size_t bytes_ = 0;
  int device_ = 0;
};

}  // namespace tpembed

// CUDA runtime wrappers: DeviceBuffer, the public helpers of cuda.hpp and the op layer's calls.
#include <cuda_runtime.h>

#include "cuda/runtime.hpp"
#include "tpembed/cuda.hpp"
#include "tpembed/error.hpp"

namespace tpembed {

namespace cuda_runtime {

void check(int status, const char* what) {
  if (status == cudaSuccess) return;
  const auto error = static_cast<cudaError_t>(status);
  int device = -1;
  cudaGetDevice(&device);
  throw BackendError(detail::concat(what, " failed on cuda:", device, ": ", cudaGetErrorName(error),
                                    " (", cudaGetErrorString(error), ")"));
}

void copy_to_host(void* host, const void* device, std::size_t bytes, void* stream) {
  if (bytes == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  check(cudaMemcpyAsync(host, device, bytes, cudaMemcpyDeviceToHost, s), "cudaMemcpyAsync (to host)");
  check(cudaStreamSynchronize(s), "cudaStreamSynchronize");
}

void copy_to_device(void* device, const void* host, std::size_t bytes, void* stream) {
  if (bytes == 0) return;
  check(cudaMemcpyAsync(device, host, bytes, cudaMemcpyHostToDevice, static_cast<cudaStream_t>(stream)),
        "cudaMemcpyAsync (to device)");
}

void copy_2d(void* dst, std::size_t dst_pitch, const void* src, std::size_t src_pitch, std::size_t width,
             std::size_t height, void* stream) {
  if (width == 0 || height == 0) return;
  check(cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, width, height, cudaMemcpyDeviceToDevice,
                          static_cast<cudaStream_t>(stream)),
        "cudaMemcpy2DAsync");
}

void fill(void* device, int value, std::size_t bytes, void* stream) {
  if (bytes == 0) return;
  check(cudaMemsetAsync(device, value, bytes, static_cast<cudaStream_t>(stream)), "cudaMemsetAsync");
}

void* alloc_host(std::size_t bytes) {
  void* host = nullptr;
  check(cudaMallocHost(&host, bytes == 0 ? 1 : bytes), "cudaMallocHost");
  return host;
}

void free_host(void* host) noexcept {
  if (host != nullptr) cudaFreeHost(host);
}

int device_of(const void* pointer) {
  cudaPointerAttributes attributes{};
  if (cudaPointerGetAttributes(&attributes, pointer) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error of a plain host pointer
    return -1;
  }
  return attributes.type == cudaMemoryTypeDevice || attributes.type == cudaMemoryTypeManaged
             ? attributes.device
             : -1;
}

void set_device(int device) { check(cudaSetDevice(device), "cudaSetDevice"); }

}  // namespace cuda_runtime

bool cuda_built() { return true; }

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return count;
}

void cuda_synchronize(void* stream) {
  cuda_runtime::check(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)), "cudaStreamSynchronize");
}

void cuda_copy(void* destination, const void* source, std::size_t bytes) {
  if (bytes == 0) return;
  cuda_runtime::check(cudaMemcpy(destination, source, bytes, cudaMemcpyDefault), "cudaMemcpy");
}

void cuda_fill(void* device, int value, std::size_t bytes) {
  if (bytes == 0) return;
  cuda_runtime::check(cudaMemset(device, value, bytes), "cudaMemset");
}

DeviceBuffer::DeviceBuffer(std::size_t bytes, int device) : bytes_(bytes), device_(device) {
  int previous = 0;
  cuda_runtime::check(cudaGetDevice(&previous), "cudaGetDevice");
  cuda_runtime::check(cudaSetDevice(device), "cudaSetDevice");
  const cudaError_t status = cudaMalloc(&data_, bytes == 0 ? 1 : bytes);
  cudaSetDevice(previous);
  if (status != cudaSuccess) {
    data_ = nullptr;
    cuda_runtime::check(status, detail::concat("cudaMalloc of ", bytes, " bytes").c_str());
  }
}

DeviceBuffer::~DeviceBuffer() {
  if (data_ != nullptr) cudaFree(data_);
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : data_(other.data_), bytes_(other.bytes_), device_(other.device_) {
  other.data_ = nullptr;
  other.bytes_ = 0;
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) cudaFree(data_);
    data_ = other.data_;
    bytes_ = other.bytes_;
    device_ = other.device_;
    other.data_ = nullptr;
    other.bytes_ = 0;
  }
  return *this;
}

void DeviceBuffer::copy_from_host(const void* host, std::size_t bytes) {
  TPEMBED_EXPECTS(bytes <= bytes_, InvalidArgumentError, "DeviceBuffer::copy_from_host: ", bytes,
                  " bytes do not fit a buffer of ", bytes_);
  if (bytes == 0) return;
  cuda_runtime::check(cudaMemcpy(data_, host, bytes, cudaMemcpyHostToDevice), "cudaMemcpy (to device)");
}

void DeviceBuffer::copy_to_host(void* host, std::size_t bytes) const {
  TPEMBED_EXPECTS(bytes <= bytes_, InvalidArgumentError, "DeviceBuffer::copy_to_host: ", bytes,
                  " bytes exceed a buffer of ", bytes_);
  if (bytes == 0) return;
  cuda_runtime::check(cudaMemcpy(host, data_, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy (to host)");
}

}  // namespace tpembed

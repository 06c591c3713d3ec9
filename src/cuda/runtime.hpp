// The few CUDA runtime calls the op layer needs, behind plain functions so that src/op has no
// #ifdefs and builds without CUDA (the stand-ins in cuda_unavailable.cpp throw UnsupportedError).
#pragma once

#include <cstddef>

namespace tpembed::cuda_runtime {

/// Copies device -> host on `stream` and waits for it.
void copy_to_host(void* host, const void* device, std::size_t bytes, void* stream);
/// Copies host -> device on `stream` (asynchronous with respect to the host for pinned memory).
void copy_to_device(void* device, const void* host, std::size_t bytes, void* stream);
/// Sets `bytes` of device memory to `value` on `stream`.
void fill(void* device, int value, std::size_t bytes, void* stream);
/// Allocates / frees page-locked host memory (for staging).
void* alloc_host(std::size_t bytes);
void free_host(void* host) noexcept;
/// Throws BackendError when `status` (a cudaError_t) is not success, naming `what`.
void check(int status, const char* what);
/// The device that owns `pointer` (-1 for host memory).
int device_of(const void* pointer);
/// Makes `device` current for the calling thread.
void set_device(int device);
/// The calling thread's current device.
int current_device();
/// Makes `device` current again, without throwing (for destructors).
void restore_device(int device) noexcept;

}  // namespace tpembed::cuda_runtime

// The few CUDA runtime calls the op layer needs, behind plain functions so that src/op has no
// #ifdefs and builds without CUDA (the stand-ins in cuda_unavailable.cpp throw UnsupportedError).
#pragma once

#include <cstddef>
#include <cstdint>

namespace tpembed::cuda_runtime {

/// Copies device -> host on `stream` and waits for it.
void copy_to_host(void* host, const void* device, std::size_t bytes, void* stream);
/// Copies host -> device on `stream` (asynchronous with respect to the host for pinned memory).
void copy_to_device(void* device, const void* host, std::size_t bytes, void* stream);
/// Allocates / frees page-locked host memory (for staging).
void* alloc_host(std::size_t bytes);
void free_host(void* host) noexcept;
/// Stream-ordered device memory (cudaMallocAsync / cudaFreeAsync on `stream`): usable by work
/// queued after it on that stream, returned once the work queued before the free is done.
void* alloc_async(std::size_t bytes, void* stream);
void free_async(void* device, void* stream) noexcept;
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
/// Waits for all work on the current device, without throwing (for destructors).
void synchronize_device() noexcept;

/// Makes `device` current for a scope and the caller's device current again after it (nothing for
/// a negative device: host memory), so that work lands on the memory's device and the caller's
/// framework keeps its own.
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    if (device < 0) return;
    const int current = current_device();
    if (current == device) return;
    set_device(device);
    previous_ = current;
  }
  ~DeviceScope() {
    if (previous_ >= 0) restore_device(previous_);
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int previous_ = -1;
};

// ---- peer memory (src/cuda/peer_memory.cpp) -----------------------------------------------------

/// Device memory as another process of the node can map it (CUDA IPC): the handle of the whole
/// allocation and the offset of the pointer in it. Plain bytes, exchanged through a communicator.
struct SharedMemoryHandle {
  unsigned char ipc[64];
  std::int64_t offset;
};
/// The handle of the allocation that holds `pointer` (device memory from cudaMalloc or a caching
/// allocator built on it). Throws BackendError when the memory cannot be shared.
SharedMemoryHandle share_memory(const void* pointer);
/// Maps memory another process shared into this one (on the current device, peer access enabled
/// lazily); returns the base of the mapping, to pass to unmap_memory() once peers are done with it.
/// Throws BackendError naming the CUDA error (no peer access between the devices, for example).
void* map_memory(const SharedMemoryHandle& handle);
/// Undoes map_memory(), without throwing.
void unmap_memory(void* base) noexcept;
/// Lets the current device read memory of `peer_device` in this process (nothing to do for the
/// same device). Throws BackendError when the devices have no peer access.
void enable_peer_access(int peer_device);

}  // namespace tpembed::cuda_runtime

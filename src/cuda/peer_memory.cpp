// Peer memory: device memory of other processes (CUDA IPC) or other devices of this process
// (peer access), so that one kernel can read rows straight out of the peers' tables.
#include <cuda.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include <cstring>

#include "cuda/runtime.hpp"
#include "tpembed/cuda.hpp"
#include "tpembed/error.hpp"

namespace tpembed::cuda_runtime {

namespace {

static_assert(sizeof(cudaIpcMemHandle_t) == sizeof(SharedMemoryHandle::ipc), "an IPC handle is 64 bytes");

// The allocation that holds `pointer` (cuMemGetAddressRange, reached through the runtime so that
// the library does not link the driver library itself).
CUdeviceptr allocation_base(const void* pointer) {
  static PFN_cuMemGetAddressRange_v3020 get_range = [] {
    void* function = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuMemGetAddressRange", &function, 12000, cudaEnableDefault, &found) !=
            cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      function = nullptr;
    }
    return reinterpret_cast<PFN_cuMemGetAddressRange_v3020>(function);
  }();
  if (get_range == nullptr) throw BackendError("the CUDA driver has no cuMemGetAddressRange");
  CUdeviceptr base = 0;
  std::size_t size = 0;
  const CUresult result = get_range(&base, &size, reinterpret_cast<CUdeviceptr>(pointer));
  if (result != CUDA_SUCCESS) {
    throw BackendError(detail::concat("cuMemGetAddressRange failed (CUresult ", static_cast<int>(result),
                                      "): the pointer is not device memory of this process"));
  }
  return base;
}

}  // namespace

SharedMemoryHandle share_memory(const void* pointer) {
  SharedMemoryHandle handle{};
  // Only plain device memory can be shared; asking CUDA IPC about managed or host memory is an API
  // error (which tools such as compute-sanitizer report), so such memory is refused here first.
  cudaPointerAttributes attributes{};
  if (cudaPointerGetAttributes(&attributes, pointer) != cudaSuccess) cudaGetLastError();
  if (attributes.type != cudaMemoryTypeDevice) {
    const char* kind = attributes.type == cudaMemoryTypeManaged ? "managed (cudaMallocManaged) memory"
                       : attributes.type == cudaMemoryTypeHost  ? "pinned host memory"
                                                                : "memory CUDA does not know";
    throw BackendError(detail::concat("the table is in ", kind,
                                      ", which CUDA IPC cannot share; only memory from cudaMalloc (or an "
                                      "allocator built on it) can be shared"));
  }
  const CUdeviceptr base = allocation_base(pointer);
  cudaIpcMemHandle_t ipc{};
  const cudaError_t status = cudaIpcGetMemHandle(&ipc, reinterpret_cast<void*>(base));
  if (status != cudaSuccess) {
    cudaGetLastError();
    throw BackendError(detail::concat("cudaIpcGetMemHandle failed: ", cudaGetErrorName(status), " (",
                                      cudaGetErrorString(status),
                                      "); only memory from cudaMalloc (or an allocator built on it) can be shared"));
  }
  std::memcpy(handle.ipc, &ipc, sizeof ipc);
  handle.offset = static_cast<std::int64_t>(reinterpret_cast<CUdeviceptr>(pointer) - base);
  return handle;
}

void* map_memory(const SharedMemoryHandle& handle) {
  cudaIpcMemHandle_t ipc{};
  std::memcpy(&ipc, handle.ipc, sizeof ipc);
  void* base = nullptr;
  const cudaError_t status = cudaIpcOpenMemHandle(&base, ipc, cudaIpcMemLazyEnablePeerAccess);
  if (status != cudaSuccess) cudaGetLastError();
  check(status, "cudaIpcOpenMemHandle (mapping a peer's table)");
  return base;
}

void unmap_memory(void* base) noexcept {
  if (base != nullptr && cudaIpcCloseMemHandle(base) != cudaSuccess) cudaGetLastError();
}

void enable_peer_access(int peer_device) {
  const int device = current_device();
  if (peer_device == device) return;
  if (!cuda_peer_access_possible(device, peer_device)) {
    throw BackendError(detail::concat("cuda:", device, " cannot access the memory of cuda:", peer_device,
                                      " (no peer access between them)"));
  }
  const cudaError_t status = cudaDeviceEnablePeerAccess(peer_device, 0);
  if (status == cudaErrorPeerAccessAlreadyEnabled) {
    cudaGetLastError();
    return;
  }
  check(status, "cudaDeviceEnablePeerAccess");
}

}  // namespace tpembed::cuda_runtime

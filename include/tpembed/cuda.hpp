// CUDA helpers of the public API: whether the backend is here, and device memory that frees itself.
// Every function throws UnsupportedError in a build without CUDA, and BackendError (naming the
// CUDA error) when the runtime fails.
#pragma once

#include <cstddef>
#include <functional>
#include <string>

#include "tpembed/tensor.hpp"

namespace tpembed {

/// True when this build has the CUDA backend (it may still find no device).
bool cuda_built();

/// Number of CUDA devices visible; 0 without a build, a driver or a device.
int cuda_device_count();

/// True when CUDA device `device` can read the memory of device `peer` (always for the same device):
/// what the peer_rows vocab exchange needs between the GPUs of a group. False without CUDA.
bool cuda_peer_access_possible(int device, int peer);

/// Makes CUDA device `device` the calling thread's current device (cudaSetDevice), where streams,
/// timings and allocations that name no device go. Throws InvalidArgumentError for a device that
/// is not visible. Under mpirun, call it with node_local_cuda_device() so that each rank stays on its
/// own GPU.
void cuda_set_device(int device);

/// Waits for all work queued on `stream` (a cudaStream_t; null is the legacy default stream).
void cuda_synchronize(void* stream = nullptr);

/// Copies `bytes` between any two places (host or device; cudaMemcpyDefault) and waits for it,
/// on the device that holds the destination (else the source), whichever device is current.
void cuda_copy(void* destination, const void* source, std::size_t bytes);

/// Sets `bytes` of device memory to the byte `value` and waits for it, on the memory's device.
void cuda_fill(void* device, int value, std::size_t bytes);

/// Throws BackendError naming `what` and the CUDA error when `status` (a cudaError_t, such as
/// lookup_cuda's return) is not success.
void cuda_check(int status, const char* what);

/// CUDA device `device` in words: name, SMs, compute capability, memory
/// (e.g. "NVIDIA H100 80GB HBM3, 132 SMs, sm_90, 79.1 GiB").
std::string cuda_device_description(int device = 0);

// ---- benchmark timing (used by `tpembed bench`) ------------------------------------------------
// Every timed run below is preceded, on the same stream, by ~100 us of GPU busy-waiting (a
// one-thread spin kernel), so the host has queued the timed work before the start event is reached:
// the CUDA events then time the GPU's work, not the host's launch. All run on the current device.

/// Median, fastest and slowest time per launch of a replayed graph (milliseconds).
struct CudaGraphTiming {
  double median_ms = 0;
  double min_ms = 0;
  double max_ms = 0;
};

/// Times work as a CUDA graph. `queue_work(stream)` (a cudaStream_t, internal and non-blocking)
/// must queue `launches_per_graph` launches on that stream, capturably: no synchronisation, no
/// allocation. It runs once eagerly (warm-up), is captured into a graph, which is replayed 3 times,
/// then `repeats` times under CUDA events; each replay time is divided by `launches_per_graph`.
/// An exception thrown by `queue_work` ends the capture and propagates.
CudaGraphTiming cuda_graph_time(const std::function<void(void* stream)>& queue_work,
                                int launches_per_graph, int repeats);

/// The device-to-device copy ceiling: one cudaMemcpyAsync of `bytes` between two buffers allocated
/// for the call (2 x `bytes` of device memory), 3 warm-up copies, then the median of `repeats`
/// timed copies. Returns GB/s (1 GB = 1e9 bytes) counting bytes read + bytes written.
double cuda_copy_ceiling_gbps(std::size_t bytes = std::size_t{1} << 31, int repeats = 20);

/// The floor of one graph node: a graph of `copies` device-to-device copies of `bytes` each, timed
/// as cuda_graph_time() does; returns the median microseconds per copy.
double cuda_graph_node_floor_us(std::size_t bytes = std::size_t{64} << 10, int copies = 64,
                                int repeats = 50);

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

// CUDA runtime wrappers: DeviceBuffer, the public helpers of cuda.hpp and the op layer's calls.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

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

void* alloc_async(std::size_t bytes, void* stream) {
  void* device = nullptr;
  check(cudaMallocAsync(&device, bytes == 0 ? 1 : bytes, static_cast<cudaStream_t>(stream)), "cudaMallocAsync");
  return device;
}

void free_async(void* device, void* stream) noexcept {
  if (device != nullptr) cudaFreeAsync(device, static_cast<cudaStream_t>(stream));
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

int current_device() {
  int device = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  return device;
}

void restore_device(int device) noexcept { cudaSetDevice(device); }

void synchronize_device() noexcept {
  if (cudaDeviceSynchronize() != cudaSuccess) cudaGetLastError();
}

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

bool cuda_peer_access_possible(int device, int peer) {
  if (device == peer) return true;
  int possible = 0;
  if (cudaDeviceCanAccessPeer(&possible, device, peer) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return possible != 0;
}

void cuda_synchronize(void* stream) {
  cuda_runtime::check(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)), "cudaStreamSynchronize");
}

namespace {
// cudaMemcpy returns before a device-to-device copy, or the last DMA of a copy from pageable memory,
// has landed, and cudaMemset before the memory is set; the helpers below promise the data is there
// (work on other streams, such as a replayed graph's, does not wait for the default stream).
void wait_for_default_stream() {
  cuda_runtime::check(cudaStreamSynchronize(nullptr), "cudaStreamSynchronize (default stream)");
}

}  // namespace

void cuda_set_device(int device) {
  TPEMBED_EXPECTS(device >= 0 && device < cuda_device_count(), InvalidArgumentError, "cuda_set_device: CUDA device ",
                  device, " is not visible (", cuda_device_count(), " visible)");
  cuda_runtime::set_device(device);
}

void cuda_copy(void* destination, const void* source, std::size_t bytes) {
  if (bytes == 0) return;
  const int on_destination = cuda_runtime::device_of(destination);
  const cuda_runtime::DeviceScope on(on_destination >= 0 ? on_destination : cuda_runtime::device_of(source));
  cuda_runtime::check(cudaMemcpy(destination, source, bytes, cudaMemcpyDefault), "cudaMemcpy");
  wait_for_default_stream();
}

void cuda_fill(void* device, int value, std::size_t bytes) {
  if (bytes == 0) return;
  const cuda_runtime::DeviceScope on(cuda_runtime::device_of(device));
  cuda_runtime::check(cudaMemset(device, value, bytes), "cudaMemset");
  wait_for_default_stream();
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
  const cuda_runtime::DeviceScope on(device_);
  cuda_runtime::check(cudaMemcpy(data_, host, bytes, cudaMemcpyHostToDevice), "cudaMemcpy (to device)");
  wait_for_default_stream();
}

void DeviceBuffer::copy_to_host(void* host, std::size_t bytes) const {
  TPEMBED_EXPECTS(bytes <= bytes_, InvalidArgumentError, "DeviceBuffer::copy_to_host: ", bytes,
                  " bytes exceed a buffer of ", bytes_);
  if (bytes == 0) return;
  const cuda_runtime::DeviceScope on(device_);
  cuda_runtime::check(cudaMemcpy(host, data_, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy (to host)");
}

void cuda_check(int status, const char* what) {
  cuda_runtime::check(status, what);
}

std::string cuda_device_description(int device) {
  cudaDeviceProp properties{};
  cuda_runtime::check(cudaGetDeviceProperties(&properties, device), "cudaGetDeviceProperties");
  char memory[32];
  std::snprintf(memory, sizeof memory, "%.1f GiB",
                static_cast<double>(properties.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0));
  return detail::concat(properties.name, ", ", properties.multiProcessorCount, " SMs, sm_",
                        properties.major, properties.minor, ", ", memory);
}

// ---- benchmark timing ---------------------------------------------------------------------------

namespace {

// Clock cycles of the busy-wait before each start event: ~100 us at the H100's ~2 GHz SM clock
// (torch.cuda._sleep(200000) in bench/bench_cuda_lookup.py, so both benches time alike).
constexpr long long kBusyWaitCycles = 200000;
constexpr int kWarmUpReplays = 3;

__global__ void busy_wait_kernel(long long cycles) {
  const long long start = clock64();
  while (clock64() - start < cycles) {
  }
}

class Stream {
 public:
  Stream() {
    cuda_runtime::check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking),
                        "cudaStreamCreateWithFlags");
  }
  ~Stream() { cudaStreamDestroy(stream_); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
};

class Event {
 public:
  Event() { cuda_runtime::check(cudaEventCreate(&event_), "cudaEventCreate"); }
  ~Event() { cudaEventDestroy(event_); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

// A captured graph and its executable instance.
class Graph {
 public:
  Graph(cudaStream_t stream, const std::function<void(void*)>& queue_work) {
    cuda_runtime::check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal),
                        "cudaStreamBeginCapture");
    try {
      queue_work(stream);
    } catch (...) {
      cudaGraph_t broken = nullptr;
      cudaStreamEndCapture(stream, &broken);
      if (broken != nullptr) cudaGraphDestroy(broken);
      cudaGetLastError();  // the failed capture's error is not the caller's
      throw;
    }
    cuda_runtime::check(cudaStreamEndCapture(stream, &graph_),
                        "cudaStreamEndCapture (the captured work must be capturable)");
    const cudaError_t status = cudaGraphInstantiate(&exec_, graph_, 0);
    if (status != cudaSuccess) {
      cudaGraphDestroy(graph_);  // the destructor of a throwing constructor does not run
      cuda_runtime::check(status, "cudaGraphInstantiate");
    }
  }
  ~Graph() {
    if (exec_ != nullptr) cudaGraphExecDestroy(exec_);
    if (graph_ != nullptr) cudaGraphDestroy(graph_);
  }
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;
  void launch(cudaStream_t stream) const {
    cuda_runtime::check(cudaGraphLaunch(exec_, stream), "cudaGraphLaunch");
  }

 private:
  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t exec_ = nullptr;
};

// `repeats` runs of launch() on `stream`, each after the busy-wait, timed by events (ms).
std::vector<double> time_runs(cudaStream_t stream, const std::function<void()>& launch,
                              int repeats) {
  Event start, end;
  std::vector<double> times;
  for (int r = 0; r < repeats; ++r) {
    busy_wait_kernel<<<1, 1, 0, stream>>>(kBusyWaitCycles);
    cuda_runtime::check(cudaGetLastError(), "busy_wait_kernel launch");
    cuda_runtime::check(cudaEventRecord(start.get(), stream), "cudaEventRecord");
    launch();
    cuda_runtime::check(cudaEventRecord(end.get(), stream), "cudaEventRecord");
    cuda_runtime::check(cudaEventSynchronize(end.get()), "cudaEventSynchronize");
    float elapsed_ms = 0;
    cuda_runtime::check(cudaEventElapsedTime(&elapsed_ms, start.get(), end.get()),
                        "cudaEventElapsedTime");
    times.push_back(elapsed_ms);
  }
  return times;
}

double median_of(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

}  // namespace

CudaGraphTiming cuda_graph_time(const std::function<void(void* stream)>& queue_work,
                                int launches_per_graph, int repeats) {
  TPEMBED_EXPECTS(launches_per_graph > 0 && repeats > 0, InvalidArgumentError,
                  "cuda_graph_time: launches_per_graph (", launches_per_graph, ") and repeats (",
                  repeats, ") must be positive");
  const Stream stream;
  queue_work(stream.get());  // warm-up, and the lazy loading of its kernels outside the capture
  cuda_runtime::check(cudaStreamSynchronize(stream.get()), "cudaStreamSynchronize");
  const Graph graph(stream.get(), queue_work);
  for (int r = 0; r < kWarmUpReplays; ++r) graph.launch(stream.get());
  cuda_runtime::check(cudaStreamSynchronize(stream.get()), "cudaStreamSynchronize");
  std::vector<double> times = time_runs(
      stream.get(), [&] { graph.launch(stream.get()); }, repeats);
  for (double& time : times) time /= launches_per_graph;
  CudaGraphTiming timing;
  timing.median_ms = median_of(times);
  timing.min_ms = *std::min_element(times.begin(), times.end());
  timing.max_ms = *std::max_element(times.begin(), times.end());
  return timing;
}

double cuda_copy_ceiling_gbps(std::size_t bytes, int repeats) {
  TPEMBED_EXPECTS(bytes > 0 && repeats > 0, InvalidArgumentError, "cuda_copy_ceiling_gbps: bytes (",
                  bytes, ") and repeats (", repeats, ") must be positive");
  const int device = cuda_runtime::current_device();
  const DeviceBuffer source(bytes, device), destination(bytes, device);
  cuda_fill(source.data(), 1, bytes);
  const Stream stream;
  const auto copy = [&] {
    cuda_runtime::check(cudaMemcpyAsync(destination.data(), source.data(), bytes,
                                        cudaMemcpyDeviceToDevice, stream.get()),
                        "cudaMemcpyAsync (device to device)");
  };
  for (int r = 0; r < kWarmUpReplays; ++r) copy();
  cuda_runtime::check(cudaStreamSynchronize(stream.get()), "cudaStreamSynchronize");
  const double ms = median_of(time_runs(stream.get(), copy, repeats));
  return 2.0 * static_cast<double>(bytes) / (ms * 1e-3) / 1e9;
}

double cuda_graph_node_floor_us(std::size_t bytes, int copies, int repeats) {
  TPEMBED_EXPECTS(bytes > 0 && copies > 0, InvalidArgumentError,
                  "cuda_graph_node_floor_us: bytes (", bytes, ") and copies (", copies,
                  ") must be positive");
  const int device = cuda_runtime::current_device();
  const std::size_t total = bytes * static_cast<std::size_t>(copies);
  const DeviceBuffer sources(total, device), destinations(total, device);
  cuda_fill(sources.data(), 1, total);
  const auto queue_copies = [&](void* stream) {
    for (int c = 0; c < copies; ++c) {
      const std::size_t offset = bytes * static_cast<std::size_t>(c);
      cuda_runtime::check(
          cudaMemcpyAsync(static_cast<char*>(destinations.data()) + offset,
                          static_cast<const char*>(sources.data()) + offset, bytes,
                          cudaMemcpyDeviceToDevice, static_cast<cudaStream_t>(stream)),
          "cudaMemcpyAsync (device to device)");
    }
  };
  return cuda_graph_time(queue_copies, copies, repeats).median_ms * 1e3;
}

}  // namespace tpembed

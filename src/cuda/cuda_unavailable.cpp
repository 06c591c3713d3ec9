// Stand-ins for the CUDA backend in builds without CUDA: asking for it is an UnsupportedError.
#include "cuda/runtime.hpp"
#include "tpembed/cuda.hpp"
#include "tpembed/error.hpp"
#include "tpembed/gradient.hpp"
#include "tpembed/lookup.hpp"

namespace tpembed {

namespace {
[[noreturn]] void no_cuda() {
  throw UnsupportedError("this build of tpembed has no CUDA backend (rebuild where nvcc is found)");
}
}  // namespace

namespace cuda_runtime {
void copy_to_host(void*, const void*, std::size_t, void*) { no_cuda(); }
void copy_to_device(void*, const void*, std::size_t, void*) { no_cuda(); }
void* alloc_host(std::size_t) { no_cuda(); }
void* alloc_async(std::size_t, void*) { no_cuda(); }
void free_async(void*, void*) noexcept {}
void free_host(void*) noexcept {}
void check(int, const char*) { no_cuda(); }
int device_of(const void*) { return -1; }
void set_device(int) { no_cuda(); }
int current_device() { no_cuda(); }
void restore_device(int) noexcept {}
void synchronize_device() noexcept {}
SharedMemoryHandle share_memory(const void*) { no_cuda(); }
void* map_memory(const SharedMemoryHandle&) { no_cuda(); }
void unmap_memory(void*) noexcept {}
void enable_peer_access(int) { no_cuda(); }
}  // namespace cuda_runtime

bool cuda_built() { return false; }
int cuda_device_count() { return 0; }
bool cuda_peer_access_possible(int, int) { return false; }
void cuda_set_device(int) { no_cuda(); }
void cuda_synchronize(void*) { no_cuda(); }
void cuda_copy(void*, const void*, std::size_t) { no_cuda(); }
void cuda_fill(void*, int, std::size_t) { no_cuda(); }
void cuda_check(int, const char*) { no_cuda(); }
std::string cuda_device_description(int) { no_cuda(); }
CudaGraphTiming cuda_graph_time(const std::function<void(void*)>&, int, int) { no_cuda(); }
double cuda_copy_ceiling_gbps(std::size_t, int) { no_cuda(); }
double cuda_graph_node_floor_us(std::size_t, int, int) { no_cuda(); }
DeviceBuffer::DeviceBuffer(std::size_t, int) { no_cuda(); }
DeviceBuffer::~DeviceBuffer() = default;
DeviceBuffer::DeviceBuffer(DeviceBuffer&&) noexcept = default;
DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&&) noexcept = default;
void DeviceBuffer::copy_from_host(const void*, std::size_t) { no_cuda(); }
void DeviceBuffer::copy_to_host(void*, std::size_t) const { no_cuda(); }

int lookup_cuda(const LookupParams&, void*) { no_cuda(); }
int layout_columns_cuda(const LayoutParams&, void*) { no_cuda(); }
std::size_t gradient_workspace_bytes_cuda(std::int64_t, std::int64_t, std::int64_t, std::int64_t) { no_cuda(); }
int embedding_backward_cuda(const GradientParams&, void*) { no_cuda(); }

}  // namespace tpembed

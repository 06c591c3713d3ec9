#include "op/place.hpp"

#include <algorithm>
#include <cstring>

#include "cuda/runtime.hpp"
#include "tpembed/error.hpp"

namespace tpembed::op {

Place::Place(const Device& device, void* stream)
    : device_(device), stream_(stream), scope_(device.kind == DeviceKind::cuda ? device.index : -1) {}

Place::~Place() = default;

void Place::lookup(const LookupParams& params) {
  if (is_host()) {
    lookup_cpu(params);
  } else {
    cuda_runtime::check(lookup_cuda(params, stream_), "the lookup kernel launch");
  }
}

void Place::backward(const GradientParams& params) {
  if (is_host()) {
    embedding_backward_cpu(params);
  } else {
    cuda_runtime::check(embedding_backward_cuda(params, stream_), "the backward's kernel launches");
  }
}

void Place::to_host(void* host, const void* source, std::size_t bytes) {
  if (is_host()) {
    if (bytes > 0) std::memcpy(host, source, bytes);
  } else {
    cuda_runtime::copy_to_host(host, source, bytes, stream_);
  }
}

void Place::from_host(void* destination, const void* host, std::size_t bytes) {
  if (is_host()) {
    if (bytes > 0) std::memcpy(destination, host, bytes);
  } else {
    cuda_runtime::copy_to_device(destination, host, bytes, stream_);
  }
}

void Place::layout_columns(const LayoutParams& params) {
  if (is_host()) {
    layout_columns_cpu(params);
  } else {
    cuda_runtime::check(layout_columns_cuda(params, stream_), "the layout kernel launch");
  }
}

void Place::synchronize() {
  if (!is_host()) cuda_synchronize(stream_);
}

Workspace::Workspace() = default;
Workspace::~Workspace() = default;
Workspace::Workspace(Workspace&&) noexcept = default;
Workspace& Workspace::operator=(Workspace&&) noexcept = default;

void Workspace::PinnedFree::operator()(void* memory) const noexcept { cuda_runtime::free_host(memory); }

unsigned long long* Workspace::device_counter(const Place& place) {
  if (counter_.data() == nullptr) {
    counter_ = DeviceBuffer(3 * sizeof(unsigned long long), place.device().index);
    cuda_fill(counter_.data(), 0, counter_.size());  // the slots start at zero (LookupParams::bad_id_slots)
  }
  return static_cast<unsigned long long*>(counter_.data());
}

const unsigned long long* Workspace::device_counter_if_any() const {
  return static_cast<const unsigned long long*>(counter_.data());
}

void* Workspace::scratch(const Place& place, Scratch kind, std::size_t bytes) {
  const auto slot = static_cast<int>(kind);
  if (place.is_host()) {
    auto& buffer = host_scratch_[slot];
    if (buffer.size() < bytes || buffer.empty()) buffer.resize(std::max<std::size_t>(bytes, 1));
    return buffer.data();
  }
  auto& buffer = device_scratch_[slot];
  if (buffer.size() < bytes || buffer.data() == nullptr) buffer = DeviceBuffer(bytes, place.device().index);
  return buffer.data();
}

void* Workspace::host_stage(std::size_t bytes) {
  if (stage_bytes_ < bytes || stage_ == nullptr) {
    stage_.reset(cuda_runtime::alloc_host(bytes));
    stage_bytes_ = bytes;
  }
  return stage_.get();
}

void* Workspace::small_host_stage(std::size_t bytes) {
  if (small_stage_bytes_ < bytes || small_stage_ == nullptr) {
    small_stage_bytes_ = std::max<std::size_t>(bytes, 8192);
    small_stage_.reset(cuda_runtime::alloc_host(small_stage_bytes_));
  }
  return small_stage_.get();
}

fingerprint::DeviceScratch* Workspace::fingerprint_scratch(const Place& place) {
  if (fingerprint_scratch_.data() == nullptr) {
    const std::size_t bytes = sizeof(fingerprint::DeviceScratch) + sizeof(std::uint64_t);
    fingerprint_scratch_ = DeviceBuffer(bytes, place.device().index);
    cuda_fill(fingerprint_scratch_.data(), 0, bytes);  // the finished-block count starts at zero
  }
  return static_cast<fingerprint::DeviceScratch*>(fingerprint_scratch_.data());
}

}  // namespace tpembed::op

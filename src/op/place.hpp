// Where the op layer's work runs (the host, or a CUDA device with a stream), and the buffers it
// keeps between calls. The op code is written once against these; the CUDA calls live in src/cuda.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

#include "cuda/fingerprint.hpp"
#include "cuda/runtime.hpp"
#include "tpembed/cuda.hpp"
#include "tpembed/gradient.hpp"
#include "tpembed/lookup.hpp"
#include "tpembed/tensor.hpp"

namespace tpembed::op {

/// The host, or one CUDA device and the stream its work is queued on.
class Place {
 public:
  /// Makes the device current for the calling thread when it is a CUDA device; the destructor
  /// makes the previous one current again (the caller's framework keeps its device).
  Place(const Device& device, void* stream);
  ~Place();
  Place(const Place&) = delete;
  Place& operator=(const Place&) = delete;

  bool is_host() const { return device_.kind == DeviceKind::cpu; }
  const Device& device() const { return device_; }
  /// The stream work is queued on (a cudaStream_t; null for the host or the default stream).
  void* stream() const { return stream_; }

  /// The lookup on this place (lookup_cpu, or a lookup_cuda launch whose status is checked).
  void lookup(const LookupParams& params);
  /// The backward on this place (embedding_backward_cpu, or the CUDA one whose status is checked).
  void backward(const GradientParams& params);
  /// Copies from this place to host memory; returns once the data is there.
  void to_host(void* host, const void* source, std::size_t bytes);
  /// Copies from host memory to this place (queued on the stream for a device).
  void from_host(void* destination, const void* host, std::size_t bytes);
  /// Lays gathered column blocks out as output rows (layout_columns_cpu, or one kernel launch).
  void layout_columns(const LayoutParams& params);
  /// Waits for the work queued on this place.
  void synchronize();

 private:
  Device device_;
  void* stream_;
  cuda_runtime::DeviceScope scope_;
};

/// Buffers a ParallelEmbedding keeps between calls: grown when a call needs more, never per call.
class Workspace {
 public:
  Workspace();
  ~Workspace();
  Workspace(Workspace&&) noexcept;
  Workspace& operator=(Workspace&&) noexcept;

  /// The device's bad-id slots (LookupParams::bad_id_slots: the count in [0]), allocated and zeroed
  /// once, on `place`'s device.
  unsigned long long* device_counter(const Place& place);
  /// The counter if it was allocated, else null.
  const unsigned long long* device_counter_if_any() const;
  /// What a scratch buffer is for (each kind is kept, and grown, separately).
  enum class Scratch {
    gather_blocks,
    exchange_ids,
    exchange_positions,
    exchange_receive,
    forward_facts,
    gradient,         // the backward's workspace (gradient_workspace_bytes)
    gradient_counts,  // the backward's GradientCounts (four words)
    scatter_ids,      // scattered layouts: the group's ids in member order
    scatter_rows,     // scattered layouts: rows looked up (or gathered) before an exchange
    scatter_receive,  // scattered layouts: rows received (or put in natural order)
    count
  };
  /// At least `bytes` of scratch of kind `kind` on `place`.
  void* scratch(const Place& place, Scratch kind, std::size_t bytes);
  /// At least `bytes` of page-locked host memory for staging device data through MPI.
  void* host_stage(std::size_t bytes);
  /// At least `bytes` (and at least 8 KiB) of page-locked host memory for the small per-call copies
  /// of the forward's cross-rank check, apart from host_stage()'s buffer.
  void* small_host_stage(std::size_t bytes);
  /// The device fingerprint kernel's scratch (fingerprint::DeviceScratch) followed by one 64-bit
  /// result slot, on `place`'s device, zeroed when first allocated.
  fingerprint::DeviceScratch* fingerprint_scratch(const Place& place);

 private:
  DeviceBuffer counter_;
  DeviceBuffer device_scratch_[static_cast<int>(Scratch::count)];
  std::vector<std::uint8_t> host_scratch_[static_cast<int>(Scratch::count)];
  struct PinnedFree {
    void operator()(void* memory) const noexcept;
  };
  std::unique_ptr<void, PinnedFree> stage_;
  std::size_t stage_bytes_ = 0;
  std::unique_ptr<void, PinnedFree> small_stage_;
  std::size_t small_stage_bytes_ = 0;
  DeviceBuffer fingerprint_scratch_;
};

}  // namespace tpembed::op

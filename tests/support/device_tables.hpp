// Test support for GPU runs: host tables uploaded to device buffers, and outputs read back.
#pragma once

#include <memory>
#include <vector>

#include "reference.hpp"

namespace tpembed::testing {

/// A device copy of a host tensor: the buffer and a view of it with the host tensor's shape.
struct DeviceCopy {
  std::shared_ptr<DeviceBuffer> buffer;
  TensorView view;
};

/// The CUDA device the helpers below upload to (per thread): 0 unless a test of one GPU per rank, or
/// a thread driving one GPU, picks another.
int test_device();
void set_test_device(int device);

/// Uploads `table` (bytes, shape and dtype as in HostTable::view()) to test_device(), at
/// `byte_offset` into the buffer (an offset that is not a multiple of 16 tests the unaligned path).
DeviceCopy upload(const HostTable& table, std::size_t byte_offset = 0);

/// Uploads raw bytes as a tensor of `dtype` and `shape`.
DeviceCopy upload_bytes(const std::vector<std::uint8_t>& bytes, DType dtype,
                        std::vector<std::int64_t> shape, std::size_t byte_offset = 0);

/// Uploads every part of a host shard; the returned shard owns the device buffers.
EmbeddingShard upload_shard(const EmbeddingShard& host_shard, std::size_t byte_offset = 0);

/// True when each of CUDA devices 0..count-1 can read the memory of every other (what the peer_rows
/// exchange needs across the GPUs of a group).
bool gpus_reach_each_other(int count);

/// Copies `bytes` of device memory to a host vector.
std::vector<std::uint8_t> download(const void* device, std::size_t bytes);

}  // namespace tpembed::testing

#include "device_tables.hpp"

#include <cstring>

namespace tpembed::testing {

namespace {
thread_local int current_test_device = 0;  // per thread: one thread per GPU in multi-GPU tests
}  // namespace

int test_device() { return current_test_device; }
void set_test_device(int device) { current_test_device = device; }

DeviceCopy upload_bytes(const std::vector<std::uint8_t>& bytes, DType dtype, std::vector<std::int64_t> shape,
                        std::size_t byte_offset) {
  DeviceCopy copy;
  copy.buffer = std::make_shared<DeviceBuffer>(bytes.size() + byte_offset + 16, test_device());
  std::vector<std::uint8_t> padded(byte_offset, 0);
  padded.insert(padded.end(), bytes.begin(), bytes.end());
  copy.buffer->copy_from_host(padded.data(), padded.size());
  copy.view = TensorView(static_cast<std::uint8_t*>(copy.buffer->data()) + byte_offset, dtype, std::move(shape),
                         Device::cuda(test_device()));
  return copy;
}

DeviceCopy upload(const HostTable& table, std::size_t byte_offset) {
  const TensorView host = table.view();
  return upload_bytes(table.bytes, table.dtype, host.shape, byte_offset);
}

EmbeddingShard upload_shard(const EmbeddingShard& host_shard, std::size_t byte_offset) {
  auto owners = std::make_shared<std::vector<std::shared_ptr<DeviceBuffer>>>();
  auto move_up = [&](const TensorView& view) {
    if (view.absent()) return TensorView();
    const auto* begin = static_cast<const std::uint8_t*>(view.data);
    std::vector<std::uint8_t> bytes(begin, begin + view.nbytes());
    DeviceCopy copy = upload_bytes(bytes, view.dtype, view.shape, byte_offset);
    owners->push_back(copy.buffer);
    return copy.view;
  };
  EmbeddingShard shard;
  shard.weight = move_up(host_shard.weight);
  shard.scale = move_up(host_shard.scale);
  shard.padding = move_up(host_shard.padding);
  shard.padding_scale = move_up(host_shard.padding_scale);
  shard.owner = owners;
  return shard;
}

bool gpus_reach_each_other(int count) {
  for (int a = 0; a < count; ++a) {
    for (int b = 0; b < count; ++b) {
      if (!cuda_peer_access_possible(a, b)) return false;
    }
  }
  return true;
}

std::vector<std::uint8_t> download(const void* device, std::size_t bytes) {
  std::vector<std::uint8_t> host(bytes);
  cuda_copy(host.data(), device, bytes);
  return host;
}

}  // namespace tpembed::testing

// PeerTables: the members exchange handles to their tables once, at set-up; afterwards a lookup
// reads every row from its owner through the mapped pointers.
#include "op/peer_tables.hpp"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <fstream>
#include <random>

#include "cuda/runtime.hpp"
#include "op/place.hpp"
#include "tpembed/error.hpp"

namespace tpembed::op {

namespace {

// What a member tells the others about its table (plain bytes, fixed size).
struct PeerRecord {
  char node[192];           // host name and boot id: members with the same one share a machine
  std::uint64_t process[2];  // members of one process read each other's pointers directly
  std::int32_t device;  // CUDA device of the table; -1 for host memory
  std::int32_t shareable;
  std::int32_t has_scale;
  std::int32_t reserved;
  cuda_runtime::SharedMemoryHandle table, scale;
  std::uint64_t table_address, scale_address;
  char why[512];  // why the table cannot be shared
};

// A random token drawn once per process: unlike the pid, it cannot be the same in two processes of
// one machine (containers with their own pid namespaces can repeat pids).
const std::uint64_t* process_identity() {
  static const std::array<std::uint64_t, 2> token = [] {
    std::random_device entropy;
    std::array<std::uint64_t, 2> bits{};
    for (auto& word : bits) word = (std::uint64_t{entropy()} << 32) ^ entropy() ^ std::uint64_t(getpid());
    return bits;
  }();
  return token.data();
}

std::string node_identity() {
  char host[128] = {};
  gethostname(host, sizeof host - 1);
  std::string boot;
  std::ifstream("/proc/sys/kernel/random/boot_id") >> boot;
  return std::string(host) + "/" + boot;
}

// The largest power of two up to 16 that divides `address`.
int alignment_of(std::uint64_t address) {
  int alignment = 16;
  while (alignment > 1 && address % static_cast<std::uint64_t>(alignment) != 0) alignment /= 2;
  return alignment;
}

PeerRecord describe(const EmbeddingShard& shard) {
  PeerRecord record{};
  // The record starts zeroed: strncpy of size - 1 leaves the text terminated.
  std::strncpy(record.node, node_identity().c_str(), sizeof record.node - 1);
  std::memcpy(record.process, process_identity(), sizeof record.process);
  record.has_scale = shard.scale.absent() ? 0 : 1;
  record.table_address = reinterpret_cast<std::uintptr_t>(shard.weight.data);
  record.scale_address = reinterpret_cast<std::uintptr_t>(shard.scale.data);
  if (shard.weight.device.kind != DeviceKind::cuda) {
    record.device = -1;
    std::strncpy(record.why, "its table is in host memory (peer_rows reads GPU memory)", sizeof record.why - 1);
    return record;
  }
  record.device = shard.weight.device.index;
  try {
    Place place(shard.weight.device, nullptr);
    // Peers read the table from here on: whatever this process still has queued that writes it
    // (an upload on some stream) must land first.
    cuda_runtime::synchronize_device();
    record.table = cuda_runtime::share_memory(shard.weight.data);
    if (record.has_scale) record.scale = cuda_runtime::share_memory(shard.scale.data);
    record.shareable = 1;
  } catch (const std::exception& error) {
    std::strncpy(record.why, error.what(), sizeof record.why - 1);
  }
  return record;
}

}  // namespace

std::unique_ptr<PeerTables> PeerTables::connect(Communicator& group, const EmbeddingShard& shard,
                                                const ShardLayout& layout, const std::vector<int>& tp_rank_of_member) {
  const int members = group.size();
  const PeerRecord mine = describe(shard);
  std::vector<PeerRecord> all(static_cast<std::size_t>(members));
  group.all_gather(&mine, all.data(), sizeof mine, DType::i8);

  auto give_up = [](const std::string& reason) -> std::unique_ptr<PeerTables> {
    throw UnsupportedError("the peer_rows vocab exchange cannot run: " + reason);
  };
  // The same verdict on every rank: it depends on the gathered records only.
  for (int m = 0; m < members; ++m) {
    const PeerRecord& record = all[static_cast<std::size_t>(m)];
    if (!record.shareable) {
      return give_up(detail::concat("rank ", m, " of the tp group cannot share its table: ", record.why));
    }
    if (std::strcmp(record.node, all[0].node) != 0) {
      return give_up(detail::concat("rank ", m, " of the tp group runs on another machine than rank 0 ",
                                    "(peers' GPU memory is reachable on one machine only)"));
    }
  }

  std::unique_ptr<PeerTables> tables(new PeerTables(group, mine.device));
  std::exception_ptr error;
  try {
    Place place(shard.weight.device, nullptr);
    std::vector<LookupShard> shards(static_cast<std::size_t>(members));
    int alignment = 16;
    for (int m = 0; m < members; ++m) {
      const PeerRecord& record = all[static_cast<std::size_t>(m)];
      const int t = tp_rank_of_member[static_cast<std::size_t>(m)];
      LookupShard& entry = shards[static_cast<std::size_t>(t)];
      entry.row_offset = layout.offsets[static_cast<std::size_t>(t)];
      entry.rows = layout.sizes[static_cast<std::size_t>(t)];
      alignment = std::min(alignment, alignment_of(record.table_address));
      if (std::memcmp(record.process, mine.process, sizeof mine.process) == 0) {
        // This process (this rank, or a thread driving another GPU): the pointer itself.
        cuda_runtime::enable_peer_access(record.device);
        entry.table = reinterpret_cast<const void*>(record.table_address);
        entry.scale = record.has_scale ? reinterpret_cast<const void*>(record.scale_address) : nullptr;
        continue;
      }
      // A process may open one allocation only once: where the scales live in the table's own
      // allocation (one packed buffer, or a caching allocator's segment), the mapping is shared.
      auto map = [&](const cuda_runtime::SharedMemoryHandle& handle) {
        tables->mappings_.push_back(cuda_runtime::map_memory(handle));
        return static_cast<const std::uint8_t*>(tables->mappings_.back());
      };
      const std::uint8_t* table_base = map(record.table);
      entry.table = table_base + record.table.offset;
      if (!record.has_scale) continue;
      const bool same_allocation = record.scale_address - static_cast<std::uintptr_t>(record.scale.offset) ==
                                   record.table_address - static_cast<std::uintptr_t>(record.table.offset);
      entry.scale = (same_allocation ? table_base : map(record.scale)) + record.scale.offset;
    }
    tables->num_shards_ = members;
    tables->alignment_ = alignment;
    const bool equal = std::all_of(shards.begin(), shards.end(), [&](const LookupShard& s) {
      return s.rows == shards[0].rows && s.row_offset == (&s - shards.data()) * shards[0].rows;
    });
    tables->shard_rows_ = equal ? shards[0].rows : 0;
    tables->shards_ = DeviceBuffer(shards.size() * sizeof(LookupShard), mine.device);
    tables->shards_.copy_from_host(shards.data(), shards.size() * sizeof(LookupShard));
  } catch (...) {
    error = std::current_exception();
  }
  try {
    agree_or_throw(group, error);
  } catch (const Error& failure) {
    // Nobody reads a peer's table from here on: unmap (on the device that mapped), and let no
    // member free its table before every member has unmapped it.
    tables->unmap();
    tables->group_ = nullptr;
    group.barrier();
    return give_up(failure.what());
  }
  return tables;
}

void PeerTables::unmap(bool wait_for_device) noexcept {
  // On the device that mapped them (the caller's current device is put back).
  try {
    const cuda_runtime::DeviceScope on(device_);
    if (wait_for_device) cuda_runtime::synchronize_device();  // no lookup still reads a peer's table
    for (void* base : mappings_) cuda_runtime::unmap_memory(base);
  } catch (...) {
    // The device cannot even be made current: nothing left that could be unmapped.
  }
  mappings_.clear();
}

PeerTables::~PeerTables() {
  if (group_ == nullptr) return;
  unmap(/*wait_for_device=*/true);
  try {
    group_->barrier();  // ... nor does any other rank's: each may now free its own
  } catch (...) {
    // A broken group: nothing left to wait for.
  }
}

void PeerTables::apply(LookupParams& params) const {
  params.shards = static_cast<const LookupShard*>(shards_.data());
  params.num_shards = num_shards_;
  params.shards_alignment = alignment_;
  params.shard_rows = shard_rows_;
}

}  // namespace tpembed::op

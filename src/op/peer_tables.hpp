// The peer_rows vocab exchange: every shard of the group's table mapped into this process, so that
// one lookup kernel reads each token's row straight from its owner's GPU memory. No collective runs
// per call and nothing goes through the host: the forward can be captured in a CUDA graph.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "tpembed/communicator.hpp"
#include "tpembed/cuda.hpp"
#include "tpembed/embedding.hpp"
#include "tpembed/lookup.hpp"
#include "tpembed/parallel_embedding.hpp"

namespace tpembed::op {

class PeerTables {
 public:
  /// Maps every member's table (and scales) of `group` into this process: CUDA IPC for members in
  /// other processes of the node, the pointer itself (with peer access) for members in this one.
  /// Collective over `group`. When the peers cannot be reached (tables on the host, several nodes,
  /// memory that cannot be shared, no peer access), every rank alike throws UnsupportedError saying
  /// why.
  static std::unique_ptr<PeerTables> connect(Communicator& group, const EmbeddingShard& shard,
                                             const ShardLayout& layout, const std::vector<int>& tp_rank_of_member);

  /// Waits for this device's work, unmaps the peers' tables, then waits for the whole group
  /// (a barrier), so that no member frees a table that another may still read: destroying the
  /// embedding is collective.
  ~PeerTables();
  PeerTables(const PeerTables&) = delete;
  PeerTables& operator=(const PeerTables&) = delete;

  /// Points a lookup at the group's table (LookupParams::shards and the fields that go with it).
  void apply(LookupParams& params) const;

 private:
  PeerTables(Communicator& group, int device) : group_(&group), device_(device) {}
  void unmap(bool wait_for_device = false) noexcept;

  Communicator* group_;
  int device_;
  std::vector<void*> mappings_;  // bases of the IPC mappings this process opened
  DeviceBuffer shards_;          // LookupShard[tp] in tp_rank order, on the device
  int num_shards_ = 0;
  int alignment_ = 1;
  std::int64_t shard_rows_ = 0;
};

}  // namespace tpembed::op

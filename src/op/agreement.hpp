// Agreement across the ranks of a ParallelEmbedding: what every rank says at set-up (its group and
// its shard, one record per rank in one collective over the whole communicator), and what every
// rank of a group says before each forward (its number of ids and their fingerprint, in the
// argument check's collective). The checks over the gathered records are deterministic: every rank
// given the same records returns or throws the same.
#pragma once

#include <cstdint>
#include <exception>
#include <vector>

#include "op/checks.hpp"
#include "op/place.hpp"
#include "tpembed/embedding.hpp"
#include "tpembed/parallel_embedding.hpp"

namespace tpembed::op {

/// Members of a group listed in a SetupFacts record (for messages; larger groups are compared by
/// their hash alone).
constexpr int kListedMembers = 16;

/// What one rank of the communicator says at set-up (plain bytes, fixed size, no padding).
struct SetupFacts {
  ShardDescription shard;
  std::int32_t tp_size;
  std::int32_t group_size;      ///< Members of this rank's group (tp_size).
  std::int32_t group_position;  ///< This rank's place in its group (its group rank).
  std::int32_t group_leader;    ///< The group's smallest communicator rank.
  std::uint64_t group_hash;     ///< Hash of the group's member list, in order.
  std::int32_t listed;          ///< Members in `members` (the first kListedMembers).
  std::int32_t reserved;
  std::int32_t members[kListedMembers];
};

/// The communicator ranks of this rank's group: tp_group, or every rank when it is empty (tp > 1)
/// or this rank alone (tp 1). Throws InvalidArgumentError when the list cannot be this rank's.
std::vector<int> group_members(const EmbeddingConfig& config, int comm_rank, int comm_size);

/// This rank's record; `shard` describes its (already checked) shard.
SetupFacts describe_setup(const ShardDescription& shard, const EmbeddingConfig& config,
                          const std::vector<int>& members, int comm_rank);

/// The outcome of the set-up checks for one rank.
struct SetupPlan {
  ShardLayout layout;
  std::vector<int> tp_rank_of_member;  ///< tp_rank of each group rank
  bool any_group = false;              ///< some rank of the communicator has tp_size > 1
};

/// Checks every rank's record (indexed by communicator rank): the groups form a partition that
/// every member names alike, and the shards of each group fit each other (plan_layout). Throws,
/// identically on every rank, the first problem found in any group.
SetupPlan plan_setup(const std::vector<SetupFacts>& all, int comm_rank);

/// What one rank of a group says before a forward (plain bytes, fixed size, no padding).
struct ForwardFacts {
  std::int32_t failed;  ///< 1: this rank failed its own checks (its error follows, agreed).
  std::int32_t reserved;
  std::int64_t count;             ///< Ids looked up.
  std::uint64_t ids_fingerprint;  ///< See cuda/fingerprint.hpp.
  std::uint64_t reserved2;
};

/// Gathers every group member's ForwardFacts (indexed by group rank) in one all_gather. This rank
/// says it failed when `local_error` is set (or computing the fingerprint fails: `local_error` is
/// then set to that), else gives the count and fingerprint of `ids`. Over a communicator
/// that takes device buffers, with `place` a GPU, the record is assembled on the device (the
/// fingerprint kernel stores into it) and gathered there, then copied back once: one small kernel
/// more in the chain, and no copy of the ids or of the record to the device. Otherwise the fingerprint is computed as
/// ids_fingerprint() says and the records go through host memory. Waits for `place`'s stream.
std::vector<ForwardFacts> gather_forward_facts(Communicator& group, const TensorView& ids,
                                               std::exception_ptr& local_error, Place& place,
                                               Workspace& workspace);

/// Throws ShapeError when the group's ranks look up different numbers of ids, then
/// InvalidArgumentError when their ids differ, naming the ranks that differ from group rank 0.
void check_forward_facts(const std::vector<ForwardFacts>& all);

/// The fingerprint of host ids (i32 or i64).
std::uint64_t host_ids_fingerprint(const void* ids, DType dtype, std::int64_t count);

/// The fingerprint of `ids` on `place`, on the host (host ids are hashed here; up to 1024 GPU ids
/// are copied to the host and hashed there; more are reduced by one small kernel whose result is
/// copied back). Waits for `place`'s stream. Nothing is allocated after the first call.
std::uint64_t ids_fingerprint(const TensorView& ids, Place& place, Workspace& workspace);

}  // namespace tpembed::op

#include "op/agreement.hpp"

#include <algorithm>
#include <map>
#include <sstream>
#include <utility>

#include "cuda/fingerprint.hpp"
#include "cuda/runtime.hpp"
#include "tpembed/error.hpp"

namespace tpembed::op {

static_assert(sizeof(ShardDescription) == 88,
              "ShardDescription is exchanged as raw bytes, without padding");
static_assert(sizeof(SetupFacts) == 184, "SetupFacts is exchanged as raw bytes, without padding");
static_assert(sizeof(ForwardFacts) == 32,
              "ForwardFacts is exchanged as raw bytes, without padding");

namespace {

// GPU ids up to this many are copied to the host and hashed there: one small copy costs less than
// a kernel launch and a copy.
constexpr std::int64_t kHostHashedIds = 1024;

std::uint64_t hash_members(const std::vector<int>& members) {
  std::uint64_t hash = fingerprint::mix(members.size() + fingerprint::kPositionSeed);
  for (int member : members) hash = fingerprint::mix(hash ^ static_cast<std::uint64_t>(member)) + 1;
  return hash;
}

// "tp_size 2 and tp group [0,1]", as the rank passed them (resolved).
std::string describe_group(const SetupFacts& facts) {
  std::ostringstream text;
  text << "tp_size " << facts.tp_size;
  if (facts.group_size == 1) return text.str() + " (a group of its own)";
  text << " and tp group [";
  for (int k = 0; k < facts.listed; ++k) text << (k ? "," : "") << facts.members[k];
  if (facts.listed < facts.group_size) text << ",...";
  text << "]";
  return text.str();
}


}  // namespace

std::vector<int> group_members(const EmbeddingConfig& config, int comm_rank, int comm_size) {
  if (config.tp_group.empty()) {
    if (config.tp_size == 1) return {comm_rank};
    TPEMBED_EXPECTS(comm_size == config.tp_size, InvalidArgumentError, "tp_size ", config.tp_size,
                    " but the communicator has ", comm_size,
                    " ranks: pass tp_group to name this rank's group");
    std::vector<int> all(static_cast<std::size_t>(comm_size));
    for (int r = 0; r < comm_size; ++r) all[static_cast<std::size_t>(r)] = r;
    return all;
  }
  const std::vector<int>& group = config.tp_group;
  for (int member : group) {
    TPEMBED_EXPECTS(member >= 0 && member < comm_size, InvalidArgumentError, "tp_group ",
                    detail::bracketed(group), " names rank ", member,
                    ", outside the communicator's [0, ", comm_size, ")");
  }
  std::vector<int> sorted = group;
  std::sort(sorted.begin(), sorted.end());
  TPEMBED_EXPECTS(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end(),
                  InvalidArgumentError, "tp_group ", detail::bracketed(group),
                  " names a rank twice");
  TPEMBED_EXPECTS(std::binary_search(sorted.begin(), sorted.end(), comm_rank), InvalidArgumentError,
                  "tp_group ", detail::bracketed(group), " does not contain this rank (", comm_rank,
                  ")");
  return group;
}

SetupFacts describe_setup(const ShardDescription& shard, const EmbeddingConfig& config,
                          const std::vector<int>& members, int comm_rank) {
  SetupFacts facts{};
  facts.shard = shard;
  facts.tp_size = config.tp_size;
  facts.group_size = static_cast<std::int32_t>(members.size());
  facts.group_position = static_cast<std::int32_t>(
      std::find(members.begin(), members.end(), comm_rank) - members.begin());
  facts.group_leader = *std::min_element(members.begin(), members.end());
  facts.group_hash = hash_members(members);
  facts.listed = std::min<std::int32_t>(facts.group_size, kListedMembers);
  std::copy(members.begin(), members.begin() + facts.listed, facts.members);
  return facts;
}

SetupPlan plan_setup(const std::vector<SetupFacts>& all, int comm_rank) {
  const int ranks = static_cast<int>(all.size());
  // 1. Every member a rank names must name the same group (then the groups are a partition).
  std::map<std::pair<int, std::uint64_t>, int> claimants;
  for (int r = 0; r < ranks; ++r) {
    const SetupFacts& facts = all[static_cast<std::size_t>(r)];
    for (int k = 0; k < facts.listed; ++k) {
      const SetupFacts& member = all[static_cast<std::size_t>(facts.members[k])];
      TPEMBED_EXPECTS(member.group_hash == facts.group_hash, InvalidArgumentError, "rank ", r,
                      " passes ", describe_group(facts), " but rank ", facts.members[k], " passes ",
                      describe_group(member),
                      ": every rank of a tp group must pass the same tp_size and tp_group");
    }
    ++claimants[{facts.group_leader, facts.group_hash}];
  }
  // Members past the listed ones: a group is complete when as many ranks claim it as it has.
  for (int r = 0; r < ranks; ++r) {
    const SetupFacts& facts = all[static_cast<std::size_t>(r)];
    const int claimed = claimants[{facts.group_leader, facts.group_hash}];
    TPEMBED_EXPECTS(claimed == facts.group_size, InvalidArgumentError, "rank ", r, " passes ",
                    describe_group(facts), " but only ", claimed, " ranks pass that group",
                    ": every rank of a tp group must pass the same tp_size and tp_group");
  }

  // 2. The shards of every group, in the order of their leaders (the same order on every rank).
  SetupPlan plan;
  const SetupFacts& mine = all[static_cast<std::size_t>(comm_rank)];
  for (const auto& group : claimants) {
    std::vector<ShardDescription> shards(static_cast<std::size_t>(group.second));
    std::vector<int> members(shards.size());
    for (int r = 0; r < ranks; ++r) {
      const SetupFacts& facts = all[static_cast<std::size_t>(r)];
      if (facts.group_leader != group.first.first || facts.group_hash != group.first.second)
        continue;
      shards[static_cast<std::size_t>(facts.group_position)] = facts.shard;
      members[static_cast<std::size_t>(facts.group_position)] = r;
    }
    if (shards.size() > 1) plan.any_group = true;
    const bool my_group =
        group.first.first == mine.group_leader && group.first.second == mine.group_hash;
    try {
      ShardLayout layout = plan_layout(shards, my_group ? mine.group_position : 0);
      if (my_group) {
        plan.layout = std::move(layout);
        for (const ShardDescription& shard : shards)
          plan.tp_rank_of_member.push_back(shard.tp_rank);
      }
    } catch (const Error& error) {
      bool whole_in_order = static_cast<int>(members.size()) == ranks;
      for (int k = 0; whole_in_order && k < ranks; ++k)
        whole_in_order = members[static_cast<std::size_t>(k)] == k;
      if (whole_in_order) throw;
      // Ranks of other groups throw it too, and plan_layout counts in group ranks: name the group.
      throw_error(error.code(),
                  detail::concat("in the tp group of ranks ", rank_list(members),
                                 " (counting ranks within that group): ", error.what()));
    }
  }
  return plan;
}

std::vector<ForwardFacts> gather_forward_facts(Communicator& group, const TensorView& ids,
                                               std::exception_ptr& local_error, Place& place,
                                               Workspace& workspace) {
  const auto ranks = static_cast<std::size_t>(group.size());
  const auto me = static_cast<std::size_t>(group.rank());
  std::vector<ForwardFacts> all(ranks);
  ForwardFacts mine{};
  mine.count = ids.numel();
  // A failure here must still reach the gather below, or the others would wait for this rank.
  auto attempt = [&](const auto& step) {
    if (local_error) return;
    try {
      step();
    } catch (...) {
      local_error = std::current_exception();
    }
  };
  const bool on_device = !place.is_host() && group.accepts_device_buffers();
  if (!on_device) {
    attempt([&] { mine.ids_fingerprint = ids_fingerprint(ids, place, workspace); });
    mine.failed = local_error ? 1 : 0;
    group.all_gather(&mine, all.data(), sizeof mine, DType::i8);
    return all;
  }
  // The records on the device: this rank's host part is copied into its slot, the kernel stores the
  // fingerprint next to it, the group gathers in place, and one copy brings every record back.
  const std::size_t bytes = ranks * sizeof(ForwardFacts);
  ForwardFacts* records = nullptr;
  ForwardFacts* staged = nullptr;
  attempt([&] {
    records = static_cast<ForwardFacts*>(
        workspace.scratch(place, Workspace::Scratch::forward_facts, bytes));
    staged = static_cast<ForwardFacts*>(workspace.small_host_stage(bytes));
    mine.failed = local_error ? 1 : 0;
    if (mine.count == 0) mine.ids_fingerprint = host_ids_fingerprint(nullptr, ids.dtype, 0);
    staged[me] = mine;
    place.from_host(records + me, staged + me, sizeof mine);
    if (mine.count > 0) {
      cuda_runtime::check(
          fingerprint::fingerprint_cuda(ids.data, ids.dtype == DType::i64, mine.count,
                                        workspace.fingerprint_scratch(place),
                                        &records[me].ids_fingerprint, place.stream()),
          "the ids fingerprint kernel launch");
    }
  });
  if (records == nullptr || staged == nullptr) {
    // This rank failed before its device record was set up: it joins through host memory (the
    // same collective; the engine stages host buffers).
    mine.failed = 1;
    group.all_gather(&mine, all.data(), sizeof mine, DType::i8);
    return all;
  }
  if (local_error) {
    staged[me].failed = 1;  // queued after the first copy: the slot ends up saying so
    place.from_host(records + me, staged + me, sizeof mine);
  }
  group.all_gather(records + me, records, sizeof mine, DType::i8, place.stream());
  place.to_host(staged, records, bytes);
  std::copy(staged, staged + ranks, all.begin());
  return all;
}

void check_forward_facts(const std::vector<ForwardFacts>& all) {
  const ForwardFacts& first = all[0];
  std::ostringstream counts;
  std::vector<int> other_ids;
  for (std::size_t r = 1; r < all.size(); ++r) {
    if (all[r].count != first.count) {
      counts << (counts.tellp() > 0 ? "; " : "") << "rank " << r << " of the tp group looks up "
             << all[r].count << " ids but rank 0 looks up " << first.count;
    } else if (all[r].ids_fingerprint != first.ids_fingerprint) {
      other_ids.push_back(static_cast<int>(r));
    }
  }
  if (counts.tellp() > 0) {
    throw ShapeError(counts.str() + ": every rank of the group must pass the same ids");
  }
  if (!other_ids.empty()) {
    const ForwardFacts& other = all[static_cast<std::size_t>(other_ids[0])];
    throw InvalidArgumentError(detail::concat(
        other_ids.size() > 1 ? "ranks " : "rank ", rank_list(other_ids), " of the tp group look",
        other_ids.size() > 1 ? "" : "s", " up other ids than rank 0 (the same count, ", first.count,
        ", but ids fingerprint ", hex(other.ids_fingerprint), " where rank 0 has ",
        hex(first.ids_fingerprint),
        "): every rank of the group must pass the same ids, in the same order"));
  }
}

std::uint64_t host_ids_fingerprint(const void* ids, DType dtype, std::int64_t count) {
  std::uint64_t sum = 0;
  if (dtype == DType::i32) {
    const auto* values = static_cast<const std::int32_t*>(ids);
    for (std::int64_t i = 0; i < count; ++i) sum += fingerprint::term(values[i], i);
  } else {
    const auto* values = static_cast<const std::int64_t*>(ids);
    for (std::int64_t i = 0; i < count; ++i) sum += fingerprint::term(values[i], i);
  }
  return fingerprint::finish(sum, count);
}

std::uint64_t ids_fingerprint(const TensorView& ids, Place& place, Workspace& workspace) {
  const std::int64_t count = ids.numel();
  if (place.is_host() || count == 0) return host_ids_fingerprint(ids.data, ids.dtype, count);
  if (count <= kHostHashedIds) {
    void* staged = workspace.small_host_stage(static_cast<std::size_t>(ids.nbytes()));
    place.to_host(staged, ids.data, static_cast<std::size_t>(ids.nbytes()));
    return host_ids_fingerprint(staged, ids.dtype, count);
  }
  fingerprint::DeviceScratch* scratch = workspace.fingerprint_scratch(place);
  auto* result = reinterpret_cast<std::uint64_t*>(scratch + 1);
  cuda_runtime::check(fingerprint::fingerprint_cuda(ids.data, ids.dtype == DType::i64, count,
                                                    scratch, result, place.stream()),
                      "the ids fingerprint kernel launch");
  auto* staged = static_cast<std::uint64_t*>(workspace.small_host_stage(sizeof(std::uint64_t)));
  place.to_host(staged, result, sizeof(std::uint64_t));
  return *staged;
}

}  // namespace tpembed::op

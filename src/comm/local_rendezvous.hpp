// The members of one communicator that live in this process (one thread per GPU) meet on the host
// before each eager collective. A GPU collective's kernel waits on the device for its peers; if one
// thread launched its part while another thread of the same process was still in a call that waits
// for the GPUs to go idle (cudaFree, cudaHostAlloc, a pageable copy: calls that change the device
// page tables), neither could go on. Meeting first means no member's kernel is queued before every
// member has finished such calls. Members in other processes are not involved: they cannot hold
// this process's driver locks.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

namespace tpembed::comm {

class LocalRendezvous {
 public:
  /// Joins (creating it the first time) the rendezvous named `key` in this process: one call per
  /// member, before the member's communicator set-up (which completes only once every member has
  /// joined, so the count is final by the first collective).
  static std::shared_ptr<LocalRendezvous> join(const std::string& key);

  /// Members that joined.
  int members() const;

  /// Waits until every member has arrived (returns at once with one member). Throws
  /// CommunicatorError naming `rank` when the others do not all arrive within `timeout`; the
  /// rendezvous is then broken and every later arrive() throws at once.
  void arrive(std::chrono::nanoseconds timeout, int rank);

  /// A name for a child of this rendezvous (a split): unique per parent, split number and color.
  std::string child_key(std::uint64_t split, int color) const;

 private:
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  int members_ = 0;
  int arrived_ = 0;
  std::uint64_t generation_ = 0;
  bool broken_ = false;
  std::uint64_t serial_ =
      0;  ///< unique in this process (child keys must not reuse a freed parent's)
};

}  // namespace tpembed::comm

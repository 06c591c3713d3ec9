#include "comm/local_rendezvous.hpp"

#include <map>

#include "tpembed/error.hpp"

namespace tpembed::comm {

std::shared_ptr<LocalRendezvous> LocalRendezvous::join(const std::string& key) {
  static std::mutex registry_mutex;
  static std::map<std::string, std::weak_ptr<LocalRendezvous>> registry;
  std::lock_guard<std::mutex> lock(registry_mutex);
  for (auto it = registry.begin(); it != registry.end();) {  // forget rendezvous nobody holds
    it = it->second.expired() ? registry.erase(it) : std::next(it);
  }
  std::shared_ptr<LocalRendezvous> rendezvous = registry[key].lock();
  if (!rendezvous) {
    static std::uint64_t serials = 0;
    rendezvous = std::make_shared<LocalRendezvous>();
    rendezvous->serial_ = ++serials;
    registry[key] = rendezvous;
  }
  std::lock_guard<std::mutex> count(rendezvous->mutex_);
  ++rendezvous->members_;
  return rendezvous;
}

int LocalRendezvous::members() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return members_;
}

void LocalRendezvous::arrive(std::chrono::nanoseconds timeout, int rank) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (members_ <= 1) return;
  TPEMBED_EXPECTS(!broken_, CommunicatorError, "rank ", rank,
                  ": an earlier collective of this communicator timed out waiting for the other "
                  "members in this "
                  "process; it cannot be used");
  const std::uint64_t generation = generation_;
  if (++arrived_ == members_) {
    arrived_ = 0;
    ++generation_;
    changed_.notify_all();
    return;
  }
  if (!changed_.wait_for(lock, timeout, [&] { return generation_ != generation || broken_; })) {
    broken_ = true;
    changed_.notify_all();
  }
  TPEMBED_EXPECTS(!broken_ || generation_ != generation, CommunicatorError, "rank ", rank,
                  ": only ", arrived_, " of the ", members_,
                  " members of this communicator in this process reached the collective in time (a "
                  "thread is gone, "
                  "stuck, or calling another collective)");
}

std::string LocalRendezvous::child_key(std::uint64_t split, int color) const {
  return "split of " + std::to_string(serial_) + " #" + std::to_string(split) + " color " +
         std::to_string(color);
}

}  // namespace tpembed::comm

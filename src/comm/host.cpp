// The host engine: collectives that another framework runs over host memory (tpembed.torch runs
// them over a torch.distributed gloo group). The engine checks nothing the base class has not, turns
// a failed collective into CommunicatorError, and refuses every call after one failed.
#include <algorithm>
#include <exception>
#include <string>
#include <utility>
#include <vector>

#include "tpembed/communicator.hpp"

namespace tpembed {

namespace {

class HostCommunicator final : public Communicator {
 public:
  explicit HostCommunicator(HostCollectives collectives) : c_(std::move(collectives)) {}

  int rank() const override { return c_.rank; }
  int size() const override { return c_.size; }
  std::string engine() const override { return c_.name; }

 protected:
  void do_all_reduce_sum(const void* send, void* recv, std::int64_t count, DType dtype,
                         void*) override {
    run("all_reduce_sum", [&] { c_.all_reduce_sum(send, recv, count, dtype); });
  }
  void do_all_gather(const void* send, void* recv, std::int64_t bytes_per_rank, void*) override {
    run("all_gather", [&] { c_.all_gather(send, recv, bytes_per_rank); });
  }
  void do_barrier() override {
    const char mine = 1;
    std::vector<char> all(static_cast<std::size_t>(c_.size));
    run("barrier", [&] { c_.all_gather(&mine, all.data(), 1); });
  }

  // Only the splits that need no new group of the framework's: every rank in one group (in rank
  // order), or every rank alone. The verdict comes from every rank's (color, key), gathered, so
  // each rank reaches the same one.
  std::unique_ptr<Communicator> do_split(int color, int key) override {
    const std::int64_t mine[2] = {color, key};
    std::vector<std::int64_t> all(2 * static_cast<std::size_t>(c_.size));
    all_gather(mine, all.data(), 2, DType::i64);
    bool whole = true, alone = true;
    for (int r = 0; r < c_.size; ++r) {
      whole = whole && all[2 * r] == all[0] && all[2 * r + 1] == r;
      alone = alone && all[2 * r] == r;
    }
    if (whole) return std::make_unique<HostCommunicator>(c_);
    if (alone) return make_single_communicator();
    throw UnsupportedError(detail::concat(
        "split: the ", c_.name, " communicator splits only into the whole group or single ranks; "
        "make a process group of the tp ranks in the framework (torch.distributed.new_group) and "
        "pass that"));
  }

 private:
  template <typename Call>
  void run(const char* what, Call&& call) {
    if (!failed_in_.empty()) {
      throw CommunicatorError(detail::concat(what, " on the ", c_.name, " communicator, whose ",
                                             failed_in_, " failed earlier: it can no longer be "
                                             "used (its ranks are out of step)"));
    }
    try {
      call();
    } catch (const std::exception& error) {
      failed_in_ = what;
      throw CommunicatorError(detail::concat("rank ", c_.rank, " of ", c_.size, ": ", what,
                                             " on the ", c_.name, " communicator failed: ",
                                             error.what()));
    }
  }

  HostCollectives c_;
  std::string failed_in_;
};

}  // namespace

std::unique_ptr<Communicator> make_host_communicator(HostCollectives collectives) {
  TPEMBED_EXPECTS(collectives.size >= 1 && collectives.rank >= 0 &&
                      collectives.rank < collectives.size,
                  InvalidArgumentError, "host communicator: rank ", collectives.rank,
                  " does not fit size ", collectives.size);
  TPEMBED_EXPECTS(collectives.all_reduce_sum && collectives.all_gather, InvalidArgumentError,
                  "host communicator '", collectives.name,
                  "': both all_reduce_sum and all_gather must be given");
  return std::make_unique<HostCommunicator>(std::move(collectives));
}

}  // namespace tpembed

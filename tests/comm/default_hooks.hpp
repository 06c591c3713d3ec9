// A communicator that overrides only the hooks an engine must have (all_reduce_sum, all_gather,
// barrier, split) by forwarding them to a real engine, so that the base class's default
// all_gather_v, reduce_scatter_sum and all_to_all_v run on top of it: what an engine without its
// own versions of those gets. The conformance suite runs on it as engine "<inner>_defaults".
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tpembed/communicator.hpp"

namespace tpembed::comm_test {

class DefaultHooks final : public Communicator {
 public:
  explicit DefaultHooks(std::unique_ptr<Communicator> inner) : inner_(std::move(inner)) {}

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  std::string engine() const override { return inner_->engine() + "_defaults"; }

 protected:
  void do_all_reduce_sum(const void* send, void* recv, std::int64_t count, DType dtype,
                         void* stream) override {
    inner_->all_reduce_sum(send, recv, count, dtype, stream);
  }
  void do_all_gather(const void* send, void* recv, std::int64_t bytes_per_rank,
                     void* stream) override {
    inner_->all_gather(send, recv, bytes_per_rank, DType::i8, stream);
  }
  void do_barrier() override { inner_->barrier(); }
  // The inner engine splits by group lists: every rank's color and key make them.
  std::unique_ptr<Communicator> do_split(int color, int key) override {
    const std::int32_t mine[2] = {color, key};
    std::vector<std::int32_t> all(2 * static_cast<std::size_t>(size()));
    inner_->all_gather(mine, all.data(), 2, DType::i32);
    std::vector<std::pair<std::int32_t, int>> members;  // (key, rank) of the ranks of this color
    for (int r = 0; r < size(); ++r) {
      if (all[2 * r] == color) members.emplace_back(all[2 * r + 1], r);
    }
    std::sort(members.begin(), members.end());
    std::vector<int> group;
    for (const auto& member : members) group.push_back(member.second);
    return std::make_unique<DefaultHooks>(inner_->split(group));
  }

 private:
  std::unique_ptr<Communicator> inner_;
};

}  // namespace tpembed::comm_test

// The single-rank engine: every collective is a copy.
#include <cstring>

#include "tpembed/communicator.hpp"

namespace tpembed {

namespace {

class SingleCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string engine() const override { return "single"; }

 protected:
  void do_all_reduce_sum(const void* send, void* recv, std::int64_t count, DType dtype, void*) override {
    if (send != recv) std::memmove(recv, send, static_cast<std::size_t>(count) * element_size(dtype));
  }
  void do_all_gather(const void* send, void* recv, std::int64_t bytes_per_rank, void*) override {
    if (send != recv) std::memmove(recv, send, static_cast<std::size_t>(bytes_per_rank));
  }
  void do_reduce_scatter_sum(const void* send, void* recv, const std::vector<std::int64_t>& counts,
                             const std::vector<std::int64_t>&, DType dtype, void*) override {
    if (send != recv)
      std::memmove(recv, send, static_cast<std::size_t>(counts[0]) * element_size(dtype));
  }
  // send and recv never overlap (the public call refuses it).
  void do_all_to_all_v(const void* send, const std::vector<std::int64_t>& send_bytes,
                       const std::vector<std::int64_t>&, void* recv,
                       const std::vector<std::int64_t>&, const std::vector<std::int64_t>&,
                       void*) override {
    if (send_bytes[0] > 0) std::memcpy(recv, send, static_cast<std::size_t>(send_bytes[0]));
  }
  void do_barrier() override {}
  std::unique_ptr<Communicator> do_split(int, int) override {
    return std::make_unique<SingleCommunicator>();
  }
};

}  // namespace

std::unique_ptr<Communicator> make_single_communicator() {
  return std::make_unique<SingleCommunicator>();
}

}  // namespace tpembed

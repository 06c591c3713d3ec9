// Stand-in for the NCCL engine in builds without NCCL (or without the CUDA backend).
#include "tpembed/communicator.hpp"

namespace tpembed {

namespace {
[[noreturn]] void no_nccl() {
  throw UnsupportedError("this build of tpembed has no NCCL communicator (it needs the CUDA backend and NCCL)");
}
}  // namespace

bool nccl_available() { return false; }
std::vector<std::uint8_t> make_nccl_unique_id() { no_nccl(); }
std::unique_ptr<Communicator> make_nccl_communicator(const std::vector<std::uint8_t>&, int, int, int,
                                                     const NcclOptions&) {
  no_nccl();
}
std::unique_ptr<Communicator> make_nccl_communicator(Communicator&, int, const NcclOptions&) { no_nccl(); }

}  // namespace tpembed

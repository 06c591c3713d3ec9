// The conformance suite over NCCL with one process per GPU, bootstrapped through MPI (the unique id
// broadcast over MPI, each rank on its node-local GPU): run under mpirun with 1, 2, 4 and 8 ranks,
// skipped where fewer GPUs than ranks are visible.
#include "conformance.hpp"

namespace {
std::unique_ptr<tpembed::Communicator> nccl_over_mpi() {
  static std::unique_ptr<tpembed::Communicator> mpi = tpembed::make_mpi_communicator();
  tpembed::NcclOptions options;
  options.timeout_seconds = 120;  // a broken collective fails the test instead of hanging it
  return tpembed::make_nccl_communicator(*mpi, -1, options);
}
}  // namespace

TPEMBED_COMM_CONFORMANCE(NcclOverMpi, "nccl", nccl_over_mpi);

// Stand-in for the MPI engine in builds without MPI.
#include "tpembed/communicator.hpp"

namespace tpembed {

bool mpi_available() {
  return false;
}

std::unique_ptr<Communicator> make_mpi_communicator() {
  throw UnsupportedError(
      "this build of tpembed has no MPI communicator (install libopenmpi-dev and rebuild)");
}

std::unique_ptr<Communicator> make_mpi_communicator(const MpiOptions&) {
  return make_mpi_communicator();
}

std::unique_ptr<Communicator> make_mpi_communicator(const void*) {
  return make_mpi_communicator();
}

std::unique_ptr<Communicator> make_mpi_communicator(const void*, const MpiOptions&) {
  return make_mpi_communicator();
}

}  // namespace tpembed

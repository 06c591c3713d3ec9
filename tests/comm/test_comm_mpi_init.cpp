// make_mpi_communicator() in a program that never touched MPI: it must start MPI itself and end it
// at exit. Uses the plain gtest main, so nothing else initialises MPI.
#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "tpembed/communicator.hpp"

namespace tpembed {
namespace {

// Registered before make_mpi_communicator() registers MPI_Finalize, so it runs after it.
void require_finalized_at_exit() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) {
    std::fprintf(stderr, "MPI was initialised by tpembed but not finalised at exit\n");
    _exit(3);
  }
}

TEST(MpiCommunicatorInit, StartsMpiAndEndsItAtExit) {
  int initialized = 1;
  MPI_Initialized(&initialized);
  ASSERT_EQ(initialized, 0) << "nothing should have started MPI yet";
  ASSERT_EQ(std::atexit(require_finalized_at_exit), 0);

  auto comm = make_mpi_communicator();
  MPI_Initialized(&initialized);
  EXPECT_EQ(initialized, 1);
  int thread_level = -1;
  MPI_Query_thread(&thread_level);
  EXPECT_GE(thread_level, MPI_THREAD_FUNNELED);
  std::int64_t one = 1;
  comm->all_reduce_sum(&one, &one, 1, DType::i64);
  EXPECT_EQ(one, comm->size());

  // A second communicator while MPI runs does not initialise again, and both stay usable.
  auto second = make_mpi_communicator();
  EXPECT_EQ(second->size(), comm->size());
  second->barrier();
}

}  // namespace
}  // namespace tpembed

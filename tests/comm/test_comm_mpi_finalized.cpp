// A communicator over a caller's MPI (as mpi4py's) used after its owner has finalised MPI — a
// layer destroyed at interpreter exit, say: collectives raise CommunicatorError instead of aborting
// the process. Its own main(): MPI is started here, and finalised by the test itself.
#include <gtest/gtest.h>
#include <mpi.h>

#include <string>
#include <vector>

#include "expect_error.hpp"
#include "tpembed/communicator.hpp"

namespace tpembed {
namespace {

TEST(MpiCommunicatorFinalized, CollectivesAfterFinalizeRaise) {
  MPI_Comm world = MPI_COMM_WORLD;
  auto comm = make_mpi_communicator(&world);
  comm->barrier();  // fine while MPI runs
  MPI_Finalize();
  testing::expect_error<CommunicatorError>([&] { comm->barrier(); }, "barrier on an MPI communicator after MPI_Finalize");
  std::int64_t one = 1, sum = 0;
  testing::expect_error<CommunicatorError>([&] { comm->all_reduce_sum(&one, &sum, 1, DType::i64); },
                                           "all_reduce_sum on an MPI communicator after MPI_Finalize");
  testing::expect_error<CommunicatorError>([&] { comm->all_gather(&one, &sum, 1, DType::i64); },
                                           "all_gather on an MPI communicator after MPI_Finalize");
  const std::vector<std::int64_t> counts(static_cast<std::size_t>(comm->size()), 8);
  std::vector<std::int64_t> gathered(counts.size());
  testing::expect_error<CommunicatorError>([&] { comm->all_gather_v(&one, gathered.data(), counts); },
                                           "all_gather_v on an MPI communicator after MPI_Finalize");
  // A split starts with an all-gather of the groups: refused the same way.
  testing::expect_error<CommunicatorError>([&] { comm->split({comm->rank()}); }, "after MPI_Finalize");
}

}  // namespace
}  // namespace tpembed

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0) {  // rank 0 reports; the others run the same test quietly
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  return RUN_ALL_TESTS();  // the test has finalised MPI
}

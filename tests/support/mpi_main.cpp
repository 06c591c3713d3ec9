// main() for GoogleTest binaries run under mpirun: every rank runs every test; rank 0 prints the
// usual report, other ranks print only their failures, and every rank exits non-zero when any
// rank failed.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>
#include <cstdlib>

#include "tpembed/cuda.hpp"

#ifndef TPEMBED_TEST_ON_GPU
#define TPEMBED_TEST_ON_GPU 0
#endif
// Tests of one GPU per rank (NCCL): skipped where fewer GPUs than ranks are visible.
#ifndef TPEMBED_TEST_GPU_PER_RANK
#define TPEMBED_TEST_GPU_PER_RANK 0
#endif

namespace {

class FailurePrinter : public testing::EmptyTestEventListener {
 public:
  explicit FailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: Failure\n%s\n", rank_,
                 result.file_name() ? result.file_name() : "?", result.line_number(),
                 result.summary());
  }

 private:
  int rank_;
};

}  // namespace

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  testing::InitGoogleTest(&argc, argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  const int devices = tpembed::cuda_device_count();
  if ((TPEMBED_TEST_ON_GPU || TPEMBED_TEST_GPU_PER_RANK) && devices == 0) {
    if (rank == 0) std::printf("SKIPPED: no CUDA device visible; these GPU tests did not run.\n");
    MPI_Finalize();
    return 77;  // CTest's SKIP_RETURN_CODE for GPU tests
  }
  // Ranks on this node (Open MPI says; else all of them) against this node's GPUs. Every node
  // must agree, or some ranks would run while others skip.
  const char* local_size = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
  const int ranks_here = local_size != nullptr ? std::atoi(local_size) : size;
  int enough = !TPEMBED_TEST_GPU_PER_RANK || devices >= ranks_here ? 1 : 0, everywhere = 0;
  MPI_Allreduce(&enough, &everywhere, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (!everywhere) {
    if (rank == 0) {
      std::printf("SKIPPED: %d ranks on a node need one GPU each and %d %s visible; these tests did not run.\n",
                  ranks_here, devices, devices == 1 ? "is" : "are");
    }
    MPI_Finalize();
    return 77;
  }
  if (rank != 0) {
    auto& listeners = testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new FailurePrinter(rank));
  }
  int failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  int any_failed = 0;
  MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return any_failed;
}

// The communicator conformance suite on the MPI engine (run under mpirun with 1..4 ranks; main()
// from tests/support/mpi_main.cpp initialises MPI), plus checks that only MPI can make.
#include <mpi.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "conformance.hpp"
#include "tpembed/cuda.hpp"

TPEMBED_COMM_CONFORMANCE(Mpi, "mpi", tpembed::make_mpi_communicator);

namespace tpembed {
namespace {

TEST(MpiCommunicator, MatchesTheWorld) {
  EXPECT_TRUE(mpi_available());
  auto comm = make_mpi_communicator();
  int world_rank = -1, world_size = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  EXPECT_EQ(comm->rank(), world_rank);
  EXPECT_EQ(comm->size(), world_size);
}

// The communicator runs on its own duplicate of MPI_COMM_WORLD: a message the application left
// pending on the world must neither be consumed by our collectives nor disturb them.
TEST(MpiCommunicator, TrafficStaysOffTheWorldCommunicator) {
  auto comm = make_mpi_communicator();
  const int rank = comm->rank(), size = comm->size();
  const int to = (rank + 1) % size, from = (rank + size - 1) % size;
  int outgoing = 1000 + rank, incoming = -1;
  MPI_Request send_request;
  MPI_Isend(&outgoing, 1, MPI_INT, to, 0, MPI_COMM_WORLD, &send_request);

  std::vector<std::int64_t> values(733, rank + 1);
  comm->all_reduce_sum(values.data(), values.data(), 733, DType::i64);
  std::vector<std::int32_t> ranks(size, -1);
  std::int32_t mine = rank;
  comm->all_gather(&mine, ranks.data(), 1, DType::i32);

  MPI_Recv(&incoming, 1, MPI_INT, from, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  MPI_Wait(&send_request, MPI_STATUS_IGNORE);
  EXPECT_EQ(incoming, 1000 + from);
  EXPECT_EQ(values, std::vector<std::int64_t>(733, std::int64_t{size} * (size + 1) / 2));
  for (int r = 0; r < size; ++r) EXPECT_EQ(ranks[r], r);
}

TEST(MpiCommunicator, WrapsAnExistingCommunicator) {
  MPI_Comm halves = MPI_COMM_NULL;
  int world_rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  MPI_Comm_split(MPI_COMM_WORLD, world_rank % 2, world_rank, &halves);
  int half_size = 0;
  MPI_Comm_size(halves, &half_size);
  {
    auto comm = make_mpi_communicator(&halves);
    EXPECT_EQ(comm->size(), half_size);
    std::int64_t one = 1, total = 0;
    comm->all_reduce_sum(&one, &total, 1, DType::i64);
    EXPECT_EQ(total, half_size);
  }
  MPI_Comm_free(&halves);
  try {
    make_mpi_communicator(static_cast<const void*>(nullptr));
    ADD_FAILURE() << "a null MPI_Comm address was accepted";
  } catch (const InvalidArgumentError& error) {
    EXPECT_NE(std::string(error.what()).find("null address of an MPI_Comm"), std::string::npos)
        << error.what();
  }
}

// make_nccl_communicator(bootstrap): a bad argument on one rank reaches every rank as the same
// error, before any rank starts the NCCL set-up (where the others would wait for it until the
// timeout). Needs no GPU: the arguments are checked first.
TEST(MpiCommunicator, NcclBootstrapRefusesABadArgumentOnEveryRank) {
  if (!nccl_available()) GTEST_SKIP() << "SKIPPED: this build has no NCCL";
  auto world = make_mpi_communicator();
  const int last = world->size() - 1;
  NcclOptions bad_timeout;
  if (world->rank() == last) bad_timeout.timeout_seconds = 0;
  try {
    make_nccl_communicator(*world, 0, bad_timeout);
    ADD_FAILURE() << "a zero timeout was accepted";
  } catch (const InvalidArgumentError& error) {
    EXPECT_NE(std::string(error.what()).find("timeout must be positive"), std::string::npos)
        << error.what();
    EXPECT_NE(std::string(error.what()).find(std::to_string(last)), std::string::npos)
        << error.what();
  }
  const int missing = cuda_device_count() + 3;
  try {
    make_nccl_communicator(*world, world->rank() == last ? missing : 0);
    ADD_FAILURE() << "CUDA device " << missing << " was accepted";
  } catch (const Error& error) {
    // Where no GPU is visible, every rank is refused for that (UnsupportedError) or, on the rank
    // given the missing device, for it: every rank throws the lowest failing rank's error.
    const std::string text = error.what();
    EXPECT_TRUE(text.find("is not visible") != std::string::npos ||
                text.find("no CUDA device") != std::string::npos)
        << text;
  }
}

// A collective that a peer never joins times out with a CommunicatorError naming it, and the
// communicator then refuses every later collective instead of pairing them up out of step.
TEST(MpiCommunicator, ACollectiveAPeerSkipsTimesOut) {
  auto world = make_mpi_communicator();
  if (world->size() < 2) GTEST_SKIP() << "needs two ranks";
  MpiOptions quick;
  quick.timeout_seconds = 0.5;
  auto comm = make_mpi_communicator(quick);
  if (comm->rank() == 0) {
    std::int64_t mine = 1;
    std::vector<std::int64_t> all(comm->size());
    try {
      comm->all_gather(&mine, all.data(), 1, DType::i64);
      ADD_FAILURE() << "an all_gather that rank 1 skipped completed";
    } catch (const CommunicatorError& error) {
      EXPECT_NE(std::string(error.what())
                    .find("all_gather on the MPI communicator did not complete within 0.5 s"),
                std::string::npos)
          << error.what();
    }
    try {
      comm->barrier();
      ADD_FAILURE() << "a timed-out communicator ran a barrier";
    } catch (const CommunicatorError& error) {
      EXPECT_NE(std::string(error.what())
                    .find("barrier on an MPI communicator that timed out in all_gather"),
                std::string::npos)
          << error.what();
    }
  }
  world->barrier();  // the other ranks skipped the all_gather; everyone is in step on `world`
}

TEST(MpiCommunicator, TheTimeoutComesFromTheOptionsOrTheEnvironment) {
  MpiOptions bad;
  bad.timeout_seconds = -1;
  try {
    make_mpi_communicator(bad);
    ADD_FAILURE() << "a negative timeout was accepted";
  } catch (const InvalidArgumentError& error) {
    EXPECT_NE(std::string(error.what())
                  .find("MpiOptions::timeout_seconds must be a positive number of seconds"),
              std::string::npos)
        << error.what();
  }
  setenv("TPEMBED_COMM_TIMEOUT_SECONDS", "soon", 1);
  try {
    make_mpi_communicator();
    ADD_FAILURE() << "TPEMBED_COMM_TIMEOUT_SECONDS=soon was accepted";
  } catch (const InvalidArgumentError& error) {
    EXPECT_NE(std::string(error.what())
                  .find("TPEMBED_COMM_TIMEOUT_SECONDS='soon' must be a positive number"),
              std::string::npos)
        << error.what();
  }
  setenv("TPEMBED_COMM_TIMEOUT_SECONDS", "30", 1);
  EXPECT_NO_THROW(make_mpi_communicator());
  unsetenv("TPEMBED_COMM_TIMEOUT_SECONDS");
}

}  // namespace
}  // namespace tpembed

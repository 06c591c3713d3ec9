// The communicator conformance suite on the MPI engine (run under mpirun with 1..4 ranks; main()
// from tests/support/mpi_main.cpp initialises MPI), plus checks that only MPI can make.
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "conformance.hpp"
#include "default_hooks.hpp"
#include "tpembed/cuda.hpp"

namespace {
// The base class's default collectives over the MPI engine.
std::unique_ptr<tpembed::Communicator> mpi_with_defaults() {
  return std::make_unique<tpembed::comm_test::DefaultHooks>(tpembed::make_mpi_communicator());
}
}  // namespace

TPEMBED_COMM_CONFORMANCE(Mpi, "mpi", tpembed::make_mpi_communicator);
TPEMBED_COMM_CONFORMANCE(MpiDefaults, "mpi_defaults", mpi_with_defaults);

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

// Counts that do not match across ranks (rank 0 sends rank 1 five bytes where rank 1 expects
// three; rank 1 sends rank 0 two where rank 0 expects six): each receiving rank names the sender
// and both lengths, writes nothing past its blocks, and the communicator stays in step.
TEST(MpiCommunicator, AllToAllVReceiverNamesABlockOfAnotherLength) {
  auto comm = make_mpi_communicator();
  if (comm->size() < 2) GTEST_SKIP() << "needs two ranks";
  const int rank = comm->rank();
  std::vector<std::int64_t> send_bytes(comm->size(), 0), recv_bytes(comm->size(), 0);
  if (rank == 0) {
    send_bytes[1] = 5;
    recv_bytes[1] = 6;
  }
  if (rank == 1) {
    send_bytes[0] = 2;
    recv_bytes[0] = 3;
  }
  std::vector<std::uint8_t> send(8, 0x11), recv(16, 0x5a);
  std::string message;
  try {
    comm->all_to_all_v(send.data(), send_bytes, recv.data(), recv_bytes);
  } catch (const CommunicatorError& error) {
    message = error.what();
  }
  if (rank == 0) {
    EXPECT_NE(
        message.find("rank 0 of " + std::to_string(comm->size()) +
                     ": all_to_all_v: rank 1 sent this rank 2 bytes, not the 6 it expects from it"),
        std::string::npos)
        << message;
  } else if (rank == 1) {
    EXPECT_NE(
        message.find("all_to_all_v: rank 0 sent this rank 5 bytes, not the 3 it expects from it "
                     "(recv_bytes[0] here must equal send_bytes[1] on rank 0)"),
        std::string::npos)
        << message;
  } else {
    EXPECT_EQ(message, "");
  }
  const std::int64_t expected = rank == 0 ? 6 : rank == 1 ? 3 : 0;
  for (std::int64_t i = expected; i < 16; ++i)
    EXPECT_EQ(recv[i], 0x5a) << "byte " << i << " past the block";
  std::int64_t one = 1;
  comm->all_reduce_sum(&one, &one, 1, DType::i64);
  EXPECT_EQ(one, comm->size()) << "the communicator fell out of step";
}

// The reduce-scatter travels as blocks to their owners: counts that differ across ranks (rank 1
// thinks its block is 4 elements, the others 3) reach a receiver as a block of another length,
// which says so instead of summing past the block, and the communicator stays in step.
TEST(MpiCommunicator, ReduceScatterWithCountsThatDifferAcrossRanksSaysSo) {
  auto comm = make_mpi_communicator();
  if (comm->size() < 2) GTEST_SKIP() << "needs two ranks";
  const int rank = comm->rank();
  std::vector<std::int64_t> counts(comm->size(), 3);
  if (rank == 1) counts[1] = 4;
  std::vector<float> send(4 * comm->size(), 1.0f), recv(8, -7.0f);
  std::string message;
  try {
    comm->reduce_scatter_sum(send.data(), recv.data(), counts, DType::f32);
  } catch (const CommunicatorError& error) {
    message = error.what();
  }
  if (rank == 1) {  // (which sender it names first depends on arrival)
    EXPECT_NE(message.find("rank 1 of " + std::to_string(comm->size()) + ": reduce_scatter_sum: rank "),
              std::string::npos)
        << message;
    EXPECT_NE(message.find(" sent this rank 12 bytes, not the 16 it expects from it (every rank must "
                           "pass the same counts)"),
              std::string::npos)
        << message;
  } else {
    EXPECT_EQ(message, "");
  }
  // The refusing rank writes nothing; the others their 3 elements only.
  for (std::size_t i = rank == 1 ? 0 : 3; i < recv.size(); ++i)
    EXPECT_EQ(recv[i], -7.0f) << "element " << i << " was written";
  std::int64_t one = 1;
  comm->all_reduce_sum(&one, &one, 1, DType::i64);
  EXPECT_EQ(one, comm->size()) << "the communicator fell out of step";
}

// The base class's default exchange sees every rank's counts: the same error on every rank.
TEST(DefaultHooks, AllToAllVMismatchThrowsTheSameErrorOnEveryRank) {
  comm_test::DefaultHooks comm(make_mpi_communicator());
  if (comm.size() < 2) GTEST_SKIP() << "needs two ranks";
  std::vector<std::int64_t> send_bytes(comm.size(), 0), recv_bytes(comm.size(), 0);
  if (comm.rank() == 0) send_bytes[1] = 5;
  if (comm.rank() == 1) recv_bytes[0] = 3;
  std::vector<std::uint8_t> send(8, 0x11), recv(8, 0x5a);
  try {
    comm.all_to_all_v(send.data(), send_bytes, recv.data(), recv_bytes);
    ADD_FAILURE() << "mismatched counts were accepted";
  } catch (const CommunicatorError& error) {
    EXPECT_NE(std::string(error.what())
                  .find("all_to_all_v: rank 0 sends 5 bytes to rank 1, which expects 3 from it "
                        "(send_bytes[1] "
                        "on rank 0 must equal recv_bytes[0] on rank 1)"),
              std::string::npos)
        << error.what();
  }
  EXPECT_EQ(recv, std::vector<std::uint8_t>(8, 0x5a)) << "data moved before the check";
  std::int64_t one = 1;
  comm.all_reduce_sum(&one, &one, 1, DType::i64);
  EXPECT_EQ(one, comm.size());
}

// Bytes this machine can still give, from /proc/meminfo (0 when unknown).
std::int64_t available_memory_bytes() {
  std::FILE* file = std::fopen("/proc/meminfo", "r");
  if (file == nullptr) return 0;
  char line[256];
  long long kib = 0;
  while (std::fgets(line, sizeof line, file) != nullptr) {
    if (std::sscanf(line, "MemAvailable: %lld kB", &kib) == 1) break;
  }
  std::fclose(file);
  return static_cast<std::int64_t>(kib) * 1024;
}

// A block past MPI's int counts (2 GiB + 5 bytes, rank 0 to rank 1) travels whole, and rank 1's
// own block lands after it, at a displacement past 2 GiB.
TEST(MpiCommunicator, AllToAllVMovesABlockOverTwoGigabytes) {
  auto comm = make_mpi_communicator();
  const std::int64_t big = (std::int64_t{1} << 31) + 5;
  std::int64_t enough = available_memory_bytes() > 3 * big ? 1 : 0;  // every rank skips alike
  comm->all_reduce_sum(&enough, &enough, 1, DType::i64);
  if (comm->size() != 2) GTEST_SKIP() << "runs with two ranks";
  if (enough != 2) GTEST_SKIP() << "SKIPPED: needs 6.5 GB of free memory";
  const int rank = comm->rank();
  std::vector<std::int64_t> send_bytes(2, 0), recv_bytes(2, 0);
  std::vector<std::uint8_t> send, recv;
  if (rank == 0) {
    send_bytes[1] = big;
    send.resize(static_cast<std::size_t>(big));
    for (std::int64_t i = 0; i < big; i += 4093)
      send[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(i / 4093);
    send.back() = 0xcd;
  } else {
    recv_bytes[0] = big;
    send_bytes[1] = recv_bytes[1] = 8;
    send.assign(8, 0x77);
    recv.assign(static_cast<std::size_t>(big + 8), 0);
  }
  comm->all_to_all_v(send.data(), send_bytes, rank == 1 ? recv.data() : nullptr, recv_bytes);
  if (rank == 1) {
    for (std::int64_t i = 0; i < big; i += 4093) {
      ASSERT_EQ(recv[static_cast<std::size_t>(i)], static_cast<std::uint8_t>(i / 4093))
          << "byte " << i;
    }
    EXPECT_EQ(recv[static_cast<std::size_t>(big - 1)], 0xcd);
    for (std::int64_t i = big; i < big + 8; ++i)
      EXPECT_EQ(recv[static_cast<std::size_t>(i)], 0x77) << "own byte " << i;
  }
}

// Rank 0 alone makes `call` (`what`) on a communicator with a 0.5 s timeout: it times out naming
// the call, and the communicator then refuses the call too.
void expect_a_call_the_peers_skip_to_time_out(const std::string& what,
                                              const std::function<void(Communicator&)>& call) {
  auto world = make_mpi_communicator();
  MpiOptions quick;
  quick.timeout_seconds = 0.5;
  auto comm = make_mpi_communicator(quick);
  if (comm->rank() == 0) {
    for (const std::string& expected :
         {what + " on the MPI communicator did not complete within 0.5 s",
          what + " on an MPI communicator that timed out in " + what}) {
      try {
        call(*comm);
        ADD_FAILURE() << what << " completed; expected \"" << expected << "\"";
      } catch (const CommunicatorError& error) {
        EXPECT_NE(std::string(error.what()).find(expected), std::string::npos) << error.what();
      }
    }
  }
  world->barrier();
}

// The small exchanges of the scattered layouts wait against the timeout too.
TEST(MpiCommunicator, TheScatteredLayoutsCollectivesTimeOutWhenThePeersSkipThem) {
  if (make_mpi_communicator()->size() < 2) GTEST_SKIP() << "needs two ranks";
  expect_a_call_the_peers_skip_to_time_out("all_to_all_v", [](Communicator& comm) {
    const std::vector<std::int64_t> counts(comm.size(), 1);
    std::vector<std::uint8_t> send(comm.size(), 1), recv(comm.size(), 0);
    comm.all_to_all_v(send.data(), counts, recv.data(), counts);
  });
  expect_a_call_the_peers_skip_to_time_out("reduce_scatter_sum", [](Communicator& comm) {
    const std::vector<std::int64_t> counts(comm.size(), 3);
    std::vector<float> send(3 * comm.size(), 1.0f), recv(3);
    comm.reduce_scatter_sum(send.data(), recv.data(), counts, DType::f32);
  });
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

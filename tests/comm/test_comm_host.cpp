// The conformance suite on the host engine (make_host_communicator), whose collectives here are
// MPI's on MPI_COMM_WORLD, run by callables as tpembed.torch runs torch.distributed's (under
// mpirun with 1..3 ranks; main() from tests/support/mpi_main.cpp initialises MPI). Plus what is
// the host engine's own: a failing collective's reason, refusal after it, and its splits.
#include <mpi.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "conformance.hpp"
#include "expect_error.hpp"
#include "tpembed/numeric.hpp"

namespace tpembed {
namespace {

// f16 and bf16 go as f32 (summed there, rounded once), as tpembed.torch does over gloo.
void mpi_all_reduce_sum(const void* send, void* recv, std::int64_t count, DType dtype) {
  const int n = static_cast<int>(count);
  if (dtype == DType::f16 || dtype == DType::bf16) {
    std::vector<float> wide(static_cast<std::size_t>(count));
    const auto* in = static_cast<const std::uint16_t*>(send);
    for (int i = 0; i < n; ++i) {
      wide[i] = dtype == DType::f16 ? f16_bits_to_f32(in[i]) : bf16_bits_to_f32(in[i]);
    }
    MPI_Allreduce(MPI_IN_PLACE, wide.data(), n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    auto* out = static_cast<std::uint16_t*>(recv);
    for (int i = 0; i < n; ++i) {
      out[i] = dtype == DType::f16 ? f32_to_f16_bits(wide[i]) : f32_to_bf16_bits(wide[i]);
    }
    return;
  }
  const MPI_Datatype type = dtype == DType::f32   ? MPI_FLOAT
                            : dtype == DType::i32 ? MPI_INT32_T
                                                  : MPI_INT64_T;
  MPI_Allreduce(send == recv ? MPI_IN_PLACE : send, recv, n, type, MPI_SUM, MPI_COMM_WORLD);
}

void mpi_all_gather(const void* send, void* recv, std::int64_t bytes) {
  MPI_Allgather(send, static_cast<int>(bytes), MPI_BYTE, recv, static_cast<int>(bytes), MPI_BYTE,
                MPI_COMM_WORLD);
}

HostCollectives world_collectives() {
  HostCollectives c;
  MPI_Comm_rank(MPI_COMM_WORLD, &c.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &c.size);
  c.name = "host";
  c.all_reduce_sum = mpi_all_reduce_sum;
  c.all_gather = mpi_all_gather;
  return c;
}

std::unique_ptr<Communicator> make_world_host_communicator() {
  return make_host_communicator(world_collectives());
}

}  // namespace
}  // namespace tpembed

TPEMBED_COMM_CONFORMANCE(Host, "host", tpembed::make_world_host_communicator);

namespace tpembed {
namespace {

using testing::expect_error;

// A collective that throws (as a torch.distributed timeout does) fails with its reason on the rank
// it threw on, and the communicator refuses every later call. Every rank's callable throws here,
// so no rank is left inside a collective.
TEST(HostCommunicator, AFailedCollectiveGivesItsReasonAndEndsTheCommunicator) {
  HostCollectives c = world_collectives();
  c.name = "torch:gloo";
  c.all_gather = [](const void*, void*, std::int64_t) {
    throw std::runtime_error("Timed out waiting 5000ms for recv operation to complete");
  };
  auto comm = make_host_communicator(c);
  std::int32_t mine = 1;
  std::vector<std::int32_t> all(static_cast<std::size_t>(comm->size()));
  expect_error<CommunicatorError>(
      [&] { comm->all_gather(&mine, all.data(), 1, DType::i32); },
      "all_gather on the torch:gloo communicator failed: Timed out waiting 5000ms");
  expect_error<CommunicatorError>(
      [&] { comm->all_reduce_sum(&mine, &mine, 1, DType::i32); },
      "all_reduce_sum on the torch:gloo communicator, whose all_gather failed earlier");
}

TEST(HostCommunicator, SplitsIntoTheWholeGroupOrSingleRanks) {
  auto comm = make_world_host_communicator();
  const int size = comm->size();
  std::vector<int> everyone;
  for (int r = 0; r < size; ++r) everyone.push_back(r);
  auto whole = comm->split(everyone);
  EXPECT_EQ(whole->engine(), "host");
  EXPECT_EQ(whole->size(), size);
  std::int64_t one = 1, total = 0;
  whole->all_reduce_sum(&one, &total, 1, DType::i64);
  EXPECT_EQ(total, size);
  auto alone = comm->split({comm->rank()});
  EXPECT_EQ(alone->size(), 1);
  EXPECT_EQ(alone->engine(), size == 1 ? "host" : "single");  // one rank: the whole group
}

// Any other split would need a new group of the framework's: every rank refuses it alike.
TEST(HostCommunicator, AnyOtherSplitIsRefusedOnEveryRank) {
  auto comm = make_world_host_communicator();
  if (comm->size() < 3) GTEST_SKIP() << "needs three ranks";
  const int rank = comm->rank();
  const std::vector<int> group = rank < 2 ? std::vector<int>{0, 1} : std::vector<int>{rank};
  expect_error<UnsupportedError>([&] { comm->split(group); },
                                 "splits only into the whole group or single ranks");
  // The reversed whole group is no plain copy either.
  std::vector<int> reversed;
  for (int r = comm->size() - 1; r >= 0; --r) reversed.push_back(r);
  expect_error<UnsupportedError>([&] { comm->split(reversed); }, "torch.distributed.new_group");
}

TEST(HostCommunicator, MissingCallablesAndBadRanksAreRefused) {
  HostCollectives c = world_collectives();
  c.all_reduce_sum = nullptr;
  expect_error<InvalidArgumentError>([&] { make_host_communicator(c); },
                                     "both all_reduce_sum and all_gather must be given");
  c = world_collectives();
  c.rank = c.size;
  expect_error<InvalidArgumentError>([&] { make_host_communicator(c); }, "does not fit size");
}

}  // namespace
}  // namespace tpembed

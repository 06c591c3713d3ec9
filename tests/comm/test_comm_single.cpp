// The communicator conformance suite on the single-rank engine.
#include "conformance.hpp"
#include "default_hooks.hpp"
#include "expect_error.hpp"
#include "tpembed/cuda.hpp"

namespace {
// The base class's default collectives over the single engine.
std::unique_ptr<tpembed::Communicator> single_with_defaults() {
  return std::make_unique<tpembed::comm_test::DefaultHooks>(tpembed::make_single_communicator());
}
}  // namespace

TPEMBED_COMM_CONFORMANCE(Single, "single", tpembed::make_single_communicator);
TPEMBED_COMM_CONFORMANCE(SingleDefaults, "single_defaults", single_with_defaults);

namespace tpembed {
namespace {

TEST(SingleCommunicator, SplitOnlyAcceptsItself) {
  auto comm = make_single_communicator();
  EXPECT_EQ(comm->split({0})->engine(), "single");
  EXPECT_THROW(comm->split({1}), CommunicatorError);
}

// One device per process: rank 0 (no mpirun: no Open MPI local rank) takes device 0; without a
// device the choice is refused with a clear error.
TEST(SingleCommunicator, NodeLocalCudaDevice) {
  auto comm = make_single_communicator();
  if (cuda_device_count() == 0) {
    testing::expect_error<UnsupportedError>([&] { node_local_cuda_device(*comm); },
                                            "rank 0: no CUDA device visible");
  } else {
    EXPECT_EQ(node_local_cuda_device(*comm), 0);
  }
}

}  // namespace
}  // namespace tpembed

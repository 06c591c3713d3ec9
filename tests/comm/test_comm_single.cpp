// The communicator conformance suite on the single-rank engine.
#include "conformance.hpp"

TPEMBED_COMM_CONFORMANCE(Single, "single", tpembed::make_single_communicator);

namespace tpembed {
namespace {

TEST(SingleCommunicator, SplitOnlyAcceptsItself) {
  auto comm = make_single_communicator();
  EXPECT_EQ(comm->split({0})->engine(), "single");
  EXPECT_THROW(comm->split({1}), CommunicatorError);
}

}  // namespace
}  // namespace tpembed

// Host tensors (tpembed::Tensor): sizes, and clear errors for shapes that cannot be allocated.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "tpembed/error.hpp"
#include "tpembed/tensor.hpp"

#if defined(__SANITIZE_ADDRESS__)
#define TPEMBED_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TPEMBED_TEST_ASAN 1
#endif
#endif

namespace tpembed {
namespace {

TEST(Tensor, AllocatesTheBytesOfItsShape) {
  const Tensor rows(DType::i4, {3, 5});  // int4 rows round up to whole bytes: 3 bytes each
  EXPECT_EQ(rows.view().nbytes(), 9);
  EXPECT_NE(rows.view().data, nullptr);
  const Tensor empty(DType::f32, {0, 7});
  EXPECT_EQ(empty.view().nbytes(), 0);
  const Tensor scalar(DType::bf16, {});
  EXPECT_EQ(scalar.view().nbytes(), 2);
}

TEST(Tensor, NegativeExtentIsAnInvalidArgument) {
  try {
    Tensor(DType::f32, {4, -1});
    FAIL() << "expected InvalidArgumentError";
  } catch (const InvalidArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("extent -1 is negative"), std::string::npos) << e.what();
  }
}

TEST(Tensor, ShapesWhoseSizeOverflowsAreRefused) {
  // 2^40 x 2^40 f32: 2^82 bytes, past int64: said, not wrapped into a small allocation.
  try {
    Tensor(DType::f32, {std::int64_t{1} << 40, std::int64_t{1} << 40});
    FAIL() << "expected InvalidArgumentError";
  } catch (const InvalidArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("is too large"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("f32[1099511627776, 1099511627776]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(Tensor(DType::i8, {std::int64_t{1} << 62, 2}), InvalidArgumentError);
  EXPECT_THROW(Tensor(DType::f32, {std::int64_t{1} << 62}), InvalidArgumentError);
}

TEST(Tensor, AnAllocationThatFailsIsABackendErrorThatSaysOutOfMemory) {
#if defined(TPEMBED_TEST_ASAN)
  GTEST_SKIP() << "AddressSanitizer aborts on a 2^61-byte request instead of returning null";
#else
  // 2^61 bytes: within the size limit, beyond any host's memory.
  try {
    Tensor(DType::i8, {std::int64_t{1} << 31, std::int64_t{1} << 30});
    FAIL() << "expected BackendError";
  } catch (const BackendError& e) {
    EXPECT_NE(std::string(e.what()).find("out of memory: cannot allocate 2305843009213693952 bytes"), std::string::npos)
        << e.what();
  }
#endif
}

}  // namespace
}  // namespace tpembed

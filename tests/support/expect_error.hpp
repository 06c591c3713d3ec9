// One helper for the tests of error paths: the call must throw the named error type (or a subclass)
// with a message that contains a given fragment.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <exception>
#include <functional>
#include <string>

#include "tpembed/error.hpp"

namespace tpembed::testing {

/// Expects `call` to throw an `E` whose message contains `needle`; any other outcome fails the test
/// with what happened instead.
template <typename E>
void expect_error(const std::function<void()>& call, const std::string& needle) {
  try {
    call();
    ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
  } catch (const E& error) {
    EXPECT_NE(std::string(error.what()).find(needle), std::string::npos)
        << "message '" << error.what() << "' does not mention '" << needle << "'";
  } catch (const std::exception& error) {
    ADD_FAILURE() << "wrong exception type; message: " << error.what();
  }
}

/// Expects `call` to throw OutOfRangeError for `count` bad ids, the first `first_bad_id` at flat
/// `position`, with a message that contains `needle`.
inline void expect_out_of_range(const std::function<void()>& call, std::int64_t first_bad_id, std::int64_t position,
                                std::int64_t count, const std::string& needle) {
  try {
    call();
    ADD_FAILURE() << "no error; expected an OutOfRangeError mentioning '" << needle << "'";
  } catch (const OutOfRangeError& error) {
    EXPECT_EQ(error.first_bad_id(), first_bad_id);
    EXPECT_EQ(error.position(), position);
    EXPECT_EQ(error.count(), count);
    EXPECT_NE(std::string(error.what()).find(needle), std::string::npos)
        << "message '" << error.what() << "' does not mention '" << needle << "'";
  } catch (const std::exception& error) {
    ADD_FAILURE() << "wrong exception type; message: " << error.what();
  }
}

}  // namespace tpembed::testing

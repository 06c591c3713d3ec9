// One helper for the tests of error paths: the call must throw the named error type (or a subclass)
// with a message that contains a given fragment.
#pragma once

#include <gtest/gtest.h>

#include <exception>
#include <functional>
#include <string>

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

}  // namespace tpembed::testing

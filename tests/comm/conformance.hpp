// One conformance suite for every Communicator engine. The tests (conformance.cpp) only use the
// Communicator interface; each engine's test binary instantiates them with its own factory:
//
//   TPEMBED_COMM_CONFORMANCE(Single, "single", tpembed::make_single_communicator);
//
// Under mpirun every rank runs every test, so tests call collectives unconditionally (checks that
// fail must not make one rank skip a collective the others enter).
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <ostream>
#include <string>

#include "tpembed/communicator.hpp"

namespace tpembed::comm_test {

/// An engine under test: its name (also the expected Communicator::engine()) and a factory.
struct CommEngine {
  std::string name;
  std::function<std::unique_ptr<Communicator>()> make;
};

/// Prints the engine's name in test reports.
inline void PrintTo(const CommEngine& engine, std::ostream* out) {
  *out << engine.name;
}

/// Fixture: `comm` is a fresh communicator from the engine's factory for each test.
class CommConformance : public ::testing::TestWithParam<CommEngine> {
 protected:
  void SetUp() override;
  std::unique_ptr<Communicator> comm;
};

/// Test-name suffix: the engine's name.
std::string engine_test_name(const ::testing::TestParamInfo<CommEngine>& info);

}  // namespace tpembed::comm_test

/// Instantiates the conformance suite for one engine (at namespace scope).
#define TPEMBED_COMM_CONFORMANCE(prefix, engine_name, factory)                                     \
  namespace tpembed::comm_test {                                                                   \
  INSTANTIATE_TEST_SUITE_P(prefix, CommConformance,                                                \
                           ::testing::Values(CommEngine{engine_name, [] { return (factory)(); }}), \
                           engine_test_name);                                                      \
  }

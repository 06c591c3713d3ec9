// A rank that dies in the middle of a collective, with real peers: one process per GPU (spawned by
// this test, each running nccl_rank), the last rank exits during a 1 GiB all-reduce, and every
// other rank must report CommunicatorError within its timeout instead of hanging. The test gives
// the group a hard deadline and kills what is left past it. Needs 2 GPUs or more.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tpembed/tpembed.hpp"

extern char** environ;

namespace {

std::string hex_of(const std::vector<std::uint8_t>& bytes) {
  std::string text;
  char pair[3];
  for (std::uint8_t byte : bytes) {
    std::snprintf(pair, sizeof pair, "%02x", byte);
    text += pair;
  }
  return text;
}

TEST(NcclDeadRank, SurvivorsReportAnErrorWithinTheTimeout) {
  const int size = std::min(tpembed::cuda_device_count(), 8);
  const double timeout = 10;
  const std::string id = hex_of(tpembed::make_nccl_unique_id());
  const std::string log_base = ::testing::TempDir() + "nccl_dead_rank_" + std::to_string(getpid()) + "_";
  std::vector<pid_t> children;
  for (int rank = 0; rank < size; ++rank) {
    const std::string log = log_base + std::to_string(rank) + ".log";
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
    std::vector<std::string> args = {TPEMBED_NCCL_RANK_HELPER, id, std::to_string(rank), std::to_string(size),
                                     std::to_string(rank), std::to_string(timeout),
                                     rank == size - 1 ? "die" : "survive"};
    std::vector<char*> argv;
    for (auto& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    pid_t pid = 0;
    const int started = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (started != 0) {
      ADD_FAILURE() << "could not start " << argv[0] << " (errno " << started << ")";
      for (pid_t child : children) kill(child, SIGKILL);  // the group cannot form without this rank
      for (pid_t child : children) waitpid(child, nullptr, 0);
      return;
    }
    children.push_back(pid);
  }
  // Set-up, the first all-reduce and the timeout fit well within this; past it the group hangs.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(static_cast<int>(timeout) + 120);
  std::vector<int> status(children.size(), -1);
  std::size_t running = children.size();
  while (running > 0 && std::chrono::steady_clock::now() < deadline) {
    for (std::size_t r = 0; r < children.size(); ++r) {
      int code = 0;
      if (status[r] == -1 && waitpid(children[r], &code, WNOHANG) == children[r]) {
        status[r] = WIFEXITED(code) ? WEXITSTATUS(code) : 128 + WTERMSIG(code);
        --running;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  for (std::size_t r = 0; r < children.size(); ++r) {
    if (status[r] == -1) {  // hung: the failure this test exists to catch
      kill(children[r], SIGKILL);
      waitpid(children[r], nullptr, 0);
    }
    std::ifstream log(log_base + std::to_string(r) + ".log");
    std::stringstream text;
    text << log.rdbuf();
    const int expected = r + 1 == children.size() ? 3 : 0;
    EXPECT_EQ(status[r], expected) << "rank " << r << (status[r] == -1 ? " hung past the deadline" : "")
                                   << "; its output:\n" << text.str();
    if (r + 1 < children.size()) std::printf("%s", text.str().c_str());
  }
}

}  // namespace

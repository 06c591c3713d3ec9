// LocalRendezvous: the host meeting of a communicator's members that share one process, which the
// NCCL engine holds before each eager collective. Threads stand in for the GPUs' threads.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "comm/local_rendezvous.hpp"
#include "tpembed/error.hpp"

namespace tpembed::comm {
namespace {

using namespace std::chrono_literals;

TEST(LocalRendezvous, MembersOfOneKeyShareOneRendezvousAndOthersDoNot) {
  auto a = LocalRendezvous::join("test key a");
  auto b = LocalRendezvous::join("test key a");
  auto c = LocalRendezvous::join("test key c");
  EXPECT_EQ(a.get(), b.get());
  EXPECT_NE(a.get(), c.get());
  EXPECT_EQ(a->members(), 2);
  EXPECT_EQ(c->members(), 1);
  c->arrive(1ms, 0);  // alone: returns at once
}

TEST(LocalRendezvous, NoMemberPassesBeforeAllHaveArrivedRoundAfterRound) {
  constexpr int kMembers = 4, kRounds = 200;
  std::vector<std::shared_ptr<LocalRendezvous>> members;
  for (int m = 0; m < kMembers; ++m) members.push_back(LocalRendezvous::join("test rounds"));
  std::atomic<int> arrivals{0};
  std::atomic<int> early{0};
  std::vector<std::thread> threads;
  for (int m = 0; m < kMembers; ++m) {
    threads.emplace_back([&, m] {
      for (int round = 0; round < kRounds; ++round) {
        arrivals.fetch_add(1);
        members[static_cast<std::size_t>(m)]->arrive(10s, m);
        // Everyone has arrived for this round once anyone passes it.
        if (arrivals.load() < (round + 1) * kMembers) early.fetch_add(1);
        if (m == round % kMembers) std::this_thread::sleep_for(50us);  // a late member each round
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(early.load(), 0);
  EXPECT_EQ(arrivals.load(), kMembers * kRounds);
}

TEST(LocalRendezvous, AMissingMemberTimesOutWithACommunicatorErrorAndBreaksIt) {
  auto mine = LocalRendezvous::join("test missing");
  auto absent = LocalRendezvous::join("test missing");  // joined, but never arrives
  try {
    mine->arrive(50ms, 3);
    FAIL() << "arrive() returned without the other member";
  } catch (const CommunicatorError& error) {
    EXPECT_NE(std::string(error.what()).find("rank 3: only 1 of the 2 members"), std::string::npos)
        << error.what();
  }
  EXPECT_THROW(absent->arrive(10s, 4), CommunicatorError);  // broken: fails at once, no 10 s wait
}

TEST(LocalRendezvous, ChildKeysDifferBySplitColorAndParent) {
  auto parent = LocalRendezvous::join("test parent");
  auto other = LocalRendezvous::join("test other parent");
  EXPECT_NE(parent->child_key(0, 1), parent->child_key(0, 2));
  EXPECT_NE(parent->child_key(0, 1), parent->child_key(1, 1));
  EXPECT_NE(parent->child_key(0, 1), other->child_key(0, 1));
  EXPECT_EQ(parent->child_key(2, 5), parent->child_key(2, 5));
}

}  // namespace
}  // namespace tpembed::comm

// One rank of an NCCL group in its own process, for the dead-rank test (test_nccl_dead_rank):
//   nccl_rank <unique id, hex> <rank> <size> <device> <timeout seconds> <survive|die>
// Every rank joins, runs one all-reduce together with the others, then starts an all-reduce of
// 1 GiB. A `die` rank exits in the middle of it (std::_Exit, no clean-up); a `survive` rank must
// see its all-reduce fail with CommunicatorError within the timeout. Prints one line; exits 0 when
// the rank behaved as its role says, 1 when not, 3 when it died on purpose.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "tpembed/tpembed.hpp"

int main(int argc, char** argv) {
  using Clock = std::chrono::steady_clock;
  if (argc != 7) {
    std::fprintf(stderr, "usage: %s <id hex> <rank> <size> <device> <timeout s> <survive|die>\n", argv[0]);
    return 2;
  }
  const std::string hex = argv[1];
  std::vector<std::uint8_t> id(hex.size() / 2);
  for (std::size_t i = 0; i < id.size(); ++i) id[i] = static_cast<std::uint8_t>(std::stoul(hex.substr(2 * i, 2), nullptr, 16));
  const int rank = std::atoi(argv[2]), size = std::atoi(argv[3]), device = std::atoi(argv[4]);
  const double timeout = std::atof(argv[5]);
  const bool dies = std::string(argv[6]) == "die";
  try {
    tpembed::NcclOptions options;
    options.timeout_seconds = timeout;
    auto comm = tpembed::make_nccl_communicator(id, rank, size, device, options);
    const std::int64_t count = std::int64_t{1} << 28;  // 1 GiB of f32
    tpembed::DeviceBuffer buffer(static_cast<std::size_t>(count) * 4, device);
    tpembed::cuda_fill(buffer.data(), 0, buffer.size());
    comm->all_reduce_sum(buffer.data(), buffer.data(), 1024, tpembed::DType::f32);  // everyone is here
    if (dies) {
      // Start the big all-reduce, then vanish while it runs.
      std::thread collective([&] {
        try {
          comm->all_reduce_sum(buffer.data(), buffer.data(), count, tpembed::DType::f32);
        } catch (...) {
        }
      });
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      std::printf("rank %d: exiting in the middle of the all-reduce\n", rank);
      std::fflush(stdout);
      std::_Exit(3);
    }
    const auto start = Clock::now();
    try {
      for (int round = 0; round < 1000; ++round) {
        comm->all_reduce_sum(buffer.data(), buffer.data(), count, tpembed::DType::f32);
      }
      std::printf("rank %d: FAILED: 1000 all-reduces completed without the dead rank\n", rank);
      return 1;
    } catch (const tpembed::CommunicatorError& error) {
      const double waited = std::chrono::duration<double>(Clock::now() - start).count();
      const bool in_time = waited <= timeout + 5.0;
      std::printf("rank %d: %s CommunicatorError after %.1f s (timeout %.0f s): %s\n", rank,
                  in_time ? "ok:" : "FAILED: too late:", waited, timeout, error.what());
      return in_time ? 0 : 1;
    }
  } catch (const std::exception& error) {
    std::printf("rank %d: FAILED: unexpected %s\n", rank, error.what());
    return 1;
  }
}

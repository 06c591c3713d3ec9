// Splitting host work over the machine's cores (the CPU backends' one threading primitive).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <thread>
#include <vector>

namespace tpembed::cpu {

/// Threads the CPU backends may use: one per core, or fewer when TPEMBED_CPU_THREADS names a
/// smaller positive number (read at each call; never more than the cores).
inline std::int64_t cpu_threads() {
  const std::int64_t cores = std::max(1u, std::thread::hardware_concurrency());
  const char* limit = std::getenv("TPEMBED_CPU_THREADS");
  if (limit == nullptr) return cores;
  char* end = nullptr;
  const long long wanted = std::strtoll(limit, &end, 10);
  return end != limit && *end == '\0' && wanted > 0 ? std::min<std::int64_t>(wanted, cores) : cores;
}

/// Splits [0, count) into contiguous ranges over up to cpu_threads() threads when the work is worth
/// it (`work_per_item` elements each; below ~2^18 elements a thread costs more than it saves), and
/// calls body(begin, end, worker) for each; worker 0 runs on the calling thread.
template <typename Body>
void parallel_for(std::int64_t count, std::int64_t work_per_item, Body body) {
  constexpr std::int64_t kMinWorkPerThread = 1 << 18;
  const std::int64_t hardware = cpu_threads();
  const std::int64_t useful = std::max<std::int64_t>(1, count * work_per_item / kMinWorkPerThread);
  const std::int64_t workers = std::min({hardware, useful, count});
  if (workers <= 1) {
    body(std::int64_t{0}, count, std::int64_t{0});
    return;
  }
  std::vector<std::thread> threads;
  const std::int64_t chunk = (count + workers - 1) / workers;
  for (std::int64_t w = 1; w < workers; ++w) {
    const std::int64_t begin = std::min(count, w * chunk), end = std::min(count, begin + chunk);
    threads.emplace_back(body, begin, end, w);
  }
  body(std::int64_t{0}, std::min(count, chunk), std::int64_t{0});
  for (auto& thread : threads) thread.join();
}

}  // namespace tpembed::cpu

// One process driving several GPUs, one thread per GPU, NCCL joined through a shared unique id (the
// single-process mode of make_nccl_communicator): collectives on device buffers, then the tensor-
// parallel lookup with every vocab exchange (peer_rows reads the other GPUs' tables through peer
// access, or must refuse where some pair has none) and with hidden sharding, each thread's output
// against the reference of the whole table.
// Needs 2 GPUs or more (skipped otherwise); uses up to 8.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <sstream>
#include <thread>

#include "device_tables.hpp"
#include "reference.hpp"

namespace tpembed::testing {
namespace {

// Runs `body(rank, size, stage)` on one thread per GPU; returns each thread's failure text ("" =
// passed). The body keeps `stage` saying what it is doing, so that a failure says where it came.
template <typename Body>
std::vector<std::string> on_every_gpu(int size, Body body) {
  std::vector<std::string> failures(static_cast<std::size_t>(size));
  std::vector<std::thread> threads;
  for (int rank = 0; rank < size; ++rank) {
    threads.emplace_back([&, rank] {
      std::string stage = "starting";
      try {
        set_test_device(rank);
        cuda_set_device(rank);
        failures[static_cast<std::size_t>(rank)] = body(rank, size, stage);
      } catch (const std::exception& error) {
        failures[static_cast<std::size_t>(rank)] = "exception while " + stage + ": " + error.what();
      }
    });
  }
  for (auto& thread : threads) thread.join();
  return failures;
}

int gpus_to_use() { return std::min(cuda_device_count(), 8); }

NcclOptions short_timeout() {
  NcclOptions options;
  options.timeout_seconds = 30;  // a broken test fails instead of hanging
  return options;
}

TEST(NcclThreads, AllReduceAndAllGatherOnDeviceBuffers) {
  const int size = gpus_to_use();
  const std::vector<std::uint8_t> id = make_nccl_unique_id();
  const auto failures = on_every_gpu(size, [&](int rank, int n, std::string& stage) -> std::string {
    stage = "setting up the communicator";
    auto comm = make_nccl_communicator(id, rank, n, rank, short_timeout());
    stage = "running the collectives";
    const std::int64_t count = 1 << 20;
    std::vector<float> mine(static_cast<std::size_t>(count), static_cast<float>(rank + 1));
    DeviceBuffer buffer(count * sizeof(float), rank), gathered(count * sizeof(float) * n, rank);
    buffer.copy_from_host(mine.data(), mine.size() * sizeof(float));
    comm->all_reduce_sum(buffer.data(), buffer.data(), count, DType::f32);
    comm->all_gather(buffer.data(), gathered.data(), count, DType::f32);
    std::vector<float> summed(static_cast<std::size_t>(count * n));
    gathered.copy_to_host(summed.data(), summed.size() * sizeof(float));
    const float expected = static_cast<float>(n * (n + 1) / 2);
    const auto wrong = std::find_if(summed.begin(), summed.end(), [&](float v) { return v != expected; });
    if (wrong == summed.end()) return "";
    std::ostringstream text;
    text << "rank " << rank << ": element " << (wrong - summed.begin()) << " is " << *wrong << ", expected "
         << expected;
    return text.str();
  });
  for (int rank = 0; rank < size; ++rank) EXPECT_EQ(failures[static_cast<std::size_t>(rank)], "") << "GPU " << rank;
}

struct Setting {
  int sharding_dim;
  VocabExchange exchange;
};

TEST(NcclThreads, EveryExchangeMatchesTheReference) {
  const int size = gpus_to_use();
  const std::int64_t vocab = 1001, hidden = 520;
  const Problem problem = random_problem(DType::i8, vocab, hidden, DType::f32, 0, 77);
  std::vector<std::int64_t> boundaries;
  for (int t = 0; t < size; ++t) boundaries.push_back(shard_range(vocab, size, t, ShardPlacement::packed).first);
  const auto ids = interesting_ids(vocab, 0, boundaries, 500, 3);
  const auto id_bytes = encode_ids(ids, DType::i64);
  const auto count = static_cast<std::int64_t>(ids.size());
  const auto expected = reference_lookup(problem, ids, DType::bf16);
  const Setting settings[] = {{0, VocabExchange::all_reduce},
                              {0, VocabExchange::owned_rows},
                              {0, VocabExchange::peer_rows},
                              {0, VocabExchange::automatic},
                              {1, VocabExchange::automatic}};
  // peer_rows needs every GPU to read the others' memory; where some pair cannot, it must refuse.
  const bool peers = gpus_reach_each_other(size);
  const std::vector<std::uint8_t> id = make_nccl_unique_id();
  const auto failures = on_every_gpu(size, [&](int rank, int n, std::string& stage) -> std::string {
    stage = "setting up the communicator";
    auto comm = make_nccl_communicator(id, rank, n, rank, short_timeout());
    std::ostringstream problems;
    for (const Setting& setting : settings) {
      const std::string name = std::string("dim ") + std::to_string(setting.sharding_dim) + " " +
                               vocab_exchange_name(setting.exchange);
      stage = "setting up " + name;
      const std::int64_t total = setting.sharding_dim == 0 ? vocab : hidden;
      const auto [offset, length] = shard_range(total, n, rank, ShardPlacement::packed);
      EmbeddingShard host;
      const HostTable weight = setting.sharding_dim == 0 ? problem.table.slice_rows(offset, length)
                                                         : problem.table.slice_cols(offset, length);
      const HostTable scale = setting.sharding_dim == 0 ? problem.scale->slice_rows(offset, length) : *problem.scale;
      host.weight = weight.view();
      host.scale = scale.view();
      EmbeddingConfig config;
      config.tp_size = n;
      config.sharding_dim = setting.sharding_dim;
      config.placement = ShardPlacement::packed;
      config.out_dtype = DType::bf16;
      config.vocab_exchange = setting.exchange;
      if (setting.exchange == VocabExchange::peer_rows && !peers) {
        try {
          ParallelEmbedding refused(*comm, upload_shard(host), config);
          problems << "peer_rows set up without peer access between the GPUs; ";
        } catch (const UnsupportedError&) {
        }
        continue;
      }
      ParallelEmbedding layer(*comm, upload_shard(host), config);
      const VocabExchange picked = layer.layout().vocab_exchange;
      if (setting.exchange == VocabExchange::automatic && picked != VocabExchange::all_reduce) {
        problems << "automatic picked " << vocab_exchange_name(picked) << " over NCCL; ";
      }
      stage = "allocating for " + name;
      const DeviceCopy device_ids = upload_bytes(id_bytes, DType::i64, {count});
      DeviceBuffer out(expected.size(), rank);
      cuda_fill(out.data(), 0xcd, out.size());
      stage = "the forward of " + name;
      layer.forward(device_ids.view, out.view(DType::bf16, {count, hidden}));
      cuda_synchronize();
      stage = "checking " + name;
      const auto actual = download(out.data(), expected.size());
      if (actual != expected) {
        problems << "dim " << setting.sharding_dim << " " << vocab_exchange_name(picked) << ": "
                 << first_difference(actual, expected, DType::bf16, hidden) << "; ";
      }
      std::uint64_t bad = 0;
      for (auto value : ids) bad += (value < 0 || value >= vocab) ? 1 : 0;
      if (layer.last_bad_id_count() != bad) {
        problems << vocab_exchange_name(picked) << " counted " << layer.last_bad_id_count() << " bad ids, not " << bad
                 << "; ";
      }
      stage = "destroying " + name;
    }
    return problems.str();
  });
  for (int rank = 0; rank < size; ++rank) EXPECT_EQ(failures[static_cast<std::size_t>(rank)], "") << "GPU " << rank;
}

}  // namespace
}  // namespace tpembed::testing

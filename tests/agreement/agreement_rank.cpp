// One rank of an agreement test, launched by mpirun (MPMD where ranks must differ: each process
// gets its own settings on its command line). It sets up a ParallelEmbedding and runs a forward as
// its arguments say, then checks what happened on this rank: the error type and a fragment of the
// message (--expect-type, --expect), or success with rows equal to the reference (--expect-type
// none). Every rank prints one line saying what it got, and exits 0 only when that is what it
// expected, so mpirun fails when any rank did not get the error.
//
// The global table has value row * 1000 + col at (row, col) (f32, or i8 with scale 1 for --dtype
// i8): any rank can check its output without the others.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tpembed/tpembed.hpp"

namespace {

using namespace tpembed;

struct Settings {
  int tp = -1;  // -1: the communicator's size
  std::vector<int> group;
  bool strict = false;
  bool checks = true;
  std::optional<DType> out;
  std::string exchange = "all_reduce";
  std::string placement = "equal";
  int dim = 0;
  std::int64_t rows = -1;  // this rank's shard rows (dim 0) or the table's rows (dim 1); -1: 8
  std::int64_t cols = -1;  // the table's cols (dim 0) or this rank's shard cols (dim 1); -1: 4
  DType dtype = DType::f32;
  std::int64_t scale_rows = -2;  // -2: one per row where needed, -1: none
  DType scale_dtype = DType::f32;
  std::uint64_t fingerprint = 0;
  std::vector<std::int64_t> ids = {0, 3, 5, 1};
  DType id_dtype = DType::i64;
  bool float_ids = false;
  bool fail_forward = false;
  bool skip_forward = false;
  bool second_thread = false;  // a second thread enters forward() while this one is inside
  int delay_ms = 0;            // wait before the forward
  std::string comm = "world";  // world | self | halves (needs --make-halves)
  bool make_halves = false;    // every rank makes a communicator of ranks {0,1}, {2,3}, ...
  std::string expect_type = "none";
  std::string expect;
  int time_forwards = 0;  // > 0: time this many forwards instead (see time_forwards())
  bool gpu = false;       // --time only: tables, ids and output on this rank's GPU
  bool nccl = false;      // --time only: over NCCL (bootstrapped through MPI; needs --gpu)
};

std::vector<std::int64_t> numbers(const std::string& text) {
  std::vector<std::int64_t> values;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) values.push_back(std::stoll(item));
  return values;
}

Settings parse(int argc, char** argv) {
  Settings s;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error("missing value after " + flag);
      return argv[++i];
    };
    if (flag == "--tp")
      s.tp = std::stoi(value());
    else if (flag == "--group")
      for (auto v : numbers(value())) s.group.push_back(static_cast<int>(v));
    else if (flag == "--strict")
      s.strict = true;
    else if (flag == "--no-checks")
      s.checks = false;
    else if (flag == "--out")
      s.out = dtype_from_name(value());
    else if (flag == "--exchange")
      s.exchange = value();
    else if (flag == "--placement")
      s.placement = value();
    else if (flag == "--dim")
      s.dim = std::stoi(value());
    else if (flag == "--rows")
      s.rows = std::stoll(value());
    else if (flag == "--cols")
      s.cols = std::stoll(value());
    else if (flag == "--dtype")
      s.dtype = dtype_from_name(value());
    else if (flag == "--scale-dtype")
      s.scale_dtype = dtype_from_name(value());
    else if (flag == "--scale-rows")
      s.scale_rows = std::stoll(value());
    else if (flag == "--fingerprint")
      s.fingerprint = std::stoull(value());
    else if (flag == "--ids")
      s.ids = numbers(value());
    else if (flag == "--id-dtype")
      s.id_dtype = dtype_from_name(value());
    else if (flag == "--float-ids")
      s.float_ids = true;
    else if (flag == "--fail-forward")
      s.fail_forward = true;
    else if (flag == "--skip-forward")
      s.skip_forward = true;
    else if (flag == "--second-thread")
      s.second_thread = true;
    else if (flag == "--delay-ms")
      s.delay_ms = std::stoi(value());
    else if (flag == "--comm")
      s.comm = value();
    else if (flag == "--make-halves")
      s.make_halves = true;
    else if (flag == "--expect-type")
      s.expect_type = value();
    else if (flag == "--expect")
      s.expect = value();
    else if (flag == "--time")
      s.time_forwards = std::stoi(value());
    else if (flag == "--gpu")
      s.gpu = true;
    else if (flag == "--nccl")
      s.nccl = true;
    else
      throw std::runtime_error("unknown flag " + flag);
  }
  return s;
}

const char* type_name(const std::exception& error) {
  if (dynamic_cast<const OutOfRangeError*>(&error)) return "OutOfRangeError";
  if (dynamic_cast<const ShapeError*>(&error)) return "ShapeError";
  if (dynamic_cast<const InvalidArgumentError*>(&error)) return "InvalidArgumentError";
  if (dynamic_cast<const CommunicatorError*>(&error)) return "CommunicatorError";
  if (dynamic_cast<const UnsupportedError*>(&error)) return "UnsupportedError";
  if (dynamic_cast<const BackendError*>(&error)) return "BackendError";
  return "std::exception";
}

// The value of the global table at (row, col).
float value_at(std::int64_t row, std::int64_t col) {
  return static_cast<float>(row * 1000 + col);
}

struct Layer {
  EmbeddingShard shard;
  EmbeddingConfig config;
  std::int64_t global_cols = 0;
};

// This rank's shard of the table, at group position `position`.
Layer make_layer(const Settings& s, int comm_size, int comm_rank) {
  Layer layer;
  EmbeddingConfig& c = layer.config;
  c.tp_size = s.tp < 0 ? comm_size : s.tp;
  c.tp_group = s.group;
  c.strict = s.strict;
  c.collective_checks = s.checks;
  c.out_dtype = s.out;
  c.vocab_exchange = vocab_exchange_from_name(s.exchange);
  c.placement = s.placement == "packed" ? ShardPlacement::packed : ShardPlacement::equal;
  c.sharding_dim = s.dim;
  c.table_fingerprint = s.fingerprint;
  if (s.dtype == DType::i8 && !c.out_dtype) c.out_dtype = DType::f32;
  int position = 0;
  for (std::size_t k = 0; k < s.group.size(); ++k) {
    if (s.group[k] == comm_rank) position = static_cast<int>(k);
  }
  if (s.group.empty() && c.tp_size > 1) position = comm_rank;
  const std::int64_t rows = s.rows < 0 ? 8 : s.rows, cols = s.cols < 0 ? 4 : s.cols;
  const std::int64_t row_offset = c.tp_size > 1 && s.dim == 0 ? position * rows : 0;
  const std::int64_t col_offset = c.tp_size > 1 && s.dim == 1 ? position * cols : 0;
  layer.global_cols = s.dim == 1 ? cols * c.tp_size : cols;
  Tensor weight(s.dtype, {rows, cols});
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t k = 0; k < cols; ++k) {
      const float v = value_at(row_offset + r, col_offset + k);
      if (s.dtype == DType::i8) {
        static_cast<std::int8_t*>(weight.data())[r * cols + k] =
            static_cast<std::int8_t>(static_cast<int>(v) % 100);
      } else {
        static_cast<float*>(weight.data())[r * cols + k] = v;
      }
    }
  }
  const std::int64_t scale_rows =
      s.scale_rows == -2 ? (s.dtype == DType::i8 ? rows : -1) : s.scale_rows;
  Tensor scale;
  if (scale_rows >= 0) {
    scale = Tensor(s.scale_dtype, {scale_rows});
    for (std::int64_t r = 0; r < scale_rows; ++r) {
      if (s.scale_dtype == DType::f16) {
        static_cast<std::uint16_t*>(scale.data())[r] = 0x3C00;  // 1.0
      } else {
        static_cast<float*>(scale.data())[r] = 1.0f;
      }
    }
  }
  layer.shard = EmbeddingShard::owning(std::move(weight), std::move(scale));
  return layer;
}

// Checks a successful forward's rows against the table's formula (f32 tables of in-range ids).
std::string check_rows(const Settings& s, const Tensor& out, std::int64_t cols) {
  const auto* got = static_cast<const float*>(out.data());
  for (std::size_t t = 0; t < s.ids.size(); ++t) {
    for (std::int64_t k = 0; k < cols; ++k) {
      const float want = value_at(s.ids[t], k);
      if (got[t * static_cast<std::size_t>(cols) + static_cast<std::size_t>(k)] != want) {
        std::ostringstream text;
        text << "row of id " << s.ids[t] << " col " << k << " is "
             << got[t * static_cast<std::size_t>(cols) + static_cast<std::size_t>(k)] << ", not "
             << want;
        return text.str();
      }
    }
  }
  return {};
}

// Times `s.time_forwards` forwards of the same ids (after a checked first one) and prints the
// median on world rank 0: what collective_checks costs is the difference between runs with and
// without --no-checks. Returns a problem, or nothing.
std::string time_forwards(const Settings& s, Communicator& world) {
  const int device = s.gpu ? node_local_cuda_device(world) : 0;
  if (s.gpu) cuda_set_device(device);
  std::unique_ptr<Communicator> nccl = s.nccl ? make_nccl_communicator(world, device) : nullptr;
  Communicator& used = nccl != nullptr ? *nccl : world;
  Layer made = make_layer(s, used.size(), used.rank());
  ParallelEmbedding layer(used, s.gpu ? copy_shard_to_device(made.shard, device) : made.shard,
                          made.config);
  const auto count = static_cast<std::int64_t>(s.ids.size());
  const TensorView host_ids(s.ids.data(), DType::i64, {count});
  Tensor host_out(DType::f32, {count, made.global_cols});
  DeviceBuffer gpu_ids, gpu_out;
  TensorView ids = host_ids, out = host_out.view();
  if (s.gpu) {
    gpu_ids = DeviceBuffer(static_cast<std::size_t>(count) * 8, device);
    gpu_ids.copy_from_host(s.ids.data(), gpu_ids.size());
    gpu_out = DeviceBuffer(static_cast<std::size_t>(host_out.nbytes()), device);
    ids = gpu_ids.view(DType::i64, {count});
    out = gpu_out.view(DType::f32, {count, made.global_cols});
  }
  const auto forward = [&] {
    layer.forward(ids, out);
    if (s.gpu) cuda_synchronize();
  };
  forward();
  if (s.gpu) gpu_out.copy_to_host(host_out.data(), gpu_out.size());
  const std::string problem = check_rows(s, host_out, made.global_cols);
  std::vector<double> times;
  for (int i = 0; i < s.time_forwards; ++i) {
    const auto start = std::chrono::steady_clock::now();
    forward();
    times.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
            .count());
  }
  std::sort(times.begin(), times.end());
  if (world.rank() == 0 && !times.empty()) {
    std::printf(
        "forward of %lld ids, tp %d over %s, %s tables, collective_checks %s: %.2f us (median of "
        "%d)\n",
        static_cast<long long>(count), layer.layout().tp_size, used.engine().c_str(),
        s.gpu ? "GPU" : "host", s.checks ? "on" : "off", times[times.size() / 2], s.time_forwards);
  }
  return problem;
}

}  // namespace

int main(int argc, char** argv) {
  int provided = 0;
  // Serialized: the second-thread case has a thread that enters forward() (and is refused before
  // any MPI call) while the main thread waits in a collective.
  MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided);
  int world_rank = 0, world_size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  Settings s;
  std::string got_type = "none", got_message, problem;
  try {
    s = parse(argc, argv);
  } catch (const std::exception& error) {
    std::printf("[rank %d] bad test arguments: %s\n", world_rank, error.what());
    MPI_Abort(MPI_COMM_WORLD, 2);
  }
  // The world, for the final barrier: a long timeout of its own, so that a rank that finished
  // early waits for one that is timing out in the test's communicator.
  MpiOptions patient;
  patient.timeout_seconds = 60;
  std::unique_ptr<Communicator> world = make_mpi_communicator(patient);
  std::unique_ptr<Communicator> comm, halves;
  MPI_Comm halves_comm = MPI_COMM_NULL;
  try {
    // The communicator under test (TPEMBED_COMM_TIMEOUT_SECONDS applies to it).
    MPI_Comm self = MPI_COMM_SELF;
    comm = s.comm == "self" ? make_mpi_communicator(&self) : make_mpi_communicator();
    if (s.make_halves) {
      MPI_Comm_split(MPI_COMM_WORLD, world_rank / 2, world_rank, &halves_comm);
      halves = make_mpi_communicator(&halves_comm);
    }
    Communicator& used = s.comm == "halves" ? *halves : *comm;
    if (s.time_forwards > 0) {
      problem = time_forwards(s, used);
    } else {
      Layer made = make_layer(s, used.size(), used.rank());
      ParallelEmbedding layer(used, made.shard, made.config);
      if (s.delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(s.delay_ms));
      if (!s.skip_forward) {
        std::vector<std::uint8_t> id_bytes(s.ids.size() * 8);
        for (std::size_t i = 0; i < s.ids.size(); ++i) {
          if (s.float_ids) {
            reinterpret_cast<float*>(id_bytes.data())[i] = static_cast<float>(s.ids[i]);
          } else if (s.id_dtype == DType::i32) {
            reinterpret_cast<std::int32_t*>(id_bytes.data())[i] =
                static_cast<std::int32_t>(s.ids[i]);
          } else {
            reinterpret_cast<std::int64_t*>(id_bytes.data())[i] = s.ids[i];
          }
        }
        const TensorView ids(id_bytes.data(), s.float_ids ? DType::f32 : s.id_dtype,
                             {static_cast<std::int64_t>(s.ids.size())});
        std::string second_type = "none", second_message;
        std::thread second;
        if (s.second_thread) {
          second = std::thread([&] {
            std::this_thread::sleep_for(
                std::chrono::milliseconds(300));  // the main thread is inside by now
            try {
              layer.forward(ids);
            } catch (const std::exception& error) {
              second_type = type_name(error);
              second_message = error.what();
            }
          });
        }
        try {
          if (s.fail_forward) {
            layer.fail_forward(std::make_exception_ptr(
                InvalidArgumentError("ids could not be converted (a test)")));
          }
          const Tensor out = layer.forward(ids);
          if (s.dtype == DType::f32 && !s.strict) problem = check_rows(s, out, made.global_cols);
        } catch (...) {
          if (second.joinable()) second.join();
          throw;
        }
        if (second.joinable()) {
          second.join();
          // The second thread's error is what this rank reports; the main thread's rows were
          // checked.
          got_type = second_type;
          got_message = second_message;
        }
      }
    }
  } catch (const std::exception& error) {
    got_type = type_name(error);
    got_message = error.what();
  }

  bool ok = got_type == s.expect_type && got_message.find(s.expect) != std::string::npos &&
            problem.empty();
  std::printf("[rank %d] %s %s: %s%s%s\n", world_rank, ok ? "as expected" : "UNEXPECTED",
              got_type.c_str(), got_message.c_str(),
              problem.empty() ? "" : "; wrong rows: ", problem.c_str());
  if (!ok) {
    std::printf("[rank %d] expected %s mentioning '%s'\n", world_rank, s.expect_type.c_str(),
                s.expect.c_str());
  }
  std::fflush(stdout);
  // Every rank is still in step on the world (a rank left waiting would time out here instead).
  try {
    world->barrier();
  } catch (const std::exception& error) {
    std::printf("[rank %d] UNEXPECTED: the final barrier failed: %s\n", world_rank, error.what());
    ok = false;
  }
  comm.reset();
  halves.reset();
  if (halves_comm != MPI_COMM_NULL) MPI_Comm_free(&halves_comm);
  world.reset();
  MPI_Finalize();
  return ok ? 0 : 1;
}

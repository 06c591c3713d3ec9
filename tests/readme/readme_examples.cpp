// README.md's C++ examples, run as written: readme_cpp_<n>.inc is the README's n-th ```cpp block
// (copied by CMakeLists.txt), included verbatim into a function that first gives it the names it
// uses and then checks what it computed against values worked out here by hand. Run under mpirun
// (one rank or several); argv[1]: a scratch directory (the checkpoint example reads and writes
// files). GPU examples run where a GPU is visible and say that they were skipped elsewhere.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "tpembed/tpembed.hpp"

namespace {

using namespace tpembed;

void expect(bool condition, const std::string& what) {
  if (!condition) throw std::runtime_error("README example: " + what);
}

float as_float(const Tensor& tensor, std::int64_t index) {
  if (tensor.dtype() == DType::bf16) return bf16_bits_to_f32(tensor.data_as<std::uint16_t>()[index]);
  return tensor.data_as<float>()[index];
}

// "Use it from C++": an int8 lookup on one rank, then vocab shards of an f32 table over the world.
void use_it_from_cpp() {
#include "readme_cpp_1.inc"
  // One rank: code 3 times scale 0.25 in every column of ids 5 and 17; zeros for -1.
  expect(out.shape() == std::vector<std::int64_t>({3, hidden}) && out.dtype() == DType::bf16,
         "embedding() gives bf16 [3, hidden]");
  for (std::int64_t c = 0; c < hidden; ++c) {
    expect(as_float(out, c) == 0.75f && as_float(out, hidden + c) == 0.75f &&
               as_float(out, 2 * hidden + c) == 0.0f,
           "embedding() rows are 3 * 0.25 (and 0 for id -1)");
  }
  // Tensor parallel: every rank holds the whole output, full_table's rows.
  for (std::size_t t = 0; t < good_ids.size(); ++t) {
    for (std::int64_t c = 0; c < hidden; ++c) {
      const float expected = static_cast<float>((good_ids[t] * hidden + c) % 1000);
      expect(as_float(rows_out, static_cast<std::int64_t>(t) * hidden + c) == expected,
             "the tensor-parallel forward gives full_table's rows");
    }
  }
  expect(layer.layout().tp_size == world->size(), "the layer spans the world");
}

// The GPU forward (set up once, queued on a stream).
void gpu_forward() {
  const std::int64_t vocab = 7, hidden = 5;
  Tensor host_table(DType::f32, {vocab, hidden});
  for (std::int64_t i = 0; i < host_table.numel(); ++i) host_table.data_as<float>()[i] = i;
  EmbeddingShard shard_on_gpu = copy_shard_to_device(EmbeddingShard::owning(std::move(host_table)), 0);
  EmbeddingConfig config;
  const std::vector<std::int64_t> ids = {6, 0, 9};
  DeviceBuffer id_buffer(ids.size() * 8, 0), out_buffer(3 * hidden * 4, 0);
  id_buffer.copy_from_host(ids.data(), ids.size() * 8);
  const TensorView ids_on_gpu = id_buffer.view(DType::i64, {3});
  const TensorView out_on_gpu = out_buffer.view(DType::f32, {3, hidden});
  void* stream = nullptr;  // the default stream
  {
#include "readme_cpp_2.inc"
  }
  std::vector<float> out(3 * hidden);
  out_buffer.copy_to_host(out.data(), out.size() * 4);
  for (std::int64_t c = 0; c < hidden; ++c) {
    expect(out[c] == 6 * hidden + c && out[hidden + c] == c && out[2 * hidden + c] == 0,
           "the GPU forward gives rows 6 and 0 and zeros for 9");
  }
}

// "The gradient": a host layer's backward, then embedding_backward on the GPU.
void gradient() {
  const std::int64_t rows = 4, cols = 3, offset = 0;
  Tensor weight(DType::f32, {rows, cols});
  auto single = make_single_communicator();
  ParallelEmbedding layer(*single, EmbeddingShard::owning(std::move(weight)));
  std::vector<std::int64_t> id_values = {1, 3, 1, 0};
  const std::int64_t num_ids = 4;
  std::vector<float> ones(num_ids * cols, 1.0f);
  const TensorView ids(id_values.data(), DType::i64, {num_ids});
  const TensorView grad_out(ones.data(), DType::f32, {num_ids, cols});
  void* stream = nullptr;
  DeviceBuffer workspace(gradient_workspace_bytes(Device::cuda(0), num_ids, rows, 0, cols) + 256, 0);
  DeviceBuffer id_buffer(num_ids * 8, 0), grad_out_buffer(ones.size() * 4, 0), grad_buffer(rows * cols * 4, 0);
  id_buffer.copy_from_host(id_values.data(), num_ids * 8);
  grad_out_buffer.copy_from_host(ones.data(), ones.size() * 4);
  const TensorView ids_on_gpu = id_buffer.view(DType::i64, {num_ids});
  const TensorView grad_out_on_gpu = grad_out_buffer.view(DType::f32, {num_ids, cols});
  const TensorView grad_on_gpu = grad_buffer.view(DType::f32, {rows, cols});
  {
#include "readme_cpp_3.inc"
    // Overwrite, then accumulate with id 0 ignored: rows 1 and 3 twice their counts, row 0 once.
    const std::vector<float> expected_rows = {1, 4, 0, 2};
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t c = 0; c < cols; ++c)
        expect(grad.data_as<float>()[r * cols + c] == expected_rows[r], "the layer's gradient");
    expect(seen.accumulated == 3 && seen.ignored == 1, "the last backward's counts");
  }
  cuda_synchronize(nullptr);
  std::vector<float> on_gpu(rows * cols);
  grad_buffer.copy_to_host(on_gpu.data(), on_gpu.size() * 4);
  const std::vector<float> expected_rows = {1, 2, 0, 1};
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c)
      expect(on_gpu[r * cols + c] == expected_rows[r], "embedding_backward on the GPU");
}

// "Sequence parallelism": owned rows in the scattered layout, ids [2, 5] split along the sequence.
void sequence_parallel(Communicator& comm) {
  const std::int64_t vocab = 9, hidden = 4;
  const auto [first, count] = shard_range(vocab, comm.size(), comm.rank(), ShardPlacement::packed);
  Tensor rows(DType::f32, {count, hidden});
  for (std::int64_t i = 0; i < rows.numel(); ++i) rows.data_as<float>()[i] = first * hidden + i;
  EmbeddingShard shard = EmbeddingShard::owning(std::move(rows));
  std::vector<std::int64_t> id_values = {8, 1, 4, 0, 7, 2, 2, 6, 5, 3};
  const TensorView ids(id_values.data(), DType::i64, {2, 5});
#include "readme_cpp_4.inc"
  // This rank's chunk of the 5 sequence positions (tensor_split's rule), every row id * hidden + c.
  const auto [start, size] = shard_range(5, comm.size(), layer.layout().tp_rank, ShardPlacement::packed);
  expect(out.shape() == std::vector<std::int64_t>({2, size, hidden}), "the chunk's shape");
  for (std::int64_t b = 0; b < 2; ++b)
    for (std::int64_t s = 0; s < size; ++s)
      for (std::int64_t c = 0; c < hidden; ++c)
        expect(out.data_as<float>()[(b * size + s) * hidden + c] == id_values[b * 5 + start + s] * hidden + c,
               "the scattered forward gives the chunk's rows");
}

// "Checkpoints (safetensors)": a rank's rows and columns of a checkpoint, and a file written (each
// rank in its own working directory).
void checkpoints(Communicator& world_comm) {
  const std::int64_t vocab = 11, hidden = 6;
  Tensor whole(DType::f32, {vocab, hidden});
  for (std::int64_t i = 0; i < whole.numel(); ++i) whole.data_as<float>()[i] = i;
  std::filesystem::create_directories("models/llama");
  write_safetensors("models/llama/model.safetensors", {{"model.embed_tokens.weight", whole.view()}});
  Communicator* world = &world_comm;
  const int tp = world_comm.size(), rank = world_comm.rank();
  const std::int64_t col_first = 2, col_count = 3;
  EmbeddingConfig config;
  config.tp_size = tp;
  Tensor scale_values(DType::f32, {vocab});
  const TensorView table = whole.view(), scale = scale_values.view();
  {
#include "readme_cpp_5.inc"
    const auto [first, count] = shard_range(vocab, tp, rank, ShardPlacement::packed);
    expect(std::memcmp(my_rows.data, whole.data_as<float>() + first * hidden,
                       static_cast<std::size_t>(count * hidden * 4)) == 0,
           "rows() gives the rank's rows");
    for (std::int64_t r = 0; r < vocab; ++r)
      for (std::int64_t c = 0; c < col_count; ++c)
        expect(my_cols.data_as<float>()[r * col_count + c] == r * hidden + col_first + c,
               "columns() gives the asked columns");
    std::vector<std::int64_t> ids = {0, vocab - 1};
    const Tensor out = layer.forward(TensorView(ids.data(), DType::i64, {2}));
    expect(out.data_as<float>()[hidden] == (vocab - 1) * hidden, "the checkpoint's layer looks up");
    const SafetensorsFile written("table.safetensors");
    expect(written.names().size() == 2 && written.metadata().at("format") == "pt",
           "write_safetensors wrote the table, its scales and the metadata");
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc != 2) throw std::runtime_error("usage: readme_examples SCRATCH_DIRECTORY");
    use_it_from_cpp();
    auto world = make_mpi_communicator();
    const bool lead = world->rank() == 0;
    const std::string scratch = std::string(argv[1]) + "/rank" + std::to_string(world->rank());
    std::filesystem::remove_all(scratch);
    std::filesystem::create_directories(scratch);
    if (::chdir(scratch.c_str()) != 0) throw std::runtime_error("cannot enter " + scratch);
    checkpoints(*world);
    sequence_parallel(*world);
    if (cuda_device_count() > 0) {
      gpu_forward();
      gradient();
    } else if (lead) {
      std::printf("SKIPPED: the GPU examples (no CUDA device visible)\n");
    }
    if (lead) std::printf("README C++ examples: ok\n");
    return 0;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "FAIL: %s\n", error.what());
    return 1;
  }
}

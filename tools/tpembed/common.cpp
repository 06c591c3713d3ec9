#include "common.hpp"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

namespace tpembed::cli {

std::unique_ptr<Communicator> make_world() {
  return mpi_available() ? make_mpi_communicator() : make_single_communicator();
}

std::vector<std::int64_t> parse_id_list(const std::string& text, const std::string& source) {
  std::vector<std::int64_t> ids;
  std::string token;
  std::size_t position = 0;
  auto flush = [&] {
    if (token.empty()) return;
    std::size_t used = 0;
    long long value = 0;
    try {
      value = std::stoll(token, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    TPEMBED_EXPECTS(used == token.size(), InvalidArgumentError, source, ": '", token, "' (item ",
                    ids.size() + 1, ", at character ", position - token.size(), ") is not an integer id");
    ids.push_back(value);
    token.clear();
  };
  for (; position < text.size(); ++position) {
    const char c = text[position];
    if (c == ',' || std::isspace(static_cast<unsigned char>(c))) {
      flush();
    } else {
      token.push_back(c);
    }
  }
  flush();
  return ids;
}

std::vector<std::int64_t> read_id_file(const std::string& path) {
  std::ifstream file(path);
  TPEMBED_EXPECTS(file.good(), InvalidArgumentError, "cannot open the ids file '", path, "'");
  std::stringstream text;
  text << file.rdbuf();
  return parse_id_list(text.str(), path);
}

Progress::Progress(std::string what, std::int64_t total, bool enabled)
    : what_(std::move(what)), total_(total), enabled_(enabled && isatty(STDERR_FILENO) != 0) {}

Progress::~Progress() { clear(); }

void Progress::step(const std::string& detail) {
  ++done_;
  if (!enabled_) return;
  std::fprintf(stderr, "\r\033[K%s [%lld/%lld] %s", what_.c_str(), static_cast<long long>(done_),
               static_cast<long long>(total_), detail.c_str());
  std::fflush(stderr);
  drawn_ = true;
}

void Progress::clear() {
  if (!drawn_) return;
  std::fputs("\r\033[K", stderr);
  std::fflush(stderr);
  drawn_ = false;
}

std::string format(const char* pattern, ...) {
  va_list args, measuring;
  va_start(args, pattern);
  va_copy(measuring, args);
  const int length = std::vsnprintf(nullptr, 0, pattern, measuring);
  va_end(measuring);
  std::string text(static_cast<std::size_t>(std::max(length, 0)) + 1, '\0');
  std::vsnprintf(&text[0], text.size(), pattern, args);
  va_end(args);
  text.pop_back();
  return text;
}

void print_line(const std::string& line) {
  std::fputs(line.c_str(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

void print_line(Progress& progress, const std::string& line) {
  progress.clear();
  print_line(line);
}

Tensor generate_table(std::int64_t vocab, std::int64_t hidden, std::uint64_t seed) {
  Tensor table(DType::f32, {vocab, hidden});
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  float* values = table.data_as<float>();
  for (std::int64_t i = 0; i < table.numel(); ++i) values[i] = normal(rng);
  return table;
}

QuantizedTable table_as(const Tensor& f32_table, DType dtype) {
  if (is_quantized(dtype)) return quantize_rows(f32_table.view(), dtype, DType::f32);
  QuantizedTable result{Tensor(dtype, f32_table.shape()), Tensor()};
  const float* in = f32_table.data_as<float>();
  const std::int64_t count = f32_table.numel();
  if (dtype == DType::f32) {
    std::memcpy(result.weight.data(), in, static_cast<std::size_t>(count) * 4);
  } else {
    auto* bits = result.weight.data_as<std::uint16_t>();
    for (std::int64_t i = 0; i < count; ++i) {
      bits[i] = dtype == DType::f16 ? f32_to_f16_bits(in[i]) : f32_to_bf16_bits(in[i]);
    }
  }
  return result;
}

EmbeddingShard cut_shard(const TensorView& weight, const TensorView& scale, int sharding_dim, int tp_size,
                         int tp_rank, ShardPlacement placement) {
  const std::int64_t total = weight.shape[static_cast<std::size_t>(sharding_dim)];
  const auto [offset, size] = shard_range(total, tp_size, tp_rank, placement);
  const std::int64_t present = sharding_dim == 1 ? std::max<std::int64_t>(0, std::min(size, total - offset)) : size;
  Tensor weight_shard = sharding_dim == 0 ? slice_rows(weight, offset, size) : slice_cols(weight, offset, present);
  Tensor scale_shard;
  if (!scale.absent()) scale_shard = sharding_dim == 0 ? slice_rows(scale, offset, size) : slice_cols(scale, 0, 0);
  return EmbeddingShard::owning(std::move(weight_shard), std::move(scale_shard));
}


std::vector<std::int64_t> sample_ids(std::int64_t vocab, std::int64_t count, int tp, std::uint64_t seed) {
  std::vector<std::int64_t> ids;
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::int64_t> any(0, vocab - 1);
  for (std::int64_t i = 0; i < count; ++i) ids.push_back(any(rng));
  for (auto placement : {ShardPlacement::packed, ShardPlacement::equal}) {
    for (int t = 0; t < tp; ++t) {
      const std::int64_t first = shard_range(vocab, tp, t, placement).first;
      if (first < vocab) ids.push_back(first);
      if (first > 0 && first - 1 < vocab) ids.push_back(first - 1);
    }
  }
  for (std::int64_t bad : {std::int64_t{-1}, vocab, std::int64_t{1} << 40}) ids.push_back(bad);
  return ids;
}

std::string default_scale_name(const std::string& tensor) { return tensor + "_scale"; }

EmbeddingShard load_shard(SafetensorsCheckpoint& checkpoint, const std::string& tensor,
                          const std::string& scale_tensor, int sharding_dim, int tp_size, int tp_rank,
                          ShardPlacement placement, std::optional<std::int64_t> int4_columns) {
  const SafetensorsFile& file = checkpoint.file(tensor);
  const TensorView whole = file.tensor(tensor, int4_columns);
  TPEMBED_EXPECTS(whole.ndim() == 2, ShapeError, file.path(), ": tensor '", tensor,
                  "' is not a 2-D table: ", whole.describe());
  const std::int64_t total = whole.shape[static_cast<std::size_t>(sharding_dim)];
  const auto [offset, size] = shard_range(total, tp_size, tp_rank, placement);
  auto owned = std::make_shared<std::vector<std::shared_ptr<const void>>>();
  owned->push_back(file.keep_alive());
  auto keep = [&](Tensor tensor_copy) {
    auto holder = std::make_shared<Tensor>(std::move(tensor_copy));
    owned->push_back(holder);
    return holder->view();
  };
  EmbeddingShard shard;
  if (sharding_dim == 0) {
    shard.weight = offset + size <= total ? file.rows(tensor, offset, size, int4_columns)
                                          : keep(file.copy_rows(tensor, offset, size, int4_columns));
  } else {
    const std::int64_t present = std::max<std::int64_t>(0, std::min(size, total - offset));
    shard.weight = keep(file.columns(tensor, offset, present, int4_columns));
  }
  if (!scale_tensor.empty()) {
    const SafetensorsFile& scale_file = checkpoint.file(scale_tensor);
    owned->push_back(scale_file.keep_alive());
    const TensorView scales = scale_file.tensor(scale_tensor);
    if (sharding_dim == 1) {
      shard.scale = scales;
    } else {
      shard.scale = offset + size <= scales.shape[0] ? scale_file.rows(scale_tensor, offset, size)
                                                     : keep(scale_file.copy_rows(scale_tensor, offset, size));
    }
  }
  shard.owner = owned;
  return shard;
}

std::vector<std::string> table_dtype_names() { return {"f32", "f16", "bf16", "i8", "fp8_e4m3", "i4"}; }
std::vector<std::string> output_dtype_names() { return {"f32", "f16", "bf16"}; }

}  // namespace tpembed::cli

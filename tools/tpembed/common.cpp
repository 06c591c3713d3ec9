#include "common.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <limits>
#include <new>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <random>
#include <sstream>

namespace tpembed::cli {

std::unique_ptr<Communicator> make_world() {
  return mpi_available() ? make_mpi_communicator() : make_single_communicator();
}

namespace {

// `text` as a whole decimal integer (nothing before or after it), or nothing.
std::optional<long long> whole_integer(const std::string& text) {
  std::size_t used = 0;
  long long value = 0;
  try {
    value = std::stoll(text, &used);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  if (used == 0 || used != text.size()) return std::nullopt;
  return value;
}

}  // namespace

bool launched_as_rank() {
  for (const char* variable : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"}) {
    if (std::getenv(variable) != nullptr) return true;
  }
  return false;
}

std::vector<std::string> gather_text(Communicator& world, const std::string& text) {
  const auto ranks = static_cast<std::size_t>(world.size());
  std::int64_t length = static_cast<std::int64_t>(text.size());
  std::vector<std::int64_t> lengths(ranks);
  world.all_gather(&length, lengths.data(), 1, DType::i64);
  std::int64_t total = 0;
  for (std::int64_t each : lengths) total += each;
  std::string all(static_cast<std::size_t>(total), '\0');
  world.all_gather_v(text.data(), all.data(), lengths);
  std::vector<std::string> texts;
  std::size_t at = 0;
  for (std::int64_t each : lengths) {
    texts.push_back(all.substr(at, static_cast<std::size_t>(each)));
    at += static_cast<std::size_t>(each);
  }
  return texts;
}

std::string ranks_and_texts(const std::vector<std::pair<int, std::string>>& entries) {
  std::vector<std::pair<std::string, std::vector<int>>> groups;  // in order of first rank
  for (const auto& [rank, text] : entries) {
    auto group = std::find_if(groups.begin(), groups.end(), [&](const auto& g) { return g.first == text; });
    if (group == groups.end()) {
      groups.push_back({text, {rank}});
    } else {
      group->second.push_back(rank);
    }
  }
  std::string joined;
  for (const auto& [text, ranks] : groups) {
    joined += joined.empty() ? "" : "; ";
    joined += ranks.size() == 1 ? "rank " : "ranks ";
    for (std::size_t k = 0; k < ranks.size(); ++k) joined += (k ? "," : "") + std::to_string(ranks[k]);
    joined += ": " + text;
  }
  return joined;
}

std::string ranks_and_texts(const std::vector<std::string>& texts) {
  std::vector<std::pair<int, std::string>> entries;
  for (std::size_t r = 0; r < texts.size(); ++r) entries.emplace_back(static_cast<int>(r), texts[r]);
  return ranks_and_texts(entries);
}

void agree_on_value(Communicator& world, const std::string& what, std::uint64_t fingerprint,
                    const std::string& description) {
  if (world.size() == 1) return;
  std::vector<std::uint64_t> all(static_cast<std::size_t>(world.size()));
  world.all_gather(&fingerprint, all.data(), 1, DType::i64);
  if (std::all_of(all.begin(), all.end(), [&](std::uint64_t each) { return each == all[0]; })) return;
  throw InvalidArgumentError("the ranks disagree on the " + what + ": " +
                             ranks_and_texts(gather_text(world, description)) + "; every rank must be given the same " +
                             what);
}

std::uint64_t ids_fingerprint(const std::vector<std::int64_t>& ids) {
  std::uint64_t hash = 0xcbf29ce484222325ull;
  auto add = [&](std::uint64_t value) {
    for (int i = 0; i < 8; ++i) hash = (hash ^ ((value >> (8 * i)) & 0xff)) * 0x100000001b3ull;
  };
  add(ids.size());
  for (std::int64_t id : ids) add(static_cast<std::uint64_t>(id));
  return hash;
}

std::string describe_ids(const std::vector<std::int64_t>& ids) {
  constexpr std::size_t kShown = 6;
  std::string text = std::to_string(ids.size()) + (ids.size() == 1 ? " id" : " ids");
  for (std::size_t i = 0; i < ids.size() && i < kShown; ++i) text += (i ? ", " : ": ") + std::to_string(ids[i]);
  if (ids.size() > kShown) text += ", ...";
  return text;
}

CLI::Validator integer_in(std::int64_t minimum, std::int64_t maximum) {
  const std::string range = maximum == std::numeric_limits<std::int64_t>::max()
                                ? (minimum == 1 ? std::string("a positive integer")
                                                : "an integer of at least " + std::to_string(minimum))
                                : "an integer from " + std::to_string(minimum) + " to " + std::to_string(maximum);
  return CLI::Validator(
      [minimum, maximum, range](std::string& input) -> std::string {
        const std::optional<long long> value = whole_integer(input);
        if (!value || *value < minimum || *value > maximum) {
          return "'" + input + "' is not " + range;
        }
        return std::string();
      },
      range);
}

CLI::Validator positive_integer() { return integer_in(1, std::numeric_limits<std::int64_t>::max()); }
CLI::Validator non_negative_integer() { return integer_in(0, std::numeric_limits<std::int64_t>::max()); }

CLI::Validator existing_regular_file() {
  return CLI::Validator(
      [](std::string& path) -> std::string {
        struct stat status {};
        if (::stat(path.c_str(), &status) != 0) return "'" + path + "': " + std::strerror(errno);
        if (!S_ISREG(status.st_mode)) {
          return "'" + path + "' is " + (S_ISDIR(status.st_mode) ? "a directory" : "not a regular file") +
                 "; give a file of ids";
        }
        return std::string();
      },
      "FILE");
}

Tensor allocate(DType dtype, const std::vector<std::int64_t>& shape, const std::string& what) {
  // The byte count of the largest tables a user can ask for (--vocab, --hidden) overflows 64 bits.
  std::int64_t bytes = dtype == DType::i4 ? 1 : static_cast<std::int64_t>(element_size(dtype));
  bool fits = true;
  for (std::size_t d = 0; d < shape.size(); ++d) {
    const std::int64_t extent = dtype == DType::i4 && d + 1 == shape.size() ? shape[d] / 2 + shape[d] % 2 : shape[d];
    fits = fits && extent >= 0 && !__builtin_mul_overflow(bytes, extent, &bytes);
  }
  TPEMBED_EXPECTS(fits, InvalidArgumentError, what, " ", dtype_name(dtype), detail::bracketed(shape),
                  " would take more than 2^63 bytes");
  try {
    return Tensor(dtype, shape);
  } catch (const std::bad_alloc&) {
    throw BackendError(format("out of memory: cannot allocate %lld bytes (%.3g GiB) for %s, %s%s",
                              static_cast<long long>(bytes), static_cast<double>(bytes) / (1 << 30), what.c_str(),
                              dtype_name(dtype), detail::bracketed(shape).c_str()));
  }
}

std::vector<std::int64_t> parse_id_list(const std::string& text, const std::string& source) {
  std::vector<std::int64_t> ids;
  std::string token;
  std::size_t position = 0;
  auto flush = [&] {
    if (token.empty()) return;
    const std::optional<long long> value = whole_integer(token);
    TPEMBED_EXPECTS(value.has_value(), InvalidArgumentError, source, ": '", token, "' (item ",
                    ids.size() + 1, ", at character ", position - token.size(), ") is not an integer id");
    ids.push_back(*value);
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
  // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  TPEMBED_EXPECTS(fd >= 0, InvalidArgumentError, "cannot open the ids file '", path, "': ", std::strerror(errno));
  struct stat status {};
  const bool regular = ::fstat(fd, &status) == 0 && S_ISREG(status.st_mode);
  std::string text;
  if (regular) {
    text.resize(static_cast<std::size_t>(status.st_size));
    std::size_t done = 0;
    while (done < text.size()) {
      const ssize_t got = ::read(fd, &text[done], text.size() - done);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) break;
      done += static_cast<std::size_t>(got);
    }
    text.resize(done);
  }
  ::close(fd);
  TPEMBED_EXPECTS(regular, InvalidArgumentError, "the ids file '", path,
                  "' is not a regular file (a FIFO, a device or a directory); give a file of ids");
  return parse_id_list(text, path);
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
  Tensor table = allocate(DType::f32, {vocab, hidden}, "the generated table");
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  float* values = table.data_as<float>();
  for (std::int64_t i = 0; i < table.numel(); ++i) values[i] = normal(rng);
  return table;
}

QuantizedTable table_as(const Tensor& f32_table, DType dtype) {
  if (is_quantized(dtype)) return quantize_rows(f32_table.view(), dtype, DType::f32);
  QuantizedTable result{allocate(dtype, f32_table.shape(), "the table"), Tensor()};
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
  TPEMBED_EXPECTS(weight.ndim() == 2 && (sharding_dim == 0 || sharding_dim == 1), InvalidArgumentError,
                  "cut_shard: a 2-D table and sharding dim 0 or 1, not ", weight.describe(), " and dim ", sharding_dim);
  const std::int64_t total = weight.shape[static_cast<std::size_t>(sharding_dim)];
  const auto [offset, size] = shard_range(total, tp_size, tp_rank, placement);
  const std::int64_t first = std::min(offset, total);  // equal shards may start past the end
  const std::int64_t present = sharding_dim == 1 ? std::max<std::int64_t>(0, std::min(size, total - first)) : size;
  Tensor weight_shard = sharding_dim == 0 ? slice_rows(weight, offset, size) : slice_cols(weight, first, present);
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

IdChunk chunk_of(const std::vector<std::int64_t>& ids, const std::vector<std::int64_t>& shape, int dim, int parts,
                 int index) {
  const auto d = static_cast<std::size_t>(dim);
  std::int64_t outer = 1, inner = 1;
  for (std::size_t k = 0; k < d; ++k) outer *= shape[k];
  for (std::size_t k = d + 1; k < shape.size(); ++k) inner *= shape[k];
  const auto [first, size] = shard_range(shape[d], parts, index, ShardPlacement::packed);  // tensor_split's rule
  IdChunk chunk{{}, shape, first};
  chunk.shape[d] = size;
  chunk.ids.reserve(static_cast<std::size_t>(outer * size * inner));
  for (std::int64_t o = 0; o < outer; ++o) {
    const auto begin = ids.begin() + (o * shape[d] + first) * inner;
    chunk.ids.insert(chunk.ids.end(), begin, begin + size * inner);
  }
  return chunk;
}

CheckpointOptionNames cli_option_names() {
  CheckpointOptionNames names;
  names.scale_tensor = "--scale-tensor";
  names.int4_columns = "--int4-columns";
  names.packed_placement = "--placement packed";
  return names;
}

std::vector<std::string> table_dtype_names() { return {"f32", "f16", "bf16", "i8", "fp8_e4m3", "i4"}; }
std::vector<std::string> output_dtype_names() { return {"f32", "f16", "bf16"}; }

}  // namespace tpembed::cli

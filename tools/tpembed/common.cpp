#include "common.hpp"

#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <fstream>
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

Progress::~Progress() {
  if (enabled_ && done_ > 0) std::fprintf(stderr, "\r\033[K");
}

void Progress::step(const std::string& detail) {
  ++done_;
  if (!enabled_) return;
  std::fprintf(stderr, "\r\033[K%s [%lld/%lld] %s", what_.c_str(), static_cast<long long>(done_),
               static_cast<long long>(total_), detail.c_str());
  std::fflush(stderr);
}

std::vector<std::string> table_dtype_names() { return {"f32", "f16", "bf16", "i8", "fp8_e4m3", "i4"}; }
std::vector<std::string> output_dtype_names() { return {"f32", "f16", "bf16"}; }

}  // namespace tpembed::cli

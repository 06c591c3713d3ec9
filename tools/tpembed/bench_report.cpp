#include "bench_report.hpp"

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <ctime>

#include "tpembed/tpembed.hpp"

namespace tpembed::cli::bench {

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

std::string with_commas(std::int64_t value) {
  std::string digits = std::to_string(value), out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out.push_back(',');
    out.push_back(digits[i]);
  }
  return out;
}

std::string utc_date() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S UTC", &utc);
  return text;
}

void write_json(std::ofstream& file, const std::string& path, const Report& report) {
  nlohmann::ordered_json document;
  document["header"] = report.header;
  document["rows"] = report.rows;
  // A device name that is not UTF-8 gets U+FFFD rather than failing the run at its very end.
  file << document.dump(1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) << '\n';
  TPEMBED_EXPECTS(file.good(), InvalidArgumentError, "--json: writing '", path, "' failed");
}

}  // namespace tpembed::cli::bench

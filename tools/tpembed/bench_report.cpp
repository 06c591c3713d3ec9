#include "bench_report.hpp"

#include <algorithm>
#include <cstdio>
#include <ctime>

#include "tpembed/tpembed.hpp"

namespace tpembed::cli::bench {

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
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

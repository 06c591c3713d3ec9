// A rank reading its shard of a large table must not pay for the whole table: the peak resident
// memory of reading a quarter of the rows (a view into the map, touched) or a quarter of the
// columns (copied with pread) of a 512 MiB tensor stays near a quarter, far under the whole.
// As a control, touching the whole tensor does show up in full, so the measurement is meaningful.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>

#include "safetensors_files.hpp"
#include "tpembed/safetensors.hpp"

namespace tpembed::testing {
namespace {

constexpr std::int64_t kRows = 32768, kCols = 8192;  // bf16: 16 KiB rows, 512 MiB in all
constexpr std::int64_t kTensorBytes = kRows * kCols * 2;
constexpr std::int64_t kMarkedEvery = 64;  // rows with markers; the rest of the file is holes
constexpr double kMiB = 1024.0 * 1024.0;

// The marker at (row, col): a bf16 bit pattern that differs per row and column.
std::uint16_t marker(std::int64_t row, std::int64_t col) {
  return static_cast<std::uint16_t>(0x3c00 + (row / kMarkedEvery) * 7 + col % 251);
}
constexpr std::int64_t kMarkedCols[] = {0, 1, 2047, 2048, 2049, 4095, 4096, 6144, 8191};

// A sparse-ish safetensors file: a hand-written header, holes, and markers every kMarkedEvery rows.
std::int64_t write_large_file(const std::string& path) {
  std::string header = R"({"embed":{"dtype":"BF16","shape":[)" + std::to_string(kRows) + "," +
                       std::to_string(kCols) + R"(],"data_offsets":[0,)" +
                       std::to_string(kTensorBytes) + "]}}";
  header.append((8 - header.size() % 8) % 8, ' ');
  write_file(path, safetensors_bytes(header, ""));
  const std::int64_t data_offset = 8 + static_cast<std::int64_t>(header.size());
  EXPECT_EQ(::truncate(path.c_str(), data_offset + kTensorBytes), 0);
  const int fd = ::open(path.c_str(), O_WRONLY);
  for (std::int64_t row = 0; row < kRows; row += kMarkedEvery) {
    for (std::int64_t col : kMarkedCols) {
      const std::uint16_t value = marker(row, col);
      EXPECT_EQ(::pwrite(fd, &value, 2, data_offset + (row * kCols + col) * 2), 2);
    }
  }
  ::close(fd);
  return data_offset;
}

std::int64_t status_kib(const char* field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field, 0) == 0) return std::stoll(line.substr(std::strlen(field)));
  }
  return -1;
}

// Peak resident memory added while `work` runs, in bytes: VmHWM after it minus VmRSS before,
// with the peak reset (clear_refs 5) first.
std::int64_t peak_growth(const std::function<void()>& work) {
  std::ofstream("/proc/self/clear_refs") << "5";
  const std::int64_t before = status_kib("VmRSS:");
  work();
  return (status_kib("VmHWM:") - before) * 1024;
}

// Where the checksums of touch() go, so that an optimising build cannot drop the reads.
volatile std::uint64_t checksum_sink = 0;

// Reads every byte of a view (so its pages are really faulted in) and checks the markers.
std::uint64_t touch(const TensorView& view, std::int64_t first_row, std::int64_t first_col) {
  const auto* words = static_cast<const std::uint64_t*>(view.data);
  std::uint64_t sum = 0;
  for (std::int64_t i = 0; i < view.nbytes() / 8; ++i) sum += words[i];
  const auto* values = view.as<std::uint16_t>();
  const std::int64_t rows = view.shape[0], cols = view.shape[1];
  for (std::int64_t row = 0; row < rows; ++row) {
    if ((first_row + row) % kMarkedEvery != 0) continue;
    for (std::int64_t col : kMarkedCols) {
      if (col < first_col || col >= first_col + cols) continue;
      EXPECT_EQ(values[row * cols + col - first_col], marker(first_row + row, col))
          << "row " << first_row + row << " col " << col;
    }
  }
  return sum;
}

class LargeTable : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new ScratchDir;
    write_large_file(dir_->file("large.safetensors"));
    std::ofstream("/proc/self/clear_refs") << "5";
    if (status_kib("VmHWM:") < 0) GTEST_SKIP() << "no VmHWM in /proc/self/status";
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::string path() { return dir_->file("large.safetensors"); }
  static void report(const char* what, std::int64_t bytes) {
    std::printf(
        "[ memory   ] %s: peak resident memory grew %.1f MiB (%.1f%% of the %.0f MiB tensor)\n",
        what, bytes / kMiB, 100.0 * bytes / kTensorBytes, kTensorBytes / kMiB);
  }
  static ScratchDir* dir_;
};
ScratchDir* LargeTable::dir_ = nullptr;

TEST_F(LargeTable, AQuarterOfTheRowsCostsAQuarter) {
  const std::int64_t growth = peak_growth([] {
    const SafetensorsFile file(path());
    const TensorView shard = file.rows("embed", kRows / 4, kRows / 4);  // rank 1 of 4
    checksum_sink = touch(shard, kRows / 4, 0);
  });
  report("rows [8192, 16384) viewed and read", growth);
  EXPECT_LT(growth, kTensorBytes * 3 / 8) << "a quarter of the rows must not fault in the table";
}

TEST_F(LargeTable, AQuarterOfTheColumnsCostsAQuarter) {
  const std::int64_t growth = peak_growth([] {
    const SafetensorsFile file(path());
    const Tensor shard = file.columns("embed", kCols / 2, kCols / 4);  // rank 2 of 4
    checksum_sink = touch(shard, 0, kCols / 2);
  });
  report("columns [4096, 6144) copied", growth);
  EXPECT_LT(growth, kTensorBytes * 3 / 8) << "a quarter of the columns must not read the table";
}

TEST_F(LargeTable, ControlReadingTheWholeTensorShowsUpInFull) {
  const std::int64_t growth = peak_growth([] {
    const SafetensorsFile file(path());
    checksum_sink = touch(file.tensor("embed"), 0, 0);
  });
  report("whole tensor viewed and read (control)", growth);
  EXPECT_GT(growth, kTensorBytes * 9 / 10) << "the measurement must see mapped pages";
}

}  // namespace
}  // namespace tpembed::testing

#include "exercise_safetensors.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "io/safetensors_header.hpp"
#include "tpembed/error.hpp"
#include "tpembed/safetensors.hpp"

namespace tpembed::fuzz {

namespace {

// A violated invariant is a bug the fuzzer must report as a crash.
void require(bool condition) {
  if (!condition) std::abort();
}

void check_invariants(const io::SafetensorsHeader& header, std::size_t size) {
  const auto file_size = static_cast<std::int64_t>(size);
  require(header.data_offset >= 8 && header.data_offset + header.data_size == file_size);
  for (const SafetensorsTensorInfo& info : header.tensors) {
    require(0 <= info.begin && info.begin <= info.end && info.end <= header.data_size);
    const io::StoredDType* stored = io::find_stored_dtype(info.stored_dtype);
    require(stored != nullptr);
    std::int64_t bytes = stored->element_size;
    for (std::int64_t extent : info.stored_shape) bytes *= extent;  // checked by the parser
    require(bytes == info.end - info.begin);
  }
}

std::uint64_t checksum(const TensorView& view) {
  const auto* bytes = static_cast<const unsigned char*>(view.data);
  std::uint64_t sum = 0;
  for (std::int64_t i = 0; i < view.nbytes(); ++i) sum = sum * 31 + bytes[i];
  return sum;
}

template <typename Read>
void attempt(const Read& read) {
  try {
    read();
  } catch (const Error&) {
  }
}

void read_every_tensor(const std::string& path) {
  const SafetensorsFile file(path);
  for (const std::string& name : file.names()) {
    const SafetensorsTensorInfo& info = file.info(name);
    std::optional<std::int64_t> int4_columns;
    if (info.stored_dtype == "U8" && !info.int4_columns && !info.stored_shape.empty()) {
      int4_columns = 2 * info.stored_shape.back();
    }
    volatile std::uint64_t sink = file.fingerprint(name);  // any accepted tensor has one
    require(sink != 0);
    attempt([&] { sink = sink + checksum(file.tensor(name, int4_columns)); });
    const std::int64_t rows = info.stored_shape.empty() ? 0 : info.stored_shape[0];
    attempt(
        [&] { sink = sink + checksum(file.rows(name, rows / 2, rows - rows / 2, int4_columns)); });
    attempt([&] { sink = sink + checksum(file.copy_rows(name, rows / 2, rows, int4_columns)); });
    if (info.stored_shape.size() == 2) {
      const std::int64_t cols =
          int4_columns.value_or(info.int4_columns.value_or(info.stored_shape[1]));
      const std::int64_t first = std::min<std::int64_t>(1, cols);
      attempt([&] {
        sink = sink + checksum(file.columns(name, first, std::min<std::int64_t>(3, cols - first),
                                            int4_columns));
      });
    }
  }
}

}  // namespace

bool exercise_safetensors(const std::uint8_t* bytes, std::size_t size) {
  try {
    check_invariants(io::parse_safetensors_bytes(bytes, size, "<input>"), size);
  } catch (const Error&) {
    return false;
  }
  const int fd = ::memfd_create("tpembed-fuzz", MFD_CLOEXEC);
  require(fd >= 0);
  require(::write(fd, bytes, size) == static_cast<ssize_t>(size));
  try {
    read_every_tensor("/proc/self/fd/" + std::to_string(fd));
  } catch (const Error&) {
    ::close(fd);
    std::abort();  // the same bytes were accepted by the parser: opening them must work too
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  return true;
}

}  // namespace tpembed::fuzz

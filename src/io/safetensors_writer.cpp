// write_safetensors(): the header as the reference implementation lays it out, then the data, into
// a temporary file that replaces the target only once it is complete.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "io/checkpoint_error.hpp"
#include "tpembed/safetensors.hpp"

namespace tpembed {

namespace {

using ordered_json = nlohmann::ordered_json;

struct PlannedTensor {
  std::string name;
  const TensorView* view;
  std::vector<std::int64_t> stored_shape;
  std::int64_t bytes;
  std::size_t alignment;
};

PlannedTensor plan(const std::string& name, const TensorView& view,
                   std::map<std::string, std::string>& metadata) {
  const std::string where = "write_safetensors: tensor " + io::in_quotes(name);
  TPEMBED_EXPECTS(name != "__metadata__", InvalidArgumentError, where, " is a reserved name");
  TPEMBED_EXPECTS(view.device.kind == DeviceKind::cpu, InvalidArgumentError, where,
                  " must be in host memory, not on ", device_name(view.device));
  for (std::int64_t extent : view.shape) {
    TPEMBED_EXPECTS(extent >= 0, InvalidArgumentError, where,
                    " has a negative extent: ", view.describe());
  }
  PlannedTensor planned{name, &view, view.shape, view.nbytes(),
                        std::max<std::size_t>(1, element_size(view.dtype))};
  TPEMBED_EXPECTS(view.data != nullptr || planned.bytes == 0, InvalidArgumentError, where,
                  " has null data for ", planned.bytes, " bytes");
  if (view.dtype == DType::i4) {
    TPEMBED_EXPECTS(!view.shape.empty(), InvalidArgumentError, where,
                    ": an int4 tensor needs at least one dimension");
    planned.stored_shape.back() = row_bytes(DType::i4, view.shape.back());
    const std::string key = kInt4ColumnsKeyPrefix + name;
    const std::string columns = std::to_string(view.shape.back());
    const auto [entry, added] = metadata.emplace(key, columns);
    TPEMBED_EXPECTS(added || entry->second == columns, InvalidArgumentError,
                    "write_safetensors: metadata ", io::in_quotes(key), " = ",
                    io::in_quotes(entry->second), " contradicts the int4 tensor's ", columns,
                    " columns");
  }
  return planned;
}

std::string header_text(const std::vector<PlannedTensor>& tensors,
                        const std::map<std::string, std::string>& metadata) {
  ordered_json header = ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::int64_t offset = 0;
  for (const PlannedTensor& tensor : tensors) {
    header[tensor.name] = {{"dtype", safetensors_dtype_name(tensor.view->dtype)},
                           {"shape", tensor.stored_shape},
                           {"data_offsets", {offset, offset + tensor.bytes}}};
    offset += tensor.bytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& error) {
    throw InvalidArgumentError(
        std::string("write_safetensors: a tensor name or metadata entry is not "
                    "valid UTF-8: ") +
        error.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');  // the data buffer starts 8-byte aligned
  return text;
}

// Writes all of [data, data + size) to fd; false (errno set) on failure.
bool write_all(int fd, const void* data, std::int64_t size) {
  const auto* bytes = static_cast<const unsigned char*>(data);
  while (size > 0) {
    const std::size_t chunk = static_cast<std::size_t>(std::min<std::int64_t>(size, 1 << 30));
    const ssize_t written = ::write(fd, bytes, chunk);
    if (written < 0 && errno == EINTR) continue;
    if (written <= 0) return false;
    bytes += written;
    size -= written;
  }
  return true;
}

std::string temporary_path(const std::string& path) {
  static std::atomic<unsigned> counter{0};
  return path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
}

}  // namespace

void write_safetensors(const std::string& path, const std::map<std::string, TensorView>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::map<std::string, std::string> all_metadata = metadata;
  std::vector<PlannedTensor> planned;
  for (const auto& [name, view] : tensors) planned.push_back(plan(name, view, all_metadata));
  const std::string prefix = kInt4ColumnsKeyPrefix;
  for (const auto& [key, value] : all_metadata) {
    if (key.compare(0, prefix.size(), prefix) != 0) continue;
    const auto tensor = tensors.find(key.substr(prefix.size()));
    TPEMBED_EXPECTS(tensor != tensors.end() && tensor->second.dtype == DType::i4,
                    InvalidArgumentError, "write_safetensors: metadata key ", io::in_quotes(key),
                    " is reserved for int4 tensors and names none");
  }
  // Larger elements first, then by name: every tensor stays aligned to its element size.
  std::sort(planned.begin(), planned.end(), [](const PlannedTensor& a, const PlannedTensor& b) {
    return a.alignment != b.alignment ? a.alignment > b.alignment : a.name < b.name;
  });
  const std::string header = header_text(planned, all_metadata);

  const std::string temporary = temporary_path(path);
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) io::fail(path, "cannot create ", temporary, ": ", std::strerror(errno));
  unsigned char length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<unsigned char>(header.size() >> (8 * i));
  bool ok = write_all(fd, length, 8) &&
            write_all(fd, header.data(), static_cast<std::int64_t>(header.size()));
  for (std::size_t i = 0; ok && i < planned.size(); ++i) {
    ok = write_all(fd, planned[i].view->data, planned[i].bytes);
  }
  ok = ok && ::fsync(fd) == 0;  // the bytes are on disk before the rename makes them visible
  int error = ok ? 0 : errno;
  if (::close(fd) != 0 && ok) {
    ok = false;
    error = errno;
  }
  if (!ok) {
    ::unlink(temporary.c_str());
    io::fail(path, "writing ", temporary, " failed: ", std::strerror(error));
  }
  if (::rename(temporary.c_str(), path.c_str()) != 0) {
    const int rename_error = errno;
    ::unlink(temporary.c_str());
    io::fail(path, "cannot replace it with ", temporary, ": ", std::strerror(rename_error));
  }
}

}  // namespace tpembed

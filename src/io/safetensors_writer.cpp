// write_safetensors(): the header as the reference implementation lays it out, then the data, into
// a temporary file that replaces the target only once it is complete.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
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

const char* kind_of(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISLNK(mode)) return "a symbolic link";
  return "not a regular file";
}

}  // namespace

void check_safetensors_output(const std::string& path, const std::vector<std::string>& inputs) {
  TPEMBED_EXPECTS(!path.empty(), InvalidArgumentError,
                  "write_safetensors: the output path is empty");
  struct stat status {};
  if (::lstat(path.c_str(), &status) != 0) {
    if (errno != ENOENT) io::fail(path, "cannot check the output: ", std::strerror(errno));
    // A new file: its directory must exist; nothing creates one for it.
    const std::string::size_type slash = path.find_last_of('/');
    const std::string directory = slash == std::string::npos ? "."
                                  : slash == 0               ? "/"
                                                             : path.substr(0, slash);
    struct stat parent {};
    if (::stat(directory.c_str(), &parent) != 0) {
      io::fail(path, "cannot write here: directory '", directory, "' ",
               errno == ENOENT ? "does not exist (it is not created)" : std::strerror(errno));
    }
    return;
  }
  if (!S_ISREG(status.st_mode)) {
    io::fail(path, "is ", kind_of(status.st_mode),
             S_ISLNK(status.st_mode) ? "; name the file it points to, or another path"
                                     : "; only a regular file is replaced by the output");
  }
  if ((status.st_mode & S_IWUSR) == 0 || ::access(path.c_str(), W_OK) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(status.st_mode & 07777));
    io::fail(path, "is read-only (mode ", mode, "); make it writable or choose another path");
  }
  for (const std::string& input : inputs) {
    struct stat other {};
    if (::stat(input.c_str(), &other) == 0 && other.st_dev == status.st_dev &&
        other.st_ino == status.st_ino) {
      io::fail(path, "is the input file ", input == path ? std::string() : "'" + input + "' ",
               "(same file): writing the output would replace it; choose another path");
    }
  }
}

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

  check_safetensors_output(path);
  struct stat replaced {};
  const bool replacing = ::stat(path.c_str(), &replaced) == 0;

  const std::string temporary = temporary_path(path);
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) io::fail(path, "cannot create ", temporary, ": ", std::strerror(errno));
  // The output takes the place of the old file: it keeps that file's permissions.
  bool ok = !replacing || ::fchmod(fd, replaced.st_mode & 07777) == 0;
  unsigned char length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<unsigned char>(header.size() >> (8 * i));
  ok = ok && write_all(fd, length, 8) &&
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

#include "io/mapped_file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "io/checkpoint_error.hpp"

namespace tpembed::io {

namespace {
// Bytes a single pread asks for at most (Linux transfers at most ~2 GiB a call anyway).
constexpr std::int64_t kMaxReadChunk = std::int64_t{1} << 30;
}  // namespace

MappedFile::MappedFile(const std::string& path) : path_(path) {
  // O_NONBLOCK: opening a FIFO someone named as a checkpoint must not hang; it is rejected below.
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd_ < 0) fail(path, "cannot open: ", std::strerror(errno));
  struct stat status {};
  if (::fstat(fd_, &status) != 0) {
    const int error = errno;
    ::close(fd_);
    fail(path, "cannot stat: ", std::strerror(error));
  }
  if (!S_ISREG(status.st_mode)) {
    ::close(fd_);
    fail(path, S_ISDIR(status.st_mode) ? "is a directory" : "is not a regular file");
  }
  size_ = static_cast<std::int64_t>(status.st_size);
  // Ranks read disjoint parts of a shared file: no readahead past what each asks for.
  ::posix_fadvise(fd_, 0, 0, POSIX_FADV_RANDOM);
  if (size_ == 0) return;
  void* mapping = ::mmap(nullptr, static_cast<std::size_t>(size_), PROT_READ, MAP_SHARED, fd_, 0);
  if (mapping == MAP_FAILED) {
    const int error = errno;
    ::close(fd_);
    fail(path, "cannot map ", size_, " bytes: ", std::strerror(error));
  }
  data_ = static_cast<unsigned char*>(mapping);
  ::madvise(data_, static_cast<std::size_t>(size_), MADV_RANDOM);
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(data_, static_cast<std::size_t>(size_));
  if (fd_ >= 0) ::close(fd_);
}

void MappedFile::read_at(void* destination, std::int64_t offset, std::int64_t size) const {
  auto* out = static_cast<unsigned char*>(destination);
  while (size > 0) {
    const std::int64_t chunk = size < kMaxReadChunk ? size : kMaxReadChunk;
    const ssize_t got =
        ::pread(fd_, out, static_cast<std::size_t>(chunk), static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0)
      fail(path_, "read of ", chunk, " bytes at offset ", offset,
           " failed: ", std::strerror(errno));
    if (got == 0) fail(path_, "file ended at offset ", offset, " (truncated while open?)");
    out += got;
    offset += got;
    size -= got;
  }
}

void MappedFile::check_unchanged() const {
  struct stat status {};
  if (::fstat(fd_, &status) != 0) fail(path_, "cannot stat: ", std::strerror(errno));
  const auto now = static_cast<std::int64_t>(status.st_size);
  if (now != size_) {
    fail(path_, "file is now ", now, " bytes but was ", size_, " when it was opened: it was ",
         now < size_ ? "truncated" : "rewritten", " while open; open it again");
  }
}

void MappedFile::will_need(std::int64_t offset, std::int64_t size) const {
  if (data_ == nullptr || size <= 0) return;
  const std::int64_t page = ::sysconf(_SC_PAGESIZE);
  const std::int64_t first = offset / page * page;
  ::madvise(data_ + first, static_cast<std::size_t>(offset + size - first), MADV_WILLNEED);
}

}  // namespace tpembed::io

// A read-only file: a memory map of it for zero-copy views, and pread for copies that should not
// pull the map's pages into the process.
#pragma once

#include <cstdint>
#include <string>

namespace tpembed::io {

class MappedFile {
 public:
  /// Opens and maps `path` (a regular file). Throws CheckpointError naming it on failure.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::string& path() const { return path_; }
  std::int64_t size() const { return size_; }
  /// Start of the mapping (null for an empty file).
  const unsigned char* data() const { return data_; }

  /// Reads exactly `size` bytes at `offset` into `destination` (through the page cache, not the
  /// map). CheckpointError when the file is shorter than that or the read fails.
  void read_at(void* destination, std::int64_t offset, std::int64_t size) const;

  /// Checks that the file still has the size it had when opened (fstat of the open descriptor):
  /// CheckpointError when it was truncated or rewritten in place since. Called before each read
  /// and each view handed out, so that a file cut short after opening gives an error instead of
  /// SIGBUS when the mapping is touched. (A file cut short after a view was handed out, while the
  /// caller reads through it, still faults: nothing checks then.)
  void check_unchanged() const;

  /// Tells the kernel the bytes [offset, offset + size) will be read soon.
  void will_need(std::int64_t offset, std::int64_t size) const;

 private:
  std::string path_;
  int fd_ = -1;
  std::int64_t size_ = 0;
  unsigned char* data_ = nullptr;
};

}  // namespace tpembed::io

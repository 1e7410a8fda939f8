#pragma once
/// \file mapped_file.hpp
/// A file's bytes, read-only, without reading the file: on POSIX systems the file is memory-mapped
/// (mmap, PROT_READ, MAP_PRIVATE), so a byte costs resident memory only once it is touched, and
/// `release` gives touched pages back. Elsewhere the file is read into memory once.
///
/// `ByteSource` is what the readers of ssm/io hold: either such a mapping or bytes already in memory
/// (a file built in a test, a fuzzer's input), behind one interface, shared by copies.
///
/// As with any mapping, the file must not be truncated while it is mapped (a read past the new end is a
/// SIGBUS, which no check can turn into an error); replacing it (a new file under the same name) is safe.

#include "ssm/core/error.hpp"

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#define SSM_HAVE_MMAP 1
#else
#define SSM_HAVE_MMAP 0
#endif

namespace ssm::io {

/// Read-only bytes: a mapped file or an owned buffer. Copies share the bytes; the mapping is
/// unmapped when the last copy goes.
class ByteSource {
 public:
  ByteSource() = default;

  /// Bytes already in memory (kept, not copied again).
  static ByteSource from_bytes(std::vector<unsigned char> bytes) {
    auto storage = std::make_shared<Storage>();
    storage->owned = std::move(bytes);
    storage->data = storage->owned.data();
    storage->size = storage->owned.size();
    ByteSource s;
    s.storage_ = std::move(storage);
    return s;
  }

  /// The file at `path`, mapped read-only (read into memory where mmap is not available).
  /// \throws ssm::error naming the path when it cannot be opened or mapped.
  static ByteSource map_file(const std::string& path) {
#if SSM_HAVE_MMAP
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw error(ssm::detail::concat(path, ": cannot open the file"));
    struct stat info {};
    if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
      ::close(fd);
      throw error(ssm::detail::concat(path, ": expected a regular file"));
    }
    auto storage = std::make_shared<Storage>();
    storage->size = static_cast<std::size_t>(info.st_size);
    if (storage->size > 0) {
      void* p = ::mmap(nullptr, storage->size, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        ::close(fd);
        throw error(ssm::detail::concat(path, ": cannot map the file (", storage->size, " bytes)"));
      }
      storage->mapped = p;
      storage->data = static_cast<const unsigned char*>(p);
    }
    ::close(fd);  // the mapping keeps the file
    ByteSource s;
    s.storage_ = std::move(storage);
    return s;
#else
    std::ifstream file(path, std::ios::binary);
    if (!file) throw error(ssm::detail::concat(path, ": cannot open the file"));
    return from_bytes(std::vector<unsigned char>((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>()));
#endif
  }

  const unsigned char* data() const { return storage_ ? storage_->data : nullptr; }
  std::size_t size() const { return storage_ ? storage_->size : 0; }
  /// True when the bytes are a mapping of a file (pages read on demand).
  bool is_mapped() const { return storage_ && storage_->mapped != nullptr; }

  /// Tells the system that bytes [begin, end) are not needed for now: the whole pages inside the range
  /// leave this process's resident memory (a later read maps them again from the file). A loader calls
  /// it on what it has converted, so that loading costs the converted copy plus a window, not twice the
  /// file. Nothing happens for owned bytes.
  void release(std::size_t begin, std::size_t end) const {
#if SSM_HAVE_MMAP
    if (!is_mapped() || end > storage_->size || begin >= end) return;
    const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    const std::size_t first = (begin + page - 1) / page * page, last = end / page * page;
    if (first < last)
      ::madvise(static_cast<unsigned char*>(storage_->mapped) + first, last - first, MADV_DONTNEED);
#else
    (void)begin;
    (void)end;
#endif
  }

 private:
  struct Storage {
    std::vector<unsigned char> owned;
    void* mapped = nullptr;
    const unsigned char* data = nullptr;
    std::size_t size = 0;
    Storage() = default;
    Storage(const Storage&) = delete;
    Storage& operator=(const Storage&) = delete;
    ~Storage() {
#if SSM_HAVE_MMAP
      if (mapped) ::munmap(mapped, size);
#endif
    }
  };
  std::shared_ptr<const Storage> storage_;
};

}  // namespace ssm::io

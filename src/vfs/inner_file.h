// One real file opened through the wrapped VFS (the process's default VFS,
// usually "unix"). Going through it rather than open()/close() matters: the
// unix VFS tracks every descriptor of an inode, so closing one of ours never
// drops a POSIX lock that SQLite holds on the same file in this process.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "sqlite/api.h"

namespace aerials::vfs {

class InnerFile {
public:
    // The name handed to the wrapped VFS must stay valid while the file is
    // open (the unix VFS keeps the pointer) and be in SQLite's filename
    // format: URI parameters may follow it, each string NUL-terminated, the
    // list ending with an empty one. `sqlite_name`, when given, is a name
    // SQLite passed to our xOpen (parameters and all, valid until our file
    // closes); otherwise `path` is kept here, with no parameters.
    InnerFile(sqlite3_vfs* vfs, std::string path, const char* sqlite_name = nullptr);
    ~InnerFile() { close(); }
    InnerFile(const InnerFile&) = delete;
    InnerFile& operator=(const InnerFile&) = delete;

    // Returns SQLite's result code; the file is open only on SQLITE_OK.
    int open(int flags, int* out_flags = nullptr);
    void close();
    bool is_open() const { return open_; }
    sqlite3_file* get() { return file(); }
    const std::string& path() const { return path_; }

    // These throw VfsError naming the path.
    int64_t size();
    // Reads `amt` bytes; false if the file ended first (the rest is zeroed).
    bool read(void* buf, int amt, int64_t offset);
    void write(const void* buf, int amt, int64_t offset);
    void truncate(int64_t size);
    void sync(int flags);

private:
    sqlite3_file* file() { return reinterpret_cast<sqlite3_file*>(memory_.get()); }

    sqlite3_vfs* vfs_;
    std::string path_;
    std::string name_;  // path_ and an empty parameter list
    const char* open_name_;
    std::unique_ptr<char[]> memory_;
    bool open_ = false;
};

}  // namespace aerials::vfs

#include "files/io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>
#include <stdexcept>

namespace aerials::files {

namespace {
std::runtime_error io_error(const std::string& what, const std::string& path) {
    return std::runtime_error(what + " '" + path + "': " + std::strerror(errno));
}
}  // namespace

FileSource::FileSource(const std::string& path) : path_(path) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) throw io_error("cannot open", path);
    struct stat st {};
    if (::fstat(fd_, &st) == 0 && S_ISREG(st.st_mode)) {
        size_ = st.st_size;
        ::posix_fadvise(fd_, 0, 0, POSIX_FADV_SEQUENTIAL);
    } else if (::fstat(fd_, &st) == 0 && S_ISDIR(st.st_mode)) {
        ::close(fd_);
        fd_ = -1;
        throw std::runtime_error("cannot read '" + path + "': it is a directory");
    }
}

FileSource::~FileSource() {
    if (fd_ >= 0) ::close(fd_);
}

size_t FileSource::read(uint8_t* buffer, size_t size) {
    for (;;) {
        ssize_t n = ::read(fd_, buffer, size);
        if (n >= 0) return static_cast<size_t>(n);
        if (errno != EINTR) throw io_error("cannot read", path_);
    }
}

FileSink::FileSink(const std::string& path) : path_(path) {
    struct stat st {};
    bool special = ::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode);
    if (special && S_ISDIR(st.st_mode)) throw std::runtime_error("cannot write '" + path + "': it is a directory");
    if (special) {
        fd_ = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
        if (fd_ < 0) throw io_error("cannot open", path);
        return;
    }
    std::random_device random;
    char suffix[32];
    std::snprintf(suffix, sizeof suffix, ".aerials-%08x", static_cast<unsigned>(random()));
    temp_path_ = path + suffix;
    fd_ = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd_ < 0) throw io_error("cannot create", temp_path_);
}

FileSink::~FileSink() {
    if (fd_ >= 0) ::close(fd_);
    if (!temp_path_.empty()) ::unlink(temp_path_.c_str());
}

void FileSink::write(const uint8_t* data, size_t size) {
    while (size > 0) {
        ssize_t n = ::write(fd_, data, size);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw io_error("cannot write", path_);
        }
        data += n;
        size -= static_cast<size_t>(n);
    }
}

void FileSink::commit() {
    int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) throw io_error("cannot write", path_);
    if (temp_path_.empty()) return;
    if (::rename(temp_path_.c_str(), path_.c_str()) != 0) throw io_error("cannot rename the finished file to", path_);
    temp_path_.clear();
}

size_t MemorySource::read(uint8_t* buffer, size_t size) {
    size_t n = std::min(size, data_.size() - at_);
    std::memcpy(buffer, data_.data() + at_, n);
    at_ += n;
    return n;
}

}  // namespace aerials::files

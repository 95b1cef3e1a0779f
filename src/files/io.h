// Byte streams in and out of the files layer: host files (for aerials_put
// and aerials_get) and memory (for the files table and aerials_read).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace aerials::files {

class Source {
public:
    virtual ~Source() = default;
    // Reads up to `size` bytes; returns 0 only at the end.
    virtual size_t read(uint8_t* buffer, size_t size) = 0;
    // The total size when known in advance (a regular file), else -1.
    virtual int64_t size() const { return -1; }
};

class Sink {
public:
    virtual ~Sink() = default;
    virtual void write(const uint8_t* data, size_t size) = 0;
};

// Reads a host file (regular file, pipe or FIFO), sequentially.
class FileSource : public Source {
public:
    explicit FileSource(const std::string& path);
    ~FileSource() override;
    size_t read(uint8_t* buffer, size_t size) override;
    int64_t size() const override { return size_; }

private:
    std::string path_;
    int fd_ = -1;
    int64_t size_ = -1;
};

// Writes a host file. A regular file is written under a temporary name beside
// it and renamed into place by commit(), so a failed read (a damaged chunk)
// never leaves a file with wrong bytes under the asked-for name; a FIFO or
// device is written directly.
class FileSink : public Sink {
public:
    explicit FileSink(const std::string& path);
    ~FileSink() override;
    void write(const uint8_t* data, size_t size) override;
    void commit();

private:
    std::string path_;
    std::string temp_path_;  // empty when writing in place
    int fd_ = -1;
};

class MemorySource : public Source {
public:
    explicit MemorySource(std::string_view data) : data_(data) {}
    size_t read(uint8_t* buffer, size_t size) override;
    int64_t size() const override { return static_cast<int64_t>(data_.size()); }

private:
    std::string_view data_;
    size_t at_ = 0;
};

class MemorySink : public Sink {
public:
    explicit MemorySink(std::string& out) : out_(out) {}
    void write(const uint8_t* data, size_t size) override { out_.append(reinterpret_cast<const char*>(data), size); }

private:
    std::string& out_;
};

}  // namespace aerials::files

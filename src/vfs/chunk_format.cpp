#include "vfs/chunk_format.h"

#include <cstring>
#include <xxhash.h>

#include "sqlite/api.h"
#include "vfs/vfs_error.h"

namespace aerials::vfs {
namespace {

// 16 bytes that can never start an SQLite database ("SQLite format 3\0"), so
// neither SQLite nor this VFS mistakes one kind of file for the other.
constexpr char kMagic[16] = {'a', 'e', 'r', 'i', 'a', 'l', 's', ' ', 'c', 'h', 'u', 'n', 'k', 's', '\n', '\0'};
constexpr size_t kFixedBytes = 52;

void store_le32(unsigned char* out, uint32_t v) {
    for (int i = 0; i < 4; ++i) out[i] = static_cast<unsigned char>(v >> (8 * i));
}
uint32_t load_le32(const unsigned char* in) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; --i) v = (v << 8) | in[i];
    return v;
}
void store_le16(unsigned char* out, uint16_t v) {
    out[0] = static_cast<unsigned char>(v);
    out[1] = static_cast<unsigned char>(v >> 8);
}
uint16_t load_le16(const unsigned char* in) { return static_cast<uint16_t>(in[0] | (in[1] << 8)); }

std::string hex64(uint64_t v) {
    static const char digits[] = "0123456789abcdef";
    std::string out(16, '0');
    for (int i = 15; i >= 0; --i, v >>= 4) out[i] = digits[v & 0xf];
    return out;
}

VfsError bad_header(const std::string& path, const std::string& what) {
    return VfsError(SQLITE_CORRUPT, "header file '" + path + "' is damaged: " + what);
}

}  // namespace

const char* kind_name(FileKind kind) {
    switch (kind) {
        case FileKind::kDatabase: return "db";
        case FileKind::kJournal: return "journal";
        case FileKind::kWal: return "wal";
    }
    return "?";
}

void store_le64(unsigned char* out, uint64_t v) {
    for (int i = 0; i < 8; ++i) out[i] = static_cast<unsigned char>(v >> (8 * i));
}
uint64_t load_le64(const unsigned char* in) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | in[i];
    return v;
}

std::vector<unsigned char> encode_header(const ChunkHeader& h) {
    if (kFixedBytes + h.name.size() + h.root.size() + 8 > kMaxHeaderBytes) {
        throw VfsError(SQLITE_CANTOPEN, "database name and chunk root are too long for a header ('" + h.root + "')");
    }
    std::vector<unsigned char> out(kFixedBytes + h.name.size() + h.root.size() + 8, 0);
    std::memcpy(out.data(), kMagic, sizeof kMagic);
    store_le32(&out[16], kFormatVersion);
    store_le32(&out[20], static_cast<uint32_t>(h.kind));
    store_le64(&out[24], h.chunk_size);
    store_le32(&out[32], h.page_size);
    store_le32(&out[36], 0);
    store_le64(&out[40], h.chunk_count);
    store_le16(&out[48], static_cast<uint16_t>(h.name.size()));
    store_le16(&out[50], static_cast<uint16_t>(h.root.size()));
    std::memcpy(&out[kFixedBytes], h.name.data(), h.name.size());
    std::memcpy(&out[kFixedBytes + h.name.size()], h.root.data(), h.root.size());
    size_t body = out.size() - 8;
    store_le64(&out[body], XXH3_64bits(out.data(), body));
    return out;
}

bool has_header_magic(const unsigned char* data, size_t size) {
    return size >= sizeof kMagic && std::memcmp(data, kMagic, sizeof kMagic) == 0;
}

ChunkHeader decode_header(const unsigned char* data, size_t size, const std::string& path) {
    if (!has_header_magic(data, size)) throw bad_header(path, "it does not start with the aerials chunks magic");
    if (size < kFixedBytes + 8) throw bad_header(path, "it is truncated");
    uint32_t version = load_le32(&data[16]);
    if (version > kFormatVersion) {
        throw VfsError(SQLITE_CANTOPEN, "header file '" + path + "' is of format version " + std::to_string(version) +
                                            "; this build understands version " + std::to_string(kFormatVersion) +
                                            " or older");
    }
    size_t name_len = load_le16(&data[48]);
    size_t root_len = load_le16(&data[50]);
    size_t body = kFixedBytes + name_len + root_len;
    if (body + 8 > size) throw bad_header(path, "it is truncated");
    if (XXH3_64bits(data, body) != load_le64(&data[body])) throw bad_header(path, "checksum mismatch");
    ChunkHeader h;
    uint32_t kind = load_le32(&data[20]);
    if (kind < 1 || kind > 3) throw bad_header(path, "unknown file kind " + std::to_string(kind));
    h.kind = static_cast<FileKind>(kind);
    h.chunk_size = load_le64(&data[24]);
    h.page_size = load_le32(&data[32]);
    h.chunk_count = load_le64(&data[40]);
    h.name.assign(reinterpret_cast<const char*>(&data[kFixedBytes]), name_len);
    h.root.assign(reinterpret_cast<const char*>(&data[kFixedBytes + name_len]), root_len);
    if (h.chunk_size < kMinChunkSize || h.chunk_size > kMaxChunkSize) {
        throw bad_header(path, "chunk size " + std::to_string(h.chunk_size) + " out of range");
    }
    if (h.page_size != 0 && !valid_page_size(h.page_size)) {
        throw bad_header(path, "page size " + std::to_string(h.page_size) + " is not a power of two in [512, 65536]");
    }
    return h;
}

std::string chunk_relative_path(std::string_view name, FileKind kind, uint64_t number) {
    std::string seed(name);
    seed += ':';
    seed += kind_name(kind);
    seed += ':';
    seed += std::to_string(number);
    std::string h = hex64(XXH3_64bits(seed.data(), seed.size()));
    return h.substr(0, 2) + "/" + h.substr(2, 2) + "/" + h.substr(4) + "." + kind_name(kind);
}

uint64_t parse_chunk_size(std::string_view text) {
    auto fail = [&](const std::string& why) {
        return VfsError(SQLITE_CANTOPEN, "chunk_size='" + std::string(text) + "' " + why);
    };
    if (text.empty()) throw fail("is empty");
    uint64_t value = 0;
    size_t i = 0;
    for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
        if (value > (kMaxChunkSize << 1)) throw fail("is too large");
        value = value * 10 + static_cast<uint64_t>(text[i] - '0');
    }
    if (i == 0) throw fail("is not a number of bytes (e.g. 67108864, 64M, 1G)");
    std::string_view suffix = text.substr(i);
    int shift = 0;
    if (suffix == "K" || suffix == "k" || suffix == "KiB") shift = 10;
    else if (suffix == "M" || suffix == "m" || suffix == "MiB") shift = 20;
    else if (suffix == "G" || suffix == "g" || suffix == "GiB") shift = 30;
    else if (!suffix.empty()) throw fail("has an unknown suffix (use K, M or G)");
    if (value > (kMaxChunkSize >> shift)) throw fail("is larger than 1 TiB");
    value <<= shift;
    if (value < kMinChunkSize) throw fail("is smaller than the minimum of 128K");
    return value;
}

PageLayout::PageLayout(uint32_t page_size, uint64_t chunk_size) : page_size_(page_size) {
    uint64_t n = chunk_size / (uint64_t{page_size} + kChecksumBytes);
    auto table = [&](uint64_t pages) { return (pages * kChecksumBytes + page_size - 1) / page_size * page_size; };
    while (n > 0 && table(n) + n * page_size > chunk_size) --n;
    pages_per_chunk_ = n;
    table_bytes_ = table(n);
}

bool valid_page_size(uint64_t size) { return size >= 512 && size <= 65536 && (size & (size - 1)) == 0; }

uint64_t page_checksum(const unsigned char* page, uint32_t page_size, uint64_t pgno) {
    return XXH3_64bits_withSeed(page, page_size, pgno);
}

}  // namespace aerials::vfs

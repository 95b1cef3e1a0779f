#include "files/manifest.h"

#include <cstring>
#include <ctime>
#include <stdexcept>

namespace aerials::files {

namespace {
constexpr size_t kEntryBytes = 40;
}

std::string encode_chunk_list(const std::vector<ChunkRef>& chunks) {
    std::string out;
    out.reserve(chunks.size() * kEntryBytes);
    for (const ChunkRef& c : chunks) {
        out.append(reinterpret_cast<const char*>(c.sha256.data()), c.sha256.size());
        for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>((uint64_t(c.size) >> shift) & 0xff));
    }
    return out;
}

std::vector<ChunkRef> decode_chunk_list(std::string_view blob, const std::string& object) {
    if (blob.size() % kEntryBytes != 0) {
        throw std::runtime_error("manifest of object '" + object + "' has a malformed chunk list (" +
                                 std::to_string(blob.size()) + " bytes)");
    }
    std::vector<ChunkRef> chunks(blob.size() / kEntryBytes);
    for (size_t i = 0; i < chunks.size(); ++i) {
        const char* entry = blob.data() + i * kEntryBytes;
        std::memcpy(chunks[i].sha256.data(), entry, 32);
        uint64_t size = 0;
        for (int b = 0; b < 8; ++b) size = (size << 8) | static_cast<unsigned char>(entry[32 + b]);
        chunks[i].size = static_cast<int64_t>(size);
    }
    return chunks;
}

std::string iso_time(int64_t unix_ms) {
    std::time_t seconds = static_cast<std::time_t>(unix_ms / 1000);
    std::tm tm{};
    gmtime_r(&seconds, &tm);
    char buf[96];
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                  tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(unix_ms % 1000));
    return buf;
}

}  // namespace aerials::files

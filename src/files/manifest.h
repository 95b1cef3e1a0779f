// An object version as its manifest row records it, and the chunk list it
// carries: 40 bytes per chunk (32-byte SHA-256, 8-byte big-endian size), so a
// 10 GiB object in 4 MiB chunks has a 100 KiB list.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "files/digest.h"

namespace aerials::files {

struct ChunkRef {
    Sha256 sha256{};
    int64_t size = 0;
};

std::string encode_chunk_list(const std::vector<ChunkRef>& chunks);
// Throws std::runtime_error naming `object` when the list is malformed.
std::vector<ChunkRef> decode_chunk_list(std::string_view blob, const std::string& object);

struct ObjectVersion {
    std::string bucket;
    std::string key;
    std::string version_id;  // "null" when written while versioning was off or suspended
    int64_t seq = 0;         // orders the versions of one object, newest highest
    bool is_latest = false;
    bool delete_marker = false;
    int64_t size = 0;
    std::string content_type;
    std::string sha256;  // hex
    std::string etag;    // hex MD5, or MD5 of part MD5s then "-N"
    int64_t created = 0;  // Unix milliseconds
    std::optional<int64_t> noncurrent_since;
    std::string metadata = "{}";  // JSON object of user metadata
    std::string tags = "{}";      // JSON object of tags
    std::vector<ChunkRef> chunks;
    int64_t chunk_count = 0;
};

// "2024-06-01T12:00:00.000Z" for Unix milliseconds (S3's LastModified form).
std::string iso_time(int64_t unix_ms);

}  // namespace aerials::files

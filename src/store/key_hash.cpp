#include "store/key_hash.h"

#include "store/owned_value.h"

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <xxhash.h>

namespace aerials::store {
namespace {

void append_be64(uint64_t v, std::string& out) {
    char bytes[8];
    for (int i = 7; i >= 0; --i) {
        bytes[i] = static_cast<char>(v & 0xff);
        v >>= 8;
    }
    out.append(bytes, 8);
}

}  // namespace

void encode_key_int(int64_t key, std::string& out) {
    out.push_back('i');
    append_be64(static_cast<uint64_t>(key), out);
}

void encode_key_text(std::string_view key, std::string& out) {
    out.push_back('t');
    out.append(key);
}

void encode_key(sqlite3_value* key, std::string& out) {
    switch (sqlite3_value_type(key)) {
        case SQLITE_INTEGER:
            encode_key_int(sqlite3_value_int64(key), out);
            return;
        case SQLITE_FLOAT: {
            double d = sqlite3_value_double(key);
            // 2^63 is exactly representable; anything in [-2^63, 2^63) that is
            // whole converts to int64 without loss.
            if (std::trunc(d) == d && d >= -9223372036854775808.0 && d < 9223372036854775808.0) {
                encode_key_int(static_cast<int64_t>(d), out);
                return;
            }
            uint64_t bits;
            std::memcpy(&bits, &d, sizeof bits);
            out.push_back('r');
            append_be64(bits, out);
            return;
        }
        case SQLITE_TEXT:
            out.push_back('t');
            out.append(reinterpret_cast<const char*>(sqlite3_value_text(key)),
                       static_cast<size_t>(sqlite3_value_bytes(key)));
            return;
        case SQLITE_BLOB: {
            out.push_back('b');
            const void* data = sqlite3_value_blob(key);
            int size = sqlite3_value_bytes(key);
            if (size > 0) out.append(static_cast<const char*>(data), static_cast<size_t>(size));
            return;
        }
        default:
            throw std::invalid_argument("key must not be NULL");
    }
}

Hash hash_encoded_key(std::string_view encoded) { return XXH3_64bits(encoded.data(), encoded.size()); }

Hash hash_key_as(sqlite3_value* key, char affinity) {
    int type = sqlite3_value_type(key);
    if (affinity == 't' && (type == SQLITE_INTEGER || type == SQLITE_FLOAT)) {
        sqlite3_value* copy = sqlite3_value_dup(key);
        if (!copy) throw std::bad_alloc();
        thread_local std::string encoded;
        encoded.assign("t");
        encoded.append(reinterpret_cast<const char*>(sqlite3_value_text(copy)),
                       static_cast<size_t>(sqlite3_value_bytes(copy)));
        sqlite3_value_free(copy);
        return hash_encoded_key(encoded);
    }
    if ((affinity == 'i' || affinity == 'r' || affinity == 'n') && type == SQLITE_TEXT) {
        sqlite3_value* copy = sqlite3_value_dup(key);
        if (!copy) throw std::bad_alloc();
        sqlite3_value_numeric_type(copy);  // converts well-formed numeric text, as the column would
        Hash h = hash_key(copy);
        sqlite3_value_free(copy);
        return h;
    }
    return hash_key(key);
}

Hash hash_key(sqlite3_value* key) {
    // Reused per thread: routing a point read must not allocate.
    thread_local std::string encoded;
    encoded.clear();
    encode_key(key, encoded);
    return hash_encoded_key(encoded);
}

}  // namespace aerials::store

#include "sqlite/database.h"

namespace aerials::store {

OwnedValue decode_key_value(std::string_view encoded) {
    if (encoded.empty()) throw std::invalid_argument("empty key encoding");
    std::string_view payload = encoded.substr(1);
    auto be64 = [&]() {
        if (payload.size() != 8) throw std::invalid_argument("malformed key encoding");
        uint64_t v = 0;
        for (unsigned char c : payload) v = (v << 8) | c;
        return v;
    };
    OwnedValue value;
    switch (encoded[0]) {
        case 'i':
            value.type = SQLITE_INTEGER;
            value.integer = static_cast<int64_t>(be64());
            return value;
        case 'r': {
            uint64_t bits = be64();
            value.type = SQLITE_FLOAT;
            std::memcpy(&value.real, &bits, sizeof value.real);
            return value;
        }
        case 't':
        case 'b':
            value.type = encoded[0] == 't' ? SQLITE_TEXT : SQLITE_BLOB;
            value.bytes.assign(payload);
            return value;
        default:
            throw std::invalid_argument("malformed key encoding");
    }
}

void bind_encoded_key(sqlite::Statement& stmt, int index, std::string_view encoded) {
    OwnedValue value = decode_key_value(encoded);
    switch (value.type) {
        case SQLITE_INTEGER: stmt.bind(index, value.integer); return;
        case SQLITE_FLOAT: stmt.bind(index, value.real); return;
        case SQLITE_TEXT: stmt.bind(index, std::string_view(value.bytes)); return;
        default: stmt.bind_blob(index, value.bytes.data(), static_cast<int>(value.bytes.size())); return;
    }
}

std::string encode_record_id(sqlite3_value* key, sqlite3_value* subkey) {
    std::string out(4, '\0');
    encode_key(key, out);
    auto key_size = static_cast<uint32_t>(out.size() - 4);
    for (int i = 0; i < 4; ++i) out[i] = static_cast<char>((key_size >> (24 - 8 * i)) & 0xff);
    encode_key(subkey, out);
    return out;
}

RecordId decode_record_id(std::string_view blob) {
    if (blob.size() < 4) throw std::invalid_argument("malformed record id");
    uint32_t key_size = 0;
    for (int i = 0; i < 4; ++i) key_size = (key_size << 8) | static_cast<unsigned char>(blob[i]);
    if (key_size == 0 || 4 + size_t{key_size} >= blob.size()) throw std::invalid_argument("malformed record id");
    return RecordId{blob.substr(4, key_size), blob.substr(4 + key_size)};
}

}  // namespace aerials::store

namespace aerials::store {

std::string encode_row_id(sqlite3_value* shard_key, int64_t rowid) {
    std::string out(4, '\0');
    encode_key(shard_key, out);
    auto key_size = static_cast<uint32_t>(out.size() - 4);
    for (int i = 0; i < 4; ++i) out[i] = static_cast<char>((key_size >> (24 - 8 * i)) & 0xff);
    auto bits = static_cast<uint64_t>(rowid);
    for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>((bits >> shift) & 0xff));
    return out;
}

int64_t decode_rowid(std::string_view encoded_rowid) {
    if (encoded_rowid.size() != 8) throw std::invalid_argument("malformed row id");
    uint64_t v = 0;
    for (unsigned char c : encoded_rowid) v = (v << 8) | c;
    return static_cast<int64_t>(v);
}

RowId decode_row_id(std::string_view blob) {
    RecordId parts = decode_record_id(blob);
    return RowId{parts.key, decode_rowid(parts.subkey)};
}

}  // namespace aerials::store

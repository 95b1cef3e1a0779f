// Where a key lives: its canonical encoding and its 64-bit placement hash.
//
// The hash is XXH3-64 with seed 0 over the canonical encoding below. It is part
// of the on-disk format (the catalog records `hash = xxh3-64/v1`): changing it
// would strand every existing record, so it never changes for a given format.
//
// Canonical encoding (one type tag byte, then the payload):
//   'i' + 8 bytes big-endian two's complement   INTEGER, and REAL values that
//                                               are whole numbers in int64 range
//                                               (SQLite compares 5 and 5.0 as
//                                               equal, so they must place alike)
//   'r' + 8 bytes big-endian IEEE-754 bits      other REAL values
//   't' + UTF-8 bytes                           TEXT
//   'b' + bytes                                 BLOB
// Integer 5 and text '5' are different keys, as in SQLite's own comparisons.
// NULL is not a key.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "sqlite/api.h"

namespace aerials::store {

using Hash = uint64_t;

// Appends the canonical encoding of a SQLite value to `out`.
// Throws std::invalid_argument for NULL.
void encode_key(sqlite3_value* key, std::string& out);
void encode_key_int(int64_t key, std::string& out);
void encode_key_text(std::string_view key, std::string& out);

Hash hash_encoded_key(std::string_view encoded);
Hash hash_key(sqlite3_value* key);
// The hash of `key` as a column of `affinity` ('i', 'r', 'n', 't', 'b'; see
// CollectionColumn::affinity) stores it: text '7' in an INTEGER column is the
// integer 7, an integer in a TEXT column is its text.
Hash hash_key_as(sqlite3_value* key, char affinity);

// The name of the hash function as recorded in the catalog.
inline constexpr const char* kHashName = "xxh3-64/seed0/v1";

}  // namespace aerials::store

namespace aerials::sqlite {
class Statement;
}

namespace aerials::store {

// Binds the value that `encoded` (a canonical encoding) stands for to
// parameter `index`. Throws std::invalid_argument on a malformed encoding.
void bind_encoded_key(sqlite::Statement& stmt, int index, std::string_view encoded);
// The value itself.
struct OwnedValue;
OwnedValue decode_key_value(std::string_view encoded);

// The identity of one (key, subkey) record as one blob: the primary key of the
// SQL face. Layout: 4-byte big-endian length of the key's encoding, the key's
// encoding, the subkey's encoding.
std::string encode_record_id(sqlite3_value* key, sqlite3_value* subkey);
struct RecordId {
    std::string_view key;     // canonical encoding
    std::string_view subkey;  // canonical encoding
};
RecordId decode_record_id(std::string_view blob);

}  // namespace aerials::store

namespace aerials::store {

// The identity of a row of a user collection: its shard key (which names the
// bucket) and its rowid in that bucket's table, in the record id layout with
// the 8-byte big-endian rowid in place of the subkey.
std::string encode_row_id(sqlite3_value* shard_key, int64_t rowid);
int64_t decode_rowid(std::string_view encoded_rowid);
struct RowId {
    std::string_view shard_key;  // canonical encoding
    int64_t rowid;
};
// The parts of an encode_row_id() blob. Throws std::invalid_argument when the
// blob does not have that layout (the shard key's encoding is not checked:
// decode_key_value() does).
RowId decode_row_id(std::string_view blob);

}  // namespace aerials::store

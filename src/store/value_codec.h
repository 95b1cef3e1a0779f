// A byte encoding of any SQLite value that keeps its type, used for content
// checksums of buckets (and later for shipping rows).
#pragma once

#include <string>
#include <string_view>

#include "sqlite/api.h"

namespace aerials::store {

// Appends a type tag ('n', 'i', 'r', 't', 'b'), the payload length for text and
// blobs, and the payload.
void append_value(sqlite3_value* value, std::string& out);

// The values `encoded` (appended values) holds, as a JSON array: integers and
// reals as numbers (reals keep a fraction or exponent), text as strings,
// blobs as {"blob": "<hex>"}, NULL as null. Throws on a malformed encoding.
std::string values_as_json(std::string_view encoded);

}  // namespace aerials::store

// A byte encoding of any SQLite value that keeps its type, used for content
// checksums of buckets (and later for shipping rows).
#pragma once

#include <string>

#include "sqlite/api.h"

namespace aerials::store {

// Appends a type tag ('n', 'i', 'r', 't', 'b'), the payload length for text and
// blobs, and the payload.
void append_value(sqlite3_value* value, std::string& out);

}  // namespace aerials::store

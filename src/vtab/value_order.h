// SQLite's ordering of values, for merging sorted per-bucket streams:
// NULL < INTEGER and REAL (compared numerically) < TEXT < BLOB; text and blobs
// compare as bytes (the BINARY collation), a shorter prefix first.
#pragma once

#include "sqlite/api.h"
#include "store/owned_value.h"

namespace aerials::vtab {

// Negative, zero or positive as a sorts before, with or after b.
int compare_values(sqlite3_value* a, sqlite3_value* b);
int compare_values(const store::OwnedValue& a, const store::OwnedValue& b);

}  // namespace aerials::vtab

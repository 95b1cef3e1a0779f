// Repairing a damaged bucket file in place (aerialsd's scrub, issue 8): the
// damaged file is moved aside, never deleted, and a new file for the same
// bucket (same path, hash range and schema) is built from rows the caller
// got from a healthy replica. The catalog is not touched: the bucket it lists
// is the same one, only its file is new.
//
// REQUIRES for both: no SQLite connection of this process has the bucket
// file open (renaming or creating under an open connection would leave it
// reading the moved file, or drop its locks).
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "store/bucket_builder.h"
#include "store/bucket_id.h"
#include "store/collection.h"

namespace aerials::store {

// Moves the bucket file of `id` with its -wal, -shm and -journal into
// root/quarantine/<unix ms>-<bucket name>/ and syncs both directories.
// Returns that directory. A missing main file is not an error (the missing
// case is quarantined too: whatever is left of it goes).
std::filesystem::path quarantine_bucket_files(const std::filesystem::path& root, const BucketId& id);

// Builds a new bucket file for `id` at its usual path holding `collections`'
// (empty) tables and the key-value rows `fill` adds through the builder
// (each (key, subkey) once, each owned by `id`), and makes it durable.
// Returns the records written. Throws if a file is still at the path.
int64_t rebuild_bucket_file(const std::filesystem::path& root, const BucketId& id,
                            const std::vector<Collection>& collections, int page_size,
                            const std::function<void(BucketBuilder&)>& fill);

}  // namespace aerials::store

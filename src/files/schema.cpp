#include "files/schema.h"

#include "store/key_hash.h"

namespace aerials::files {

void register_file_collections(store::Store& store) {
    using store::define_collection;
    // Chunk rows are rowid tables on purpose: sqlite3_blob_open reads `data`
    // by rowid, and `data` is the last column so that reading the others never
    // walks its overflow pages.
    store.register_collection(define_collection(
        "files_chunks",
        {"sha256 BLOB NOT NULL PRIMARY KEY", "size INTEGER NOT NULL", "refs INTEGER NOT NULL",
         "touched INTEGER NOT NULL", "data BLOB NOT NULL"},
        "sha256"));
    store.register_collection(define_collection(
        "files_objects",
        {"object TEXT NOT NULL", "bucket TEXT NOT NULL", "key TEXT NOT NULL", "version_id TEXT NOT NULL",
         "seq INTEGER NOT NULL", "is_latest INTEGER NOT NULL", "delete_marker INTEGER NOT NULL",
         "size INTEGER NOT NULL", "content_type TEXT", "sha256 TEXT", "etag TEXT", "created INTEGER NOT NULL",
         "noncurrent_since INTEGER", "metadata TEXT", "tags TEXT", "chunks BLOB",
         "PRIMARY KEY(object, version_id)", "INDEX(bucket, key)"},
        "object"));
    store.register_collection(define_collection(
        "files_buckets",
        {"name TEXT NOT NULL PRIMARY KEY", "versioning TEXT NOT NULL", "created INTEGER NOT NULL", "lifecycle TEXT"},
        "name"));
    store.register_collection(define_collection(
        "files_uploads",
        {"object TEXT NOT NULL", "upload_id TEXT NOT NULL", "kind TEXT NOT NULL", "bucket TEXT NOT NULL",
         "key TEXT NOT NULL", "created INTEGER NOT NULL", "touched INTEGER NOT NULL", "content_type TEXT",
         "metadata TEXT", "tags TEXT", "PRIMARY KEY(object, upload_id)"},
        "object"));
    store.register_collection(define_collection(
        "files_parts",
        {"object TEXT NOT NULL", "upload_id TEXT NOT NULL", "part_number INTEGER NOT NULL", "size INTEGER NOT NULL",
         "md5 TEXT NOT NULL", "created INTEGER NOT NULL", "chunks BLOB NOT NULL",
         "PRIMARY KEY(object, upload_id, part_number)"},
        "object"));
}

store::Hash hash_of_text(std::string_view text) {
    std::string encoded;
    store::encode_key_text(text, encoded);
    return store::hash_encoded_key(encoded);
}

store::Hash hash_of_blob(const void* data, size_t size) {
    std::string encoded = "b";
    encoded.append(static_cast<const char*>(data), size);
    return store::hash_encoded_key(encoded);
}

}  // namespace aerials::files

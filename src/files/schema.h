// Where the files layer keeps its data: five collections of the store, so a
// table of each lives in every bucket file and splits move their rows like any
// other collection's (store/splitter.cpp copies every collection).
//
//   files_chunks   chunk bytes, content-addressed: placed by SHA-256, so one
//                  object's chunks spread over many bucket files
//   files_objects  manifests: one row per object version (and delete marker)
//   files_buckets  object buckets: versioning state, lifecycle rules
//   files_uploads  uploads in progress (single puts and multipart uploads)
//   files_parts    parts of multipart uploads
//
// Objects, their uploads and their parts are placed by "bucket/key", so every
// change to one object (a new version, a completed upload) is one SQLite
// transaction in one bucket file.
#pragma once

#include "store/store.h"

namespace aerials::files {

inline constexpr const char* kChunksTable = "c_files_chunks";
inline constexpr const char* kObjectsTable = "c_files_objects";
inline constexpr const char* kBucketsTable = "c_files_buckets";
inline constexpr const char* kUploadsTable = "c_files_uploads";
inline constexpr const char* kPartsTable = "c_files_parts";

// Records the collections in the store's catalog (idempotent).
void register_file_collections(store::Store& store);

// Placement hashes, as the splitter computes them from the stored values.
store::Hash hash_of_text(std::string_view text);
store::Hash hash_of_blob(const void* data, size_t size);

}  // namespace aerials::files

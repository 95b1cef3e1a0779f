// Objects addressed as (object bucket, key), S3-style, kept in a bucket store:
// manifests in files_objects, bytes in content-addressed chunks (schema.h).
//
// Writes are atomic per object version: every chunk is committed durably
// first, then the manifest in one SQLite transaction of the object's bucket
// file. Memory stays bounded by a couple of chunks whatever the object's size.
//
// Threading: one ObjectStore per connection and root, used by one thread at a
// time (it owns a store::Store; see store.h). It does not take part in the
// connection's SQL transaction: each operation commits on its own, like a
// request to S3.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "files/chunks.h"
#include "files/io.h"
#include "files/manifest.h"
#include "store/store.h"

namespace aerials::files {

class Transfer;

// The object, version or upload does not exist (S3's 404s).
class NotFound : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

enum class Versioning { kOff, kEnabled, kSuspended };
const char* versioning_name(Versioning v);  // "Off", "Enabled", "Suspended"
Versioning parse_versioning(const std::string& text);

struct PutOptions {
    std::string content_type;
    std::string metadata = "{}";  // JSON object, string values
    std::string tags = "{}";      // JSON object, string values
};

struct DeleteResult {
    std::string version_id;  // the version removed, or the delete marker made
    bool delete_marker = false;
};

struct PartInfo {
    int part_number = 0;
    int64_t size = 0;
    std::string etag;  // hex MD5
};

// What a listing may filter on inside each bucket file: SQL over the
// files_objects table, e.g. "bucket = ?1 AND key LIKE ?2", and its values.
struct ListFilter {
    std::string where;  // empty: every row
    std::vector<std::string> values;
    bool all_versions = false;
};

struct CollectReport {
    int64_t expired_current = 0;     // lifecycle: current versions expired
    int64_t expired_noncurrent = 0;  // lifecycle: noncurrent versions removed
    int64_t aborted_uploads = 0;     // lifecycle: incomplete multipart uploads aborted
    int64_t dead_uploads = 0;        // single puts whose writer stopped (a crash)
    int64_t chunks_removed = 0;
    int64_t bytes_removed = 0;
    int64_t refs_fixed = 0;          // chunks whose reference count was recounted
    std::string to_json() const;
};

// JSON checks of user metadata (string values, at most 2 KiB as in S3) and
// tags (at most 10, keys up to 128 bytes, values up to 256).
void check_metadata(const std::string& metadata_json);
void check_tags(const std::string& tags_json);

// Inside the object's bucket transaction: makes `version` the object's current
// version as the bucket's versioning state says (a new version id, or the
// "null" version replaced), and removes the upload `upload_id` with its parts
// when given. Appends to `replaced` the chunks of a version it replaced.
void install_version_locked(std::shared_ptr<store::BucketFile>& file, ObjectVersion& version, Versioning state,
                            const std::string& upload_id, std::vector<ChunkRef>& replaced);

class ObjectStore {
public:
    static constexpr int64_t kDefaultChunkSize = 4 * 1024 * 1024;
    // Page size of the bucket files of a store this layer creates: a 4 MiB
    // chunk is 64 overflow pages instead of 1024 (decision 0007).
    static constexpr int kPageSize = 64 * 1024;
    // Page cache per open bucket connection (up to max_open = 64 of them):
    // chunk pages are read or written once, so a few pages do.
    static constexpr int kCacheKib = 256;
    // Size bound of the bucket files of a store this layer creates: ten 4 MiB
    // chunks, so 64 buckets hold 2.5 GiB before the first split, and a file
    // (at most this plus one batch's share, 16 MiB) stays under 64 MiB.
    static constexpr int64_t kBucketMaxBytes = 40 * 1024 * 1024;
    // A single put or upload whose row was not touched for this long is taken
    // as dead (its writer crashed), and chunks untouched for this long may be
    // recounted by the collector.
    static constexpr int64_t kDefaultGraceMs = 3600 * 1000;

    explicit ObjectStore(const store::StoreOptions& options);
    ~ObjectStore();

    store::Store& store() { return *store_; }
    const std::string& root() const { return root_; }
    int64_t chunk_size() const { return chunk_size_; }
    void set_chunk_size(int64_t bytes);  // 64 KiB to 256 MiB

    // --- object buckets ---
    // Creates the bucket if missing (versioning off) and returns its state.
    Versioning ensure_bucket(const std::string& bucket);
    void set_versioning(const std::string& bucket, Versioning state);
    Versioning versioning(const std::string& bucket);
    // Lifecycle rules as JSON: [{"prefix": "logs/", "expiration_days": 30,
    // "noncurrent_days": 7, "abort_incomplete_days": 2}, ...]; "" removes them.
    void set_lifecycle(const std::string& bucket, const std::string& rules_json);

    // --- objects ---
    ObjectVersion put(const std::string& bucket, const std::string& key, Source& source, const PutOptions& options,
                      Transfer* progress = nullptr);
    // The current version (or `version_id`), chunk list included. NotFound
    // when there is none or it is a delete marker.
    ObjectVersion head(const std::string& bucket, const std::string& key,
                       const std::optional<std::string>& version_id = std::nullopt);
    void get(const ObjectVersion& version, Sink& sink, Transfer* progress = nullptr);
    // Bytes [offset, offset + length) of the version, clipped at its end;
    // reads only the chunks that overlap the range.
    std::string read_range(const ObjectVersion& version, int64_t offset, int64_t length);
    DeleteResult remove(const std::string& bucket, const std::string& key,
                        const std::optional<std::string>& version_id = std::nullopt);
    void set_tags(const std::string& bucket, const std::string& key, const std::optional<std::string>& version_id,
                  const std::string& tags_json);
    // Manifests without chunk lists, ordered by bucket, key, newest first.
    std::vector<ObjectVersion> list(const ListFilter& filter);
    // Only the bucket file of one object: the versions of bucket/key.
    std::vector<ObjectVersion> versions_of(const std::string& bucket, const std::string& key);

    // --- multipart uploads ---
    std::string create_upload(const std::string& bucket, const std::string& key, const PutOptions& options);
    PartInfo put_part(const std::string& bucket, const std::string& key, const std::string& upload_id,
                      int part_number, Source& source, Transfer* progress = nullptr);
    // Completes with the given parts (ascending part numbers), or every
    // uploaded part when `parts` is empty. ETag: MD5 of the parts' MD5s, "-N".
    ObjectVersion complete_upload(const std::string& bucket, const std::string& key, const std::string& upload_id,
                                  const std::vector<int>& parts);
    void abort_upload(const std::string& bucket, const std::string& key, const std::string& upload_id);

    // Applies lifecycle rules as of `now` (Unix ms), ends dead uploads and
    // removes chunks no manifest or part references.
    CollectReport collect(int64_t now, int64_t grace_ms = kDefaultGraceMs);

private:
    // The digests a stream of object bytes needs besides the chunk addresses
    // (write_chunks runs each on a thread of its own).
    struct Stream {
        bool whole_sha = true;  // a part needs only its MD5
        Digest sha{Digest::Kind::kSha256};
        Digest md5{Digest::Kind::kMd5};
        int64_t size = 0;
    };
    std::vector<ChunkRef> write_chunks(Stream& stream, Source& source, Transfer* progress,
                                       const std::string& object, const std::string& upload_id);
    void begin_upload_row(const std::string& object, const std::string& upload_id, const char* kind,
                          const std::string& bucket, const std::string& key, const PutOptions& options);
    void drop_upload_row(const std::string& object, const std::string& upload_id);
    ObjectVersion install(ObjectVersion version, const std::string& upload_id, std::vector<ChunkRef>& replaced);
    // Runs fn in the store's write transaction, commits it (and splits what
    // the commit left over its bounds), or rolls back on an exception.
    template <class Fn>
    auto in_transaction(Fn&& fn) {
        try {
            if constexpr (std::is_void_v<decltype(fn())>) {
                fn();
                store_->commit_all();
                store_->split_pending();
            } else {
                auto result = fn();
                store_->commit_all();
                store_->split_pending();
                return result;
            }
        } catch (...) {
            store_->rollback_all();
            throw;
        }
    }
    void for_each_bucket_file(const std::function<void(std::shared_ptr<store::BucketFile>&)>& fn);
    std::vector<ObjectVersion> query_versions(std::shared_ptr<store::BucketFile>& file, const std::string& where,
                                              const std::vector<std::string>& values, bool with_chunks);

    std::string root_;
    std::string synchronous_;  // the store's PRAGMA synchronous, restored after relaxed chunk commits
    std::unique_ptr<store::Store> store_;
    ChunkStore chunks_;
    int64_t chunk_size_ = kDefaultChunkSize;
};

}  // namespace aerials::files
